//! `start_response` and the `write()` callable it returns, plus the [`Responder`] that
//! turns what the app said into a [`Reply`] for the connection.
//!
//! PEP 3333 rules enforced here: headers go out only with the first non-empty chunk
//! (or at the end); `exc_info` replaces status and headers before they are sent and
//! re-raises after; a second call without `exc_info` is an error; Content-Length is
//! never exceeded. The status and header fields themselves are checked in
//! [`super::headers`].

use std::sync::Mutex;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use pyo3::exceptions::{PyAssertionError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tokio::sync::{mpsc, oneshot};

use super::headers::{parse_headers, parse_status};
use crate::contract::{BodyAbort, ChunkSender, Reply, ResponseBody, Streamed};

/// From this size on a chunk is handed to the connection without a copy (below it, copying is
/// cheaper than the shared ownership).
const ZERO_COPY_MIN: usize = 16 * 1024;

/// How many chunks may wait for a slow client before the app's iterator is paused.
const STREAM_DEPTH: usize = 4;

/// What the app has said about its response so far, and where it goes.
pub struct Responder {
    reply: Option<oneshot::Sender<Reply>>,
    stream: Option<ChunkSender>,
    /// Status code and the reason phrase exactly as the app wrote it.
    pub status: Option<(u16, String)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    pub headers_sent: bool,
    /// Declared by the app; the body is cut there.
    pub content_length: Option<u64>,
    /// Body bytes handed to the connection.
    pub sent: u64,
    /// HEAD, 1xx, 204 and 304 carry no body.
    head_request: bool,
    /// HTTP/1.0: answer, then close.
    close: bool,
    /// The client went away; stop producing.
    pub client_gone: bool,
    /// The app produced more than its Content-Length.
    pub truncated: bool,
    /// Response headers kept for the access log's `%({name}o)s` atoms.
    pub keep_headers: bool,
    pub sent_headers: Vec<(HeaderName, HeaderValue)>,
    /// The app runs on the IO thread (`--threads 1`, no request body): nothing may
    /// block on the client, so `write()` queues its chunks in `deferred` and a Python
    /// thread sends them once the app returns.
    pub inline: bool,
    /// Chunks `write()` produced inline, in order, waiting for a Python thread.
    pub deferred: Vec<Bytes>,
}

impl Responder {
    pub fn new(
        reply: Option<oneshot::Sender<Reply>>,
        head_request: bool,
        close: bool,
        keep_headers: bool,
        inline: bool,
    ) -> Self {
        Responder {
            reply,
            stream: None,
            status: None,
            headers: Vec::new(),
            headers_sent: false,
            content_length: None,
            sent: 0,
            head_request,
            close,
            client_gone: false,
            truncated: false,
            keep_headers,
            sent_headers: Vec::new(),
            inline,
            deferred: Vec::new(),
        }
    }

    /// HEAD, 1xx, 204 and 304: nothing after the head.
    pub fn no_body(&self) -> bool {
        let code = self.status.as_ref().map(|s| s.0).unwrap_or(200);
        self.head_request || code < 200 || code == 204 || code == 304
    }

    /// The status code that went (or will go) out.
    pub fn code(&self) -> u16 {
        self.status.as_ref().map(|s| s.0).unwrap_or(0)
    }

    /// Records a `start_response` call.
    fn start(
        &mut self,
        status: (u16, String),
        headers: Vec<(HeaderName, HeaderValue)>,
        content_length: Option<u64>,
    ) {
        self.status = Some(status);
        self.headers = headers;
        self.content_length = content_length;
    }

    fn head(&mut self, body: ResponseBody) -> Reply {
        let (code, reason) = match &self.status {
            Some((code, reason)) => (*code, reason.as_str()),
            None => (500, ""),
        };
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = (!reason.is_empty() && status.canonical_reason() != Some(reason))
            .then(|| hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()).ok())
            .flatten();
        let headers = std::mem::take(&mut self.headers);
        if self.keep_headers {
            self.sent_headers = headers.clone();
        }
        let mut reply = Reply {
            status,
            reason,
            headers,
            body,
        };
        if self.close {
            reply.close();
        }
        self.headers_sent = true;
        reply
    }

    /// Cuts `data` at the declared Content-Length. `None` when nothing may be sent.
    /// A large chunk is not copied: the `Bytes` keeps the Python object alive.
    pub fn admit(&mut self, obj: &Bound<'_, PyBytes>) -> Option<Bytes> {
        let data = obj.as_bytes();
        if data.is_empty() || self.no_body() {
            return None;
        }
        let mut n = data.len() as u64;
        if let Some(cl) = self.content_length {
            let room = cl.saturating_sub(self.sent);
            if n > room {
                if !self.truncated {
                    tracing::warn!(
                        declared = cl,
                        "app sent more than its Content-Length; the body was truncated"
                    );
                }
                self.truncated = true;
                n = room;
            }
        }
        self.sent += n;
        if n == 0 {
            return None;
        }
        if data.len() >= ZERO_COPY_MIN {
            let owned = Bytes::from_owner(PyBackedBytes::from(obj.clone()));
            return Some(owned.slice(..n as usize));
        }
        Some(Bytes::copy_from_slice(&data[..n as usize]))
    }

    /// Sends the head with a streamed body (first call) and returns the chunk sender.
    pub fn stream(&mut self) -> Option<ChunkSender> {
        if !self.headers_sent {
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            let resp = self.head(ResponseBody::Stream(Streamed::new(rx)));
            if let Some(reply) = self.reply.take() {
                if reply.send(resp).is_err() {
                    self.client_gone = true;
                    return None;
                }
            }
            self.stream = Some(tx);
        }
        self.stream.clone()
    }

    /// Sends head and whole body at once (the app returned a list, or nothing).
    pub fn send_full(&mut self, body: Bytes) {
        if let Some(cl) = self.content_length {
            if (body.len() as u64) < cl && !self.no_body() {
                // hyper must not be told a length the body cannot fill: stream what
                // there is, then abort so the client sees the connection close.
                tracing::warn!(
                    declared = cl,
                    sent = body.len(),
                    "app sent less than its Content-Length; closing the connection"
                );
                if let Some(tx) = self.stream() {
                    if !body.is_empty() {
                        let _ = tx.try_send(Ok(body));
                    }
                    let _ = tx.try_send(Err(BodyAbort("body shorter than Content-Length")));
                }
                self.stream = None;
                return;
            }
        }
        let resp = self.head(ResponseBody::full(body));
        if let Some(reply) = self.reply.take() {
            if reply.send(resp).is_err() {
                self.client_gone = true;
            }
        }
    }

    /// Ends the response. A body shorter than the declared Content-Length aborts the
    /// connection, since the client would otherwise wait for bytes that never come.
    pub fn finish(&mut self) {
        if !self.headers_sent {
            self.send_full(Bytes::new());
        }
        if let Some(tx) = self.stream.take() {
            if let Some(cl) = self.content_length {
                if self.sent < cl && !self.no_body() {
                    tracing::warn!(
                        declared = cl,
                        sent = self.sent,
                        "app sent less than its Content-Length; closing the connection"
                    );
                    let _ = tx.try_send(Err(BodyAbort("body shorter than Content-Length")));
                }
            }
        }
    }

    /// Gives up on a response whose head is already out (exception mid-stream).
    pub fn abort(&mut self) {
        if let Some(tx) = self.stream.take() {
            let _ = tx.try_send(Err(BodyAbort("application error after headers were sent")));
        }
    }

    /// Answers a server-made response when the app's own never started.
    pub fn send_error(&mut self, code: u16, body: &'static str) {
        self.status = Some((code, String::new()));
        self.headers = vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )];
        self.content_length = None;
        self.close = true;
        self.send_full(Bytes::from_static(body.as_bytes()));
    }
}

