//! PEP 3333, named after its parts: [`interpreter`] (embedding and app loading),
//! [`environ`], [`start_response`], [`input`] (`wsgi.input`), [`errors`]
//! (`wsgi.errors`), [`response`] (calling the app and iterating its result),
//! [`file_wrapper`], and [`threads`] (the Python threads that take requests).

pub mod django;
pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod input;
pub mod interpreter;
pub mod response;
pub mod start_response;
pub mod threads;
