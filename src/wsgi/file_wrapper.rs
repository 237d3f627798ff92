//! `wsgi.file_wrapper`: lets the server send a file efficiently.
//!
//! Iterating it reads `blksize` chunks, which works for any file-like object. When the
//! app returns one wrapping a real file (`fileno()` of a regular file), the response
//! path instead sends it from Rust in large reads without the GIL, from the file's
//! current position, honouring a declared Content-Length.

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::start_response::{not_started, StartResponse};

/// `wsgi.file_wrapper(filelike, blksize=8192)`.
#[pyclass(module = "rwsgi", name = "FileWrapper")]
pub struct FileWrapper {
    /// The wrapped file-like object.
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => data.is_none() || data.len().map(|n| n == 0).unwrap_or(false),
        };
        if empty {
            return Err(PyStopIteration::new_err(()));
        }
        Ok(data)
    }

    /// PEP 3333: close() closes the wrapped object if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// Read size for files sent through `wsgi.file_wrapper`.
const FILE_CHUNK: usize = 256 * 1024;

/// An open regular file behind a file_wrapper's `fileno()`, and where to start.
pub(super) struct RealFile {
    file: std::fs::File,
    offset: u64,
    len: u64,
}

pub(super) fn real_file(filelike: &Bound<'_, PyAny>) -> Option<RealFile> {
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
pub(super) fn send_file(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    f: RealFile,
) -> PyResult<()> {
    let (tx, mut budget, count_only) = {
        let mut r = sr.get().lock()?;
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
    let mut r = sr.get().lock()?;
    r.sent += sent;
    if gone {
        r.client_gone = true;
    }
    Ok(())
}
