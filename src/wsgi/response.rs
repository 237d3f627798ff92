//! Runs one request through the app on a Python thread: environ, call, iterate the
//! response, `close()` on every path.
//!
//! A list or tuple (the common case) is answered in one piece; any other iterable is
//! streamed chunk by chunk through a bounded channel, so a slow client pauses the
//! iterator. Headers go out with the first non-empty chunk, so an exception before it
//! still becomes a 500; after it, the connection is aborted.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http::Method;
use pyo3::exceptions::{PyAssertionError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::environ::{self, EnvironShared};
use super::file_wrapper::FileWrapper;
use super::input::{BodySource, Input};
use super::interpreter::format_exception;
use super::start_response::{push, Responder, StartResponse};
use super::{Call, Mode};
use crate::contract::is_http10;

/// Read size for files sent through `wsgi.file_wrapper`.
const FILE_CHUNK: usize = 256 * 1024;

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

fn lock<'a>(sr: &'a Bound<'_, StartResponse>) -> PyResult<std::sync::MutexGuard<'a, Responder>> {
    // SAFETY of lifetimes: the guard borrows the pyclass through `get()`, which is
    // valid as long as `sr` is; `frozen`-like access is fine since we only lock.
    sr.get()
        .responder
        .lock()
        .map_err(|_| PyAssertionError::new_err("response state poisoned"))
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
    let used_write = inline && lock(&sr).is_ok_and(|r| r.headers_sent);
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
        if result.is_ok() && !lock(sr).is_ok_and(|r| r.client_gone) {
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
        let mut r = lock(sr)?;
        r.inline = false;
        (r.stream(), std::mem::take(&mut r.deferred))
    };
    let Some(tx) = tx else {
        return Ok(chunks.is_empty());
    };
    for chunk in chunks {
        if !push(py, &tx, chunk) {
            lock(sr)?.client_gone = true;
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
            let client_gone = lock(sr).map(|r| r.client_gone).unwrap_or(false);
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

    let mut r = match lock(sr) {
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

/// Where [`iterate_inline`] stopped.
enum Step {
    /// The response is complete.
    Done,
    /// A Python thread must go on: from `iter(iterable)` when given (its first chunk
    /// is already out), else from the iterable itself.
    Suspend(Option<Py<PyAny>>),
}

/// The IO thread's share of a response: everything that cannot wait on the client.
fn iterate_inline(iterable: &Bound<'_, PyAny>, sr: &Bound<'_, StartResponse>) -> PyResult<Step> {
    let py = iterable.py();
    if iterable.cast_exact::<PyList>().is_ok() || iterable.cast_exact::<PyTuple>().is_ok() {
        // Already in memory and nothing streamed yet: answered in one piece.
        iterate(py, iterable, sr)?;
        return Ok(Step::Done);
    }
    if iterable.cast::<FileWrapper>().is_ok() {
        return Ok(Step::Suspend(None));
    }
    let iterator = iterable.try_iter()?;
    for item in iterator.clone() {
        let item = item?;
        let obj = as_bytes(&item)?;
        if obj.as_bytes().is_empty() {
            continue;
        }
        let mut r = lock(sr)?;
        if r.status.is_none() {
            return Err(not_started());
        }
        if r.no_body() {
            // Nothing of it is sent; the rest is drained as on a Python thread.
            drop(r);
            return Ok(Step::Suspend(Some(iterator.into_any().unbind())));
        }
        let chunk = r.admit(obj);
        if r.content_length.is_some_and(|cl| r.sent >= cl) {
            // The declared length is reached: there is nothing more to produce
            // (Flask, Django and most frameworks answer in this one chunk).
            r.send_full(chunk.unwrap_or_default());
            return Ok(Step::Done);
        }
        // Out now (the channel is fresh, so this never waits); the next chunk is
        // produced on a Python thread while the IO thread sends this one.
        let Some(tx) = r.stream() else {
            return Ok(Step::Done);
        };
        if let Some(chunk) = chunk {
            let _ = tx.try_send(Ok(chunk));
        }
        return Ok(Step::Suspend(Some(iterator.into_any().unbind())));
    }
    Ok(Step::Done)
}

/// Streams what is left of an iterator whose first chunk was sent inline.
fn iterate_rest(
    py: Python<'_>,
    iterator: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    for item in iterator.try_iter()? {
        let item = item?;
        if !send_chunk(py, sr, as_bytes(&item)?)? {
            break;
        }
    }
    Ok(())
}

/// PEP 3333: `close()` is called whatever happened.
fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = iterable.py();
    // A plain list or tuple has no close(). Asking would raise and format an
    // AttributeError inside `hasattr` on every such response.
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if iterable.hasattr(pyo3::intern!(py, "close"))? {
        iterable.call_method0(pyo3::intern!(py, "close"))?;
    }
    Ok(())
}

fn not_started() -> PyErr {
    PyAssertionError::new_err("the app returned a body before calling start_response")
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        let kind = item
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "the response iterable must yield bytes, not {kind}"
        ))
    })
}

