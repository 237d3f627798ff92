//! `wsgi.input`: the request body as a Python file-like object.
//!
//! Bytes are pulled from hyper's `Incoming` on demand by the Python thread itself,
//! with the GIL released while it waits, so (a) `Expect: 100-continue` is answered only
//! when the app first reads, (b) a 1 GiB upload streams through a buffer no larger than
//! what the app asked for plus one frame, and (c) the async side never waits on Python.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::contract::RequestBody;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// The body source and what has been read from it but not yet handed to the app.
pub struct BodySource {
    /// `None` once the body ended (or when the request had none).
    incoming: Option<Incoming>,
    /// Lets this (non-runtime) thread wait for frames that hyper's connection task,
    /// running on the worker's runtime, delivers.
    handle: tokio::runtime::Handle,
}

impl BodySource {
    /// The source and what is already read of it (a whole body, see
    /// [`RequestBody::Whole`]).
    pub fn new(body: Option<RequestBody>, handle: tokio::runtime::Handle) -> (Self, Option<Bytes>) {
        let (incoming, whole) = match body {
            Some(RequestBody::Streamed(incoming)) => (Some(incoming), None),
            Some(RequestBody::Whole(bytes)) => (None, Some(bytes)),
            None => (None, None),
        };
        (BodySource { incoming, handle }, whole)
    }
}

/// `wsgi.input`. Methods take `&mut self`, so pyo3's borrow flag (not a lock held
/// across a GIL release) guards against two threads reading one body at once.
#[pyclass(module = "rwsgi", name = "Input")]
pub struct Input {
    /// Frames received and not yet handed to the app, as hyper delivered them (no
    /// copy): the app's `bytes` are copied straight out of them, once.
    chunks: VecDeque<Bytes>,
    /// Total bytes in `chunks`.
    buffered: usize,
    /// A `Mutex` only to make the pyclass `Sync`; `&mut self` already excludes sharing.
    source: Mutex<BodySource>,
    eof: bool,
    /// Total bytes handed to the app, for the access log and for tests.
    consumed: u64,
}

impl Input {
    pub fn new((source, whole): (BodySource, Option<Bytes>)) -> Input {
        let eof = source.incoming.is_none();
        let buffered = whole.as_ref().map_or(0, Bytes::len);
        Input {
            chunks: whole.filter(|b| !b.is_empty()).into_iter().collect(),
            buffered,
            source: Mutex::new(source),
            eof,
            consumed: 0,
        }
    }

    /// Pulls one more frame into `chunks`. Returns false at end of body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        let source = self
            .source
            .get_mut()
            .map_err(|_| PyOSError::new_err("wsgi.input is unusable after a panic"))?;
        let Some(incoming) = source.incoming.as_mut() else {
            self.eof = true;
            return Ok(false);
        };
        let handle = source.handle.clone();
        let next = py.detach(|| handle.block_on(incoming.frame()));
        match next {
            None => {
                source.incoming = None;
                self.eof = true;
                Ok(false)
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        self.buffered += data.len();
                        self.chunks.push_back(data);
                    }
                }
                Ok(true)
            }
            Some(Err(e)) => {
                source.incoming = None;
                self.eof = true;
                Err(PyOSError::new_err(format!(
                    "request body could not be read (client disconnected or sent a \
                     malformed body): {e}"
                )))
            }
        }
    }

    /// The next `n` bytes (fewer if fewer are buffered), copied once, from the
    /// frames into the new `bytes` object.
    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(self.buffered);
        let chunks = &mut self.chunks;
        let out = PyBytes::new_with(py, n, |dst| {
            let mut filled = 0;
            while filled < n {
                let Some(front) = chunks.front_mut() else {
                    break;
                };
                let k = front.len().min(n - filled);
                dst[filled..filled + k].copy_from_slice(&front[..k]);
                front.advance(k);
                filled += k;
                if front.is_empty() {
                    chunks.pop_front();
                }
            }
            Ok(())
        })?;
        self.buffered -= n;
        self.consumed += n as u64;
        Ok(out)
    }

    /// The length of the buffered line (through its b"\n"), if one ends within
    /// `limit` bytes.
    fn line_len(&self, limit: usize) -> Option<usize> {
        let mut seen = 0;
        for chunk in &self.chunks {
            let window = &chunk[..chunk.len().min(limit - seen)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                return Some(seen + i + 1);
            }
            seen += window.len();
            if seen >= limit {
                break;
            }
        }
        None
    }
}

fn size_arg(size: Option<i64>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

#[pymethods]
impl Input {
    /// read(size=-1): at most `size` bytes; everything left when size is negative or
    /// omitted; b"" at end of body.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        match size_arg(size) {
            None => {
                while self.fill(py)? {}
                let n = self.buffered;
                self.take(py, n)
            }
            Some(n) => {
                while self.buffered < n && self.fill(py)? {}
                self.take(py, n)
            }
        }
    }

    /// readline(size=-1): up to and including the next b"\n", at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size).unwrap_or(usize::MAX);
        loop {
            if let Some(n) = self.line_len(limit) {
                return self.take(py, n);
            }
            if self.buffered >= limit {
                return self.take(py, limit);
            }
            if !self.fill(py)? {
                let n = self.buffered.min(limit);
                return self.take(py, n);
            }
        }
    }

    /// readlines(hint=-1): lines until their total length reaches `hint`.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<i64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|h| *h > 0);
        let lines = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.readline(py, None)?;
            let len = line.as_bytes().len();
            if len == 0 {
                break;
            }
            lines.append(line)?;
            total += len;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }

    /// Bytes the app has read so far.
    #[getter]
    fn consumed(&self) -> u64 {
        self.consumed
    }
}

impl Input {
    /// Bytes the app has read so far (for the access log).
    pub fn consumed_bytes(&self) -> u64 {
        self.consumed
    }
}
