//! The status line and header list the app hands `start_response`, checked and
//! converted once: the status keeps its reason phrase verbatim; header names must be
//! tokens and not hop-by-hop; values latin-1 without control characters;
//! Content-Length a number. [`FieldCache`] makes an app's constant header strings
//! free after their first check.

use std::sync::Mutex;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<(u16, String)> {
    let s = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("start_response: status must be a str"))?
        .to_str()?;
    let bytes = s.as_bytes();
    let code = (bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit))
        .then(|| s[..3].parse::<u16>().ok())
        .flatten()
        .filter(|c| *c >= 100);
    let Some(code) = code else {
        return Err(PyValueError::new_err(format!(
            "start_response: status {s:?} must start with a 3-digit code >= 100"
        )));
    };
    if bytes.len() > 3 && bytes[3] != b' ' {
        return Err(PyValueError::new_err(format!(
            "start_response: status {s:?} needs a space between code and reason"
        )));
    }
    let reason = if bytes.len() > 4 { &s[4..] } else { "" };
    if reason
        .chars()
        .any(|c| (c as u32) > 0xFF || c.is_control() && c != '\t')
    {
        return Err(PyValueError::new_err(format!(
            "start_response: status {s:?} has characters outside latin-1 or control characters"
        )));
    }
    Ok((code, reason.to_string()))
}

pub(super) type Headers = (Vec<(HeaderName, HeaderValue)>, Option<u64>);

pub(super) fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<Headers> {
    let list = headers
        .cast::<PyList>()
        .map_err(|_| PyTypeError::new_err("start_response: headers must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    let mut content_length = None;
    for item in list.iter() {
        let tuple = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("start_response: each header must be a (name, value) tuple")
        })?;
        if tuple.len() != 2 {
            return Err(PyTypeError::new_err(
                "start_response: each header must be a (name, value) tuple",
            ));
        }
        let name = tuple.get_borrowed_item(0)?;
        let value = tuple.get_borrowed_item(1)?;
        let (hname, hvalue) = {
            let cached = FIELDS.lock().ok().map(|c| (c.name(name), c.value(value)));
            let (hname, hvalue) = cached.unwrap_or((None, None));
            let fresh = (hname.is_none(), hvalue.is_none());
            let hname = match hname {
                Some(n) => n,
                None => parse_name(name)?,
            };
            let hvalue = match hvalue {
                Some(v) => v,
                None => parse_value(name, value)?,
            };
            if fresh != (false, false) {
                if let Ok(mut c) = FIELDS.lock() {
                    if fresh.0 {
                        c.put_name(name, &hname);
                    }
                    if fresh.1 {
                        c.put_value(value, &hvalue);
                    }
                }
            }
            (hname, hvalue)
        };
        if hname == CONTENT_LENGTH {
            content_length = Some(parse_content_length(&hvalue)?);
        }
        out.push((hname, hvalue));
    }
    Ok((out, content_length))
}

/// A header name of the app's, checked: a token, and not hop-by-hop.
fn parse_name(name: Borrowed<'_, '_, PyAny>) -> PyResult<HeaderName> {
    let name = name
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("start_response: header names must be str"))?;
    let name = name.to_str()?;
    let hname = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        PyValueError::new_err(format!("start_response: invalid header name {name:?}"))
    })?;
    if HOP_BY_HOP.contains(&hname.as_str()) {
        return Err(PyValueError::new_err(format!(
            "start_response: hop-by-hop header {name:?} is not allowed (PEP 3333)"
        )));
    }
    Ok(hname)
}