fn iterate(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    // A list or tuple is already in memory: answer in one piece, unless write()
    // already started a stream.
    let seq: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = iterable.cast_exact::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = iterable.cast_exact::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    };
    if let Some(items) = seq {
        let mut r = lock(sr)?;
        if !r.headers_sent {
            let mut body = BytesMut::new();
            let mut single: Option<Bytes> = None;
            for item in &items {
                let b = as_bytes(item)?;
                if b.as_bytes().is_empty() {
                    continue;
                }
                if r.status.is_none() {
                    return Err(not_started());
                }
                if let Some(chunk) = r.admit(b) {
                    if single.is_none() && body.is_empty() {
                        single = Some(chunk);
                    } else {
                        if let Some(first) = single.take() {
                            body.extend_from_slice(&first);
                        }
                        body.extend_from_slice(&chunk);
                    }
                }
            }
            if r.status.is_none() {
                return Err(not_started());
            }
            r.send_full(single.unwrap_or_else(|| body.freeze()));
            return Ok(());
        }
        drop(r);
        for item in &items {
            if !send_chunk(py, sr, as_bytes(item)?)? {
                break;
            }
        }
        return Ok(());
    }

    if let Ok(fw) = iterable.cast::<FileWrapper>() {
        let filelike = fw.borrow().filelike.clone_ref(py);
        if let Some(file) = real_file(filelike.bind(py)) {
            return send_file(py, sr, file);
        }
    }

    for item in iterable.try_iter()? {
        let item = item?;
        if !send_chunk(py, sr, as_bytes(&item)?)? {
            break;
        }
    }
    Ok(())
}

/// Sends one chunk; `Ok(false)` when there is no point producing more (client gone,
/// or Content-Length reached).
fn send_chunk(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    data: &Bound<'_, PyBytes>,
) -> PyResult<bool> {
    if data.as_bytes().is_empty() {
        return Ok(true);
    }
    let (tx, chunk, full) = {
        let mut r = lock(sr)?;
        if r.status.is_none() {
            return Err(not_started());
        }
        let chunk = r.admit(data);
        let tx = r.stream();
        let full = r.content_length.is_some_and(|cl| r.sent >= cl);
        (tx, chunk, full)
    };
    let Some(tx) = tx else {
        return Ok(false);
    };
    if let Some(chunk) = chunk {
        if !push(py, &tx, chunk) {
            lock(sr)?.client_gone = true;
            return Ok(false);
        }
    }
    Ok(!full)
}

/// An open regular file behind a file_wrapper's `fileno()`, and where to start.
struct RealFile {
    file: std::fs::File,
    offset: u64,
    len: u64,
}

fn real_file(filelike: &Bound<'_, PyAny>) -> Option<RealFile> {
    let fd: i32 = filelike.call_method0("fileno").ok()?.extract().ok()?;
    // SAFETY: `fd` is open for the duration of this call (the app owns it); we only
    // borrow it to duplicate, and own the duplicate.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().ok()?;
    let file = std::fs::File::from(owned);
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let offset: u64 = filelike
        .call_method0("tell")
        .ok()
        .and_then(|t| t.extract().ok())
        .unwrap_or(0);
    Some(RealFile {
        file,
        offset,
        len: meta.len().saturating_sub(offset),
    })
}

/// Sends a real file in large reads with the GIL released.
fn send_file(py: Python<'_>, sr: &Bound<'_, StartResponse>, f: RealFile) -> PyResult<()> {
    let (tx, mut budget, count_only) = {
        let mut r = lock(sr)?;
        if r.status.is_none() {
            return Err(not_started());
        }
        let budget = match r.content_length {
            Some(cl) => f.len.min(cl.saturating_sub(r.sent)),
            None => f.len,
        };
        let count_only = r.no_body();
        (r.stream(), budget, count_only)
    };
    let Some(tx) = tx else {
        return Ok(());
    };
    let mut offset = f.offset;
    let mut sent = 0u64;
    let gone = py.detach(|| {
        let mut buf = vec![0u8; FILE_CHUNK];
        while budget > 0 {
            let want = (budget as usize).min(FILE_CHUNK);
            let n = match f.file.read_at(&mut buf[..want], offset) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            offset += n as u64;
            budget -= n as u64;
            sent += n as u64;
            let chunk = Ok(Bytes::copy_from_slice(&buf[..n]));
            if !count_only && crate::contract::client_wait(|| tx.blocking_send(chunk)).is_err() {
                return true;
            }
        }
        false
    });
    let mut r = lock(sr)?;
    r.sent += sent;
    if gone {
        r.client_gone = true;
    }
    Ok(())
}
