//! One request through the app: environ, call, the body ([`super::body`]),
//! `close()` on every path, and what happened ([`Outcome`]). On the IO thread a
//! response that would wait on the client is [`Handled::Suspended`] and a Python
//! thread [`resume`]s it.
//!
//! Headers go out with the first non-empty chunk, so an exception before it still
//! becomes a 500; after it, the connection is aborted.

use std::sync::Mutex;

use http::Method;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::body::{close, iterate, iterate_inline, iterate_rest, Step};
use super::environ::{self, EnvironShared};
use super::input::{BodySource, Input};
use super::interpreter::format_exception;
use super::start_response::{push, Responder, StartResponse};
use super::{Call, Mode};
use crate::contract::is_http10;

/// What happened, for the access log and the tracker.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
    /// Request body bytes the app read.
    pub received: u64,
    /// Response headers, when the access log format asks for them.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Environ values (lower-cased key, `str(value)`) the access log asks for.
    pub environ: Vec<(String, String)>,
    /// The request body stopped arriving (`rwsgi.ClientTimeout`), for the tracker.
    pub client_timeout: bool,
    /// The environ dict itself, when asked for (`post_request` receives it).
    pub environ_dict: Option<std::sync::Arc<Py<PyDict>>>,
}

impl Outcome {
    fn failed(status: u16) -> Outcome {
        Outcome {
            status,
            sent: 0,
            received: 0,
            headers: Vec::new(),
            environ: Vec::new(),
            client_timeout: false,
            environ_dict: None,
        }
    }
}

/// What the access log wants kept from a request beyond its status and size.
#[derive(Clone, Copy, Default)]
pub struct LogNeeds<'a> {
    /// Keep the response headers (`%({name}o)s`).
    pub keep_headers: bool,
    /// Keep these environ values (`%({key}e)s`), lower-cased keys.
    pub env_keys: &'a [String],
    /// Keep the environ dict (gunicorn's `post_request` hook receives it).
    pub keep_environ: bool,
}

/// How far [`handle`] got.
pub enum Handled {
    Done(Outcome),
    /// Inline only: the rest of the response must be produced on a Python thread,
    /// where waiting for the client is allowed ([`resume`] finishes it).
    Suspended(Suspended),
}

/// A response whose app call ran on the IO thread and whose body a Python thread
/// finishes: a streamed iterable past its first chunk, a file_wrapper, or `write()`
/// output queued in the responder.
pub struct Suspended {
    /// What the app returned; `None` when the app call itself failed.
    iterable: Option<Py<PyAny>>,
    /// `iter(iterable)` when the first chunk was already taken from it, so that
    /// iteration goes on where it stopped (a fresh `iter()` could start over).
    iterator: Option<Py<PyAny>>,
    /// The app call's exception, re-raised once the queued `write()` chunks are out.
    error: Option<PyErr>,
    sr: Py<StartResponse>,
    input: Py<Input>,
    logged_environ: Vec<(String, String)>,
    kept_environ: Option<Py<PyDict>>,
    method: Method,
    uri: http::Uri,
    /// The app called `write()`.
    pub used_write: bool,
}

/// Runs one request through `app`. On a Python thread ([`Mode::Finish`]) the
/// response is always finished here. On the IO thread ([`Mode::Inline`]) nothing may
/// wait for the client: a list or tuple, or an iterable whose first chunk completes
/// its Content-Length, is finished here; anything else is [`Handled::Suspended`] after
/// its first chunk went out, so no chunk waits while the app produces the next.
pub fn handle(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    call: Call<'_>,
    shared: &EnvironShared,
) -> Handled {
    let Call {
        request,
        reply,
        conn,
        environ: template,
        facts,
        log,
        mode,
    } = call;
    let inline = mode == Mode::Inline;
    let LogNeeds {
        keep_headers,
        env_keys,
        keep_environ,
    } = log;
    let body = request.body.take();
    let head_request = request.method == Method::HEAD;
    let responder = Responder::new(
        reply,
        head_request,
        is_http10(request.version),
        keep_headers,
        inline,
    );
    let handle = &shared.handle;

    let result = (|| -> PyResult<(Bound<'_, StartResponse>, Bound<'_, Input>)> {
        let input = match body {
            None => shared.empty_input.bind(py).clone(),
            body => Bound::new(
                py,
                Input::new(BodySource::new(body, handle.clone(), shared.body_timeout)),
            )?,
        };
        let sr = Bound::new(
            py,
            StartResponse {
                responder: Mutex::new(responder),
            },
        )?;
        Ok((sr, input))
    })();
    let (sr, input) = match result {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not set up the request");
            return Handled::Done(Outcome::failed(500));
        }
    };

    let mut logged_environ = Vec::new();
    let mut kept_environ = None;
    let called = (|| -> PyResult<Bound<'_, PyAny>> {
        let src = environ::Sources {
            request,
            conn,
            template,
            facts: &facts,
        };
        let env = environ::build(py, &src, shared, input.clone().into_any())?;
        if !env_keys.is_empty() {
            for (k, v) in env.iter() {
                let key = k.str()?.to_string().to_ascii_lowercase();
                if env_keys.contains(&key) {
                    logged_environ.push((key, v.str()?.to_string()));
                }
            }
        }
        if keep_environ {
            kept_environ = Some(env.clone().unbind());
        }
        app.call1((env, sr.clone()))
    })();
    let used_write = inline && sr.get().lock().is_ok_and(|r| r.headers_sent);
    let suspend = |iterable: Option<&Bound<'_, PyAny>>,
                   iterator: Option<Py<PyAny>>,
                   error: Option<PyErr>,
                   logged_environ: Vec<(String, String)>,
                   kept_environ: Option<Py<PyDict>>| {
        Handled::Suspended(Suspended {
            iterable: iterable.map(|i| i.clone().unbind()),
            iterator,
            error,
            sr: sr.clone().unbind(),
            input: input.clone().unbind(),
            logged_environ,
            kept_environ,
            method: request.method.clone(),
            uri: request.uri.clone(),
            used_write,
        })
    };
    let iterable = match called {
        Ok(iterable) => iterable,
        // write() chunks are queued: a Python thread sends them, then fails the
        // response as it would have here.
        Err(e) if used_write => return suspend(None, None, Some(e), logged_environ, kept_environ),
        Err(e) => {
            let r = conclude(py, Err(e), &sr, &input, &request.method, &request.uri);
            return Handled::Done(r.with_environ(logged_environ, kept_environ));
        }
    };
    let iterated = if used_write {
        return suspend(Some(&iterable), None, None, logged_environ, kept_environ);
    } else if inline {
        match iterate_inline(&iterable, &sr) {
            Ok(Step::Done) => Ok(()),
            Ok(Step::Suspend(iterator)) => {
                return suspend(
                    Some(&iterable),
                    iterator,
                    None,
                    logged_environ,
                    kept_environ,
                )
            }
            Err(e) => Err(e),
        }
    } else {
        iterate(py, &iterable, &sr)
    };
    let closed = close(&iterable);
    let r = conclude(
        py,
        iterated.and(closed),
        &sr,
        &input,
        &request.method,
        &request.uri,
    );
    Handled::Done(r.with_environ(logged_environ, kept_environ))
}