/// A header value of the app's (for header `name`, named as the app wrote it in
/// errors), checked: latin-1 without control characters.
fn parse_value(
    name: Borrowed<'_, '_, PyAny>,
    value: Borrowed<'_, '_, PyAny>,
) -> PyResult<HeaderValue> {
    let (type_error, problem) = match value.cast::<PyString>() {
        Err(_) => (true, "value must be str"),
        Ok(text) => {
            let text = text.to_str()?;
            let mut latin1 = Vec::with_capacity(text.len());
            let mut wide = false;
            for c in text.chars() {
                wide |= c as u32 > 0xFF;
                latin1.push(c as u8);
            }
            match HeaderValue::from_bytes(&latin1) {
                Ok(v) if !wide => return Ok(v),
                _ if wide => (false, "value is not latin-1"),
                _ => (false, "value has control characters"),
            }
        }
    };
    let name = name.str().map(|s| s.to_string()).unwrap_or_default();
    let message = format!("start_response: header {name:?} {problem}");
    Err(if type_error {
        PyTypeError::new_err(message)
    } else {
        PyValueError::new_err(message)
    })
}

fn parse_content_length(value: &HeaderValue) -> PyResult<u64> {
    let text = String::from_utf8_lossy(value.as_bytes());
    text.trim().parse::<u64>().map_err(|_| {
        PyValueError::new_err(format!(
            "start_response: Content-Length {text:?} is not a number"
        ))
    })
}

/// Slots of [`FieldCache`] (each for names and for values).
const FIELD_SLOTS: usize = 64;
/// Longer values are not kept: they would stay alive in the cache.
const FIELD_VALUE_MAX: usize = 256;

/// The header fields this worker's app sent lately, already checked and converted,
/// keyed by the identity of the Python `str` objects. Most apps send the same string
/// constants (`"Content-Type"`, `"text/html; charset=utf-8"`) on every response;
/// checking and copying them again cost about a fifth of a `start_response` call.
/// Each entry holds a reference to its string, so the address cannot be reused by
/// another object while the entry lives, and Python strings do not change: a hit is
/// exactly the string that was checked. Direct-mapped and small: a string made per
/// request only displaces an entry, and an unlucky pair of constants only misses.
struct FieldCache {
    names: [Option<(Py<PyAny>, HeaderName)>; FIELD_SLOTS],
    values: [Option<(Py<PyAny>, HeaderValue)>; FIELD_SLOTS],
}

static FIELDS: Mutex<FieldCache> = Mutex::new(FieldCache {
    names: [const { None }; FIELD_SLOTS],
    values: [const { None }; FIELD_SLOTS],
});

/// Only exact `str` objects are kept: dropping an entry then never runs Python code
/// (a subclass could define `__del__`, which would run under the cache's lock).
fn cacheable(obj: Borrowed<'_, '_, PyAny>) -> bool {
    obj.is_exact_instance_of::<PyString>()
}

fn slot(obj: Borrowed<'_, '_, PyAny>) -> usize {
    (obj.as_ptr() as usize >> 4) % FIELD_SLOTS
}

impl FieldCache {
    fn name(&self, name: Borrowed<'_, '_, PyAny>) -> Option<HeaderName> {
        let (n, hname) = self.names[slot(name)].as_ref()?;
        (n.as_ptr() == name.as_ptr()).then(|| hname.clone())
    }

    fn value(&self, value: Borrowed<'_, '_, PyAny>) -> Option<HeaderValue> {
        let (v, hvalue) = self.values[slot(value)].as_ref()?;
        (v.as_ptr() == value.as_ptr()).then(|| hvalue.clone())
    }

    fn put_name(&mut self, name: Borrowed<'_, '_, PyAny>, hname: &HeaderName) {
        if !cacheable(name) {
            return;
        }
        self.names[slot(name)] = Some((Borrowed::to_owned(name).unbind(), hname.clone()));
    }

    fn put_value(&mut self, value: Borrowed<'_, '_, PyAny>, hvalue: &HeaderValue) {
        if hvalue.len() <= FIELD_VALUE_MAX && cacheable(value) {
            self.values[slot(value)] = Some((Borrowed::to_owned(value).unbind(), hvalue.clone()));
        }
    }
}
