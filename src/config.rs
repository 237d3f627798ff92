//! Validated configuration.