/// Finishes a [`Suspended`] response on a Python thread.
pub fn resume(py: Python<'_>, s: Suspended) -> Outcome {
    let sr = s.sr.bind(py);
    let input = s.input.bind(py);
    let mut result = flush_deferred(py, sr).map(|_| ());
    if let Some(e) = s.error {
        result = Err(e);
    }
    if let Some(iterable) = &s.iterable {
        let iterable = iterable.bind(py);
        if result.is_ok() && !sr.get().lock().is_ok_and(|r| r.client_gone) {
            result = match &s.iterator {
                Some(it) => iterate_rest(py, it.bind(py), sr),
                None => iterate(py, iterable, sr),
            };
        }
        let closed = close(iterable);
        result = result.and(closed);
    }
    conclude(py, result, sr, input, &s.method, &s.uri)
        .with_environ(s.logged_environ, s.kept_environ)
}

/// Sends the chunks `write()` queued while the app ran inline. `Ok(false)`: the
/// client is gone.
fn flush_deferred(py: Python<'_>, sr: &Bound<'_, StartResponse>) -> PyResult<bool> {
    let (tx, chunks) = {
        let mut r = sr.get().lock()?;
        r.inline = false;
        (r.stream(), std::mem::take(&mut r.deferred))
    };
    let Some(tx) = tx else {
        return Ok(chunks.is_empty());
    };
    for chunk in chunks {
        if !push(py, &tx, chunk) {
            sr.get().lock()?.client_gone = true;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Logs what went wrong, if anything, and ends the response.
fn conclude(
    py: Python<'_>,
    result: PyResult<()>,
    sr: &Bound<'_, StartResponse>,
    input: &Bound<'_, Input>,
    method: &Method,
    uri: &http::Uri,
) -> Outcome {
    let mut client_timeout = false;
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            let client_gone = sr.get().lock().map(|r| r.client_gone).unwrap_or(false);
            client_timeout = e.is_instance_of::<super::input::ClientTimeout>(py);
            if client_timeout {
                tracing::warn!(%method, %uri, "{}", e);
            } else if client_gone {
                tracing::debug!(%method, %uri, "client disconnected");
            } else {
                tracing::error!(
                    target: crate::logging::EXCEPTION,
                    "Error handling request {} {}\n{}",
                    method,
                    uri,
                    format_exception(py, &e).trim_end()
                );
            }
            false
        }
    };

    let mut r = match sr.get().lock() {
        Ok(r) => r,
        Err(_) => return Outcome::failed(500),
    };
    let status = if ok {
        r.finish();
        r.code()
    } else if r.headers_sent {
        r.abort();
        r.code()
    } else if r.client_gone {
        499
    } else if client_timeout {
        r.send_error(408, "Request Timeout: the request body stopped arriving\n");
        408
    } else {
        r.send_error(500, "Internal Server Error\n");
        500
    };
    let received = input.borrow().consumed_bytes();
    Outcome {
        status,
        sent: r.sent,
        received,
        headers: std::mem::take(&mut r.sent_headers),
        environ: Vec::new(),
        client_timeout,
        environ_dict: None,
    }
}

impl Outcome {
    fn with_environ(mut self, environ: Vec<(String, String)>, dict: Option<Py<PyDict>>) -> Outcome {
        self.environ = environ;
        self.environ_dict = dict.map(std::sync::Arc::new);
        self
    }
}
