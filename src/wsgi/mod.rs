//! PEP 3333, named after its parts: [`interpreter`] (embedding and app loading),
//! [`environ`], [`start_response`] (and the [`headers`] it checks), [`input`]
//! (`wsgi.input`), [`errors`] (`wsgi.errors`), [`response`] (calling the app, what
//! happened), [`body`] (iterating its result), [`file_wrapper`].
//!
//! Its way in is [`App::call`]: one request (the neutral [`crate::contract::Request`])
//! with the facts dispatch decided about it. It knows nothing of HTTP framing or of
//! policy: who runs the call, and when, is `dispatch/`'s business.

pub mod body;
pub mod django;
pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod headers;
pub mod input;
pub mod interpreter;
pub mod response;
pub mod start_response;

use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::contract::{Connection, Reply, Request};
use environ::EnvironShared;
pub use environ::{ConnEnviron, RequestFacts};
pub use response::{resume, Handled, LogNeeds, Outcome, Suspended};

/// How much of a response the call may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On a Python thread: the response is finished here, waiting on the client as
    /// it must.
    Finish,
    /// On the IO thread: nothing may wait on the client, so a response that would
    /// comes back [`Handled::Suspended`] for a Python thread to [`resume`].
    Inline,
}

/// What a worker's environs share that does not come from a request.
pub struct Setup {
    /// `wsgi.multithread`.
    pub multithread: bool,
    /// `wsgi.multiprocess`.
    pub multiprocess: bool,
    /// `SCRIPT_NAME`, from the environment as gunicorn takes it (usually empty).
    pub script_name: String,
    /// The runtime that drives request bodies: `wsgi.input` waits on it.
    pub handle: tokio::runtime::Handle,
    /// `--client-body-timeout`: the longest `wsgi.input` waits for more of a body.
    pub body_timeout: std::time::Duration,
    /// `--header-map dangerous`: header names with `_` are mapped into the environ
    /// (see [`environ::ambiguous_header_name`]); otherwise they are left out.
    pub map_ambiguous_headers: bool,
}

/// The app of one worker, and what every environ shares.
pub struct App {
    app: Py<PyAny>,
    env: EnvironShared,
}

/// One request for the app.
pub struct Call<'a> {
    /// Borrowed, not moved: the app takes only its body.
    pub request: &'a mut Request,
    /// Where the response goes.
    pub reply: Option<oneshot::Sender<Reply>>,
    pub conn: &'a Connection,
    /// The connection's environ template (made by its first request).
    pub environ: &'a ConnEnviron,
    pub facts: RequestFacts<'a>,
    /// What the access log wants kept.
    pub log: LogNeeds<'a>,
    pub mode: Mode,
}

impl App {
    pub fn new(app: Py<PyAny>, setup: Setup) -> PyResult<App> {
        let env = Python::attach(|py| -> PyResult<EnvironShared> {
            EnvironShared::new(
                py,
                Bound::new(py, errors::Errors::default())?.into_any(),
                py.get_type::<file_wrapper::FileWrapper>().into_any(),
                setup,
            )
        })?;
        Ok(App { app, env })
    }

    /// Runs one request through the app (see [`response::handle`]).
    pub fn call(&self, py: Python<'_>, call: Call<'_>) -> Handled {
        response::handle(py, self.app.bind(py), call, &self.env)
    }
}
