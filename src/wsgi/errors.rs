//! `wsgi.errors`: text the app writes here goes to the server log, line by line.

use pyo3::prelude::*;

/// `wsgi.errors`, shared by all requests of a worker (it holds no per-request state
/// beyond an unfinished line).
#[pyclass(module = "rwsgi", name = "Errors")]
pub struct Errors {
    /// Text written since the last newline.
    pending: std::sync::Mutex<String>,
}

impl Default for Errors {
    fn default() -> Self {
        Errors {
            pending: std::sync::Mutex::new(String::new()),
        }
    }
}

fn emit(line: &str) {
    tracing::error!(target: crate::logging::WSGI_ERRORS, "{}", line.trim_end_matches('\r'));
}

#[pymethods]
impl Errors {
    fn write(&self, s: &str) -> usize {
        let Ok(mut pending) = self.pending.lock() else {
            return 0;
        };
        pending.push_str(s);
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            emit(&line[..line.len() - 1]);
        }
        s.chars().count()
    }

    fn writelines(&self, lines: Vec<String>) {
        for l in lines {
            self.write(&l);
        }
    }

    fn flush(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            if !pending.is_empty() {
                emit(&pending);
                pending.clear();
            }
        }
    }
}