/// Pushes one chunk to the client with the GIL released. `false`: the client is gone.
/// A full channel means the client is behind: that wait is not the app's time
/// (`--timeout`); `--send-timeout` bounds it on the connection's side.
pub fn push(py: Python<'_>, tx: &ChunkSender, chunk: Bytes) -> bool {
    let chunk = match tx.try_send(Ok(chunk)) {
        Ok(()) => return true,
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
        Err(tokio::sync::mpsc::error::TrySendError::Full(chunk)) => chunk,
    };
    py.detach(|| crate::contract::client_wait(|| tx.blocking_send(chunk).is_ok()))
}

/// The `start_response` callable given to the app; `write` is its PEP 3333 `write()`.
#[pyclass(frozen, module = "rwsgi", name = "StartResponse")]
pub struct StartResponse {
    pub responder: Mutex<Responder>,
}

impl StartResponse {
    /// The response state (a poisoned lock becomes the app's `AssertionError`).
    pub fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Responder>> {
        self.responder
            .lock()
            .map_err(|_| PyAssertionError::new_err("response state poisoned"))
    }
}

/// The app produced body bytes before it called `start_response`.
pub fn not_started() -> PyErr {
    PyAssertionError::new_err("the app returned a body before calling start_response")
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let this = slf.borrow();
            let mut r = this.lock()?;
            match exc_info {
                Some(info) => {
                    if r.headers_sent {
                        let value = info.get_item(1)?;
                        return Err(PyErr::from_value(value));
                    }
                }
                None => {
                    if r.status.is_some() {
                        return Err(PyAssertionError::new_err(
                            "start_response called a second time without exc_info",
                        ));
                    }
                }
            }
            let status = parse_status(status)?;
            let (headers, content_length) = parse_headers(headers)?;
            r.start(status, headers, content_length);
        }
        slf.getattr(pyo3::intern!(slf.py(), "write"))
    }

    /// PEP 3333 `write(data)`: sends the headers if needed, then `data`, before the
    /// iterable's own chunks.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        let (tx, chunk) = {
            let mut r = self.lock()?;
            if r.status.is_none() {
                return Err(PyAssertionError::new_err(
                    "write() called before start_response",
                ));
            }
            if r.client_gone {
                return Err(pyo3::exceptions::PyOSError::new_err("client disconnected"));
            }
            let chunk = r.admit(data);
            let tx = r.stream();
            if r.inline {
                if tx.is_none() {
                    return Err(pyo3::exceptions::PyOSError::new_err("client disconnected"));
                }
                r.deferred.extend(chunk);
                return Ok(());
            }
            (tx, chunk)
        };
        if let (Some(tx), Some(chunk)) = (tx, chunk) {
            if !push(py, &tx, chunk) {
                if let Ok(mut r) = self.responder.lock() {
                    r.client_gone = true;
                }
                return Err(pyo3::exceptions::PyOSError::new_err("client disconnected"));
            }
        }
        Ok(())
    }
}
