//! The response body: what the app's iterable yields, sent to the connection.
//!
//! A list or tuple (the common case) is answered in one piece; any other iterable is
//! streamed chunk by chunk through a bounded channel, so a slow client pauses the
//! iterator. A `wsgi.file_wrapper` around a real file is sent by
//! [`super::file_wrapper::send_file`]. On the IO thread ([`iterate_inline`]) nothing
//! waits on the client.

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use super::file_wrapper::{real_file, send_file, FileWrapper};
use super::start_response::{not_started, push, StartResponse};

/// Where [`iterate_inline`] stopped.
pub(super) enum Step {
    /// The response is complete.
    Done,
    /// A Python thread must go on: from `iter(iterable)` when given (its first chunk
    /// is already out), else from the iterable itself.
    Suspend(Option<Py<PyAny>>),
}

/// The IO thread's share of a response: everything that cannot wait on the client.
pub(super) fn iterate_inline(
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<Step> {
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
        let mut r = sr.get().lock()?;
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
pub(super) fn iterate_rest(
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
pub(super) fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
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

pub(super) fn iterate(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<()> {
    // A list or tuple is already in memory: answer in one piece, unless write()
    // already started a stream.
    let list = iterable.cast_exact::<PyList>().ok();
    let tuple = match list {
        None => iterable.cast_exact::<PyTuple>().ok(),
        Some(_) => None,
    };
    if list.is_some() || tuple.is_some() {
        // Each item a new reference, the list's length read at each step: no copy
        // of the sequence, and no Python code runs until the loop is done.
        let items = || {
            let from_list = list.into_iter().flat_map(|l| l.iter());
            from_list.chain(tuple.into_iter().flat_map(|t| t.iter()))
        };
        let mut r = sr.get().lock()?;
        if !r.headers_sent {
            let mut body = BytesMut::new();
            let mut single: Option<Bytes> = None;
            for item in items() {
                let b = as_bytes(&item)?;
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
        // Sending may let other threads run (and change the list): a copy first.
        let items: Vec<Bound<'_, PyAny>> = items().collect();
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
        let mut r = sr.get().lock()?;
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
            sr.get().lock()?.client_gone = true;
            return Ok(false);
        }
    }
    Ok(!full)
}
