//! `wsgi.file_wrapper`: lets the server send a file efficiently.
//!
//! Iterating it reads `blksize` chunks, which works for any file-like object. When the
//! app returns one wrapping a real file (`fileno()` of a regular file), the response
//! path instead sends it from Rust in large reads without the GIL, from the file's
//! current position, honouring a declared Content-Length.

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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
