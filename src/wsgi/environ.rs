//! The WSGI `environ` dict for one request (PEP 3333 "environ Variables").
//!
//! Native strings are latin-1 decoded bytes, so every byte of a path or header
//! survives. Keys are interned Python strings, built once per interpreter.

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
use http::HeaderMap;
use percent_encoding::percent_decode;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::server::handoff::Job;

/// Per-worker values that every environ shares.
pub struct EnvironShared {
    /// `wsgi.errors`: one object per worker, writing to the server log.
    pub errors: Py<PyAny>,
    /// `wsgi.file_wrapper`: the FileWrapper type.
    pub file_wrapper: Py<PyAny>,
    /// `wsgi.version`, `(1, 0)`.
    pub version: Py<PyAny>,
    pub multithread: bool,
    pub multiprocess: bool,
    /// `SCRIPT_NAME`, from the environment as gunicorn takes it (usually empty).
    pub script_name: String,
}

/// The per-request facts that do not come from the request bytes.
pub struct RequestFacts<'a> {
    /// `REMOTE_ADDR` after `--forwarded-allow-ips` handling.
    pub remote_addr: &'a str,
    pub remote_port: Option<u16>,
    /// `wsgi.url_scheme` after `--forwarded-allow-ips` handling.
    pub url_scheme: &'static str,
    /// `rwsgi.queue_time`: seconds since the proxy stamp, when there was a usable one.
    pub queue_time: Option<f64>,
    /// `rwsgi.server_wait`: seconds between parsing the head and dispatch.
    pub server_wait: f64,
}

/// A Python str from bytes taken as latin-1 (every byte value maps to one code point).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Ok(PyString::new(py, unsafe {
            std::str::from_utf8_unchecked(bytes)
        }));
    }
    // SAFETY: the pointer and length describe `bytes`, alive for the call; the
    // returned reference is owned and checked for NULL (error) by pyo3.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?.cast_into_unchecked())
    }
}

/// `HTTP_` + upper-cased name with `-` as `_`. `None` for names containing `_`, which
/// would otherwise let `X_Foo` pose as `X-Foo` (both map to `HTTP_X_FOO`).
pub fn cgi_header_key(name: &str) -> Option<String> {
    if name.contains('_') {
        return None;
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for c in name.chars() {
        key.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    Some(key)
}

/// All values of one header joined as PEP 3333 asks (`, `; `; ` for Cookie, per
/// RFC 6265), as raw bytes.
pub fn joined_value(headers: &HeaderMap, name: &http::HeaderName) -> Vec<u8> {
    let sep: &[u8] = if name == COOKIE { b"; " } else { b", " };
    let mut out = Vec::new();
    for (i, v) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Builds the environ for `job`; `input` becomes `wsgi.input`.
pub fn build<'py>(
    py: Python<'py>,
    job: &Job,
    facts: &RequestFacts<'_>,
    shared: &EnvironShared,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    env.set_item(intern!(py, "REQUEST_METHOD"), job.method.as_str())?;
    env.set_item(intern!(py, "SCRIPT_NAME"), shared.script_name.as_str())?;
    let raw_path = job.uri.path();
    let decoded: Vec<u8> = percent_decode(raw_path.as_bytes()).collect();
    let mut path_info: &[u8] = &decoded;
    if !shared.script_name.is_empty() {
        if let Some(rest) = path_info.strip_prefix(shared.script_name.as_bytes()) {
            path_info = rest;
        }
    }
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, path_info)?)?;
    env.set_item(
        intern!(py, "QUERY_STRING"),
        latin1(py, job.uri.query().unwrap_or("").as_bytes())?,
    )?;
    let raw_uri = job.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    env.set_item(intern!(py, "RAW_URI"), latin1(py, raw_uri.as_bytes())?)?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        match job.version {
            http::Version::HTTP_10 => intern!(py, "HTTP/1.0"),
            http::Version::HTTP_09 => intern!(py, "HTTP/0.9"),
            _ => intern!(py, "HTTP/1.1"),
        },
    )?;
    env.set_item(intern!(py, "SERVER_NAME"), job.local.name.as_str())?;
    env.set_item(intern!(py, "SERVER_PORT"), job.local.port.as_str())?;
    env.set_item(intern!(py, "REMOTE_ADDR"), facts.remote_addr)?;
    if let Some(port) = facts.remote_port {
        env.set_item(intern!(py, "REMOTE_PORT"), port.to_string())?;
    }

    for name in job.headers.keys() {
        if name == CONTENT_TYPE || name == CONTENT_LENGTH {
            let value = joined_value(&job.headers, name);
            let key = if name == CONTENT_TYPE {
                intern!(py, "CONTENT_TYPE")
            } else {
                intern!(py, "CONTENT_LENGTH")
            };
            env.set_item(key, latin1(py, &value)?)?;
            continue;
        }
        let Some(key) = cgi_header_key(name.as_str()) else {
            continue;
        };
        let value = match job.headers.get_all(name).iter().nth(1) {
            None => match job.headers.get(name) {
                Some(v) => latin1(py, v.as_bytes())?,
                None => continue,
            },
            Some(_) => latin1(py, &joined_value(&job.headers, name))?,
        };
        env.set_item(key, value)?;
    }

    env.set_item(intern!(py, "wsgi.version"), shared.version.bind(py))?;
    env.set_item(intern!(py, "wsgi.url_scheme"), facts.url_scheme)?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.errors"), shared.errors.bind(py))?;
    env.set_item(intern!(py, "wsgi.multithread"), shared.multithread)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), shared.multiprocess)?;
    env.set_item(intern!(py, "wsgi.run_once"), false)?;
    env.set_item(
        intern!(py, "wsgi.file_wrapper"),
        shared.file_wrapper.bind(py),
    )?;
    env.set_item(intern!(py, "rwsgi.queue_time"), facts.queue_time)?;
    env.set_item(intern!(py, "rwsgi.server_wait"), facts.server_wait)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_follow_cgi() {
        assert_eq!(
            cgi_header_key("x-forwarded-for").unwrap(),
            "HTTP_X_FORWARDED_FOR"
        );
        assert_eq!(cgi_header_key("host").unwrap(), "HTTP_HOST");
        assert!(cgi_header_key("x_foo").is_none());
    }

    #[test]
    fn repeated_headers_join_with_comma_and_cookies_with_semicolon() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append(COOKIE, "a=1".parse().unwrap());
        h.append(COOKIE, "b=2".parse().unwrap());
        assert_eq!(joined_value(&h, &"x-a".parse().unwrap()), b"1, 2");
        assert_eq!(joined_value(&h, &COOKIE), b"a=1; b=2");
    }

    #[test]
    fn non_ascii_bytes_survive_as_latin1() {
        let mut h = HeaderMap::new();
        h.insert("x-name", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert_eq!(joined_value(&h, &"x-name".parse().unwrap()), b"caf\xe9");
        let decoded: Vec<u8> = percent_decode(b"/caf%C3%A9").collect();
        assert_eq!(decoded, "/café".as_bytes());
    }
}
