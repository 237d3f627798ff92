//! wsgi
