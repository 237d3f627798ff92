//! The WSGI `environ` dict for one request (PEP 3333 "environ Variables").
//!
//! Native strings are latin-1 decoded bytes, so every byte of a path or header
//! survives. Each environ starts as a copy of its connection's template (the
//! worker's, with the peer's address and the listener's name filled in), which
//! already holds every key set on every request (`PyDict_Copy` copies its key table
//! in one piece), so a request only replaces values. Keys are interned Python strings, built
//! once per worker: `HTTP_*` keys too, for the first [`MAX_HEADER_KEYS`] header names
//! a worker sees.

use std::collections::HashMap;
use std::sync::Mutex;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::input::{BodySource, Input};
use super::Setup;
use crate::contract::{Connection, Request};

/// At most this many `HTTP_*` keys are kept per worker: header names come from
/// clients, and a client sending random names must not grow the cache without end.
/// Names past it get a fresh key string per request, as before the cache.
pub const MAX_HEADER_KEYS: usize = 256;

/// Keys put into the template and taken out again, so that its table grows to 64
/// slots while it stays a table of str keys (a presized dict would not be one, and
/// every lookup the app makes would take CPython's slower general path).
const TEMPLATE_FILLERS: usize = 4;

/// Per-worker values that every environ shares.
pub struct EnvironShared {
    /// The keys every request sets, with the values that never change (`wsgi.*`,
    /// `SCRIPT_NAME`) and `None` for the rest; copied for each request.
    template: Py<PyDict>,
    /// `SCRIPT_NAME`, from the environment as gunicorn takes it (usually empty).
    script_name: String,
    /// `HTTP_*` key per header name already seen (interned, so its hash is cached).
    header_keys: Mutex<HashMap<HeaderName, Py<PyString>, fnv::FnvBuildHasher>>,
    /// `wsgi.input` of every request without a body: an empty `Input` has no state
    /// a request could change (it is at its end, and has handed out 0 bytes), so one
    /// serves them all instead of a new object per request.
    pub empty_input: Py<Input>,
    /// The runtime that drives request bodies (`wsgi.input` waits on it).
    pub handle: tokio::runtime::Handle,
    /// `--client-body-timeout`.
    pub body_timeout: std::time::Duration,
    /// `--header-map dangerous`: names with `_` are mapped too, colliding values
    /// joined; otherwise they are left out.
    map_ambiguous: bool,
}

/// The environ template of one connection: the worker's, with its `SERVER_NAME`,
/// `SERVER_PORT`, `REMOTE_ADDR` and `REMOTE_PORT` filled in (and HTTP/1.1 over http),
/// made by its first request. Each request's environ is a copy of it, so these are
/// not set again per request.
pub struct ConnEnviron(pyo3::sync::PyOnceLock<Py<PyDict>>);

impl Default for ConnEnviron {
    fn default() -> Self {
        ConnEnviron(pyo3::sync::PyOnceLock::new())
    }
}

impl EnvironShared {
    /// `errors` is `wsgi.errors`, `file_wrapper` the `wsgi.file_wrapper` type.
    pub fn new(
        py: Python<'_>,
        errors: Bound<'_, PyAny>,
        file_wrapper: Bound<'_, PyAny>,
        setup: Setup,
    ) -> PyResult<EnvironShared> {
        let Setup {
            multithread,
            multiprocess,
            script_name,
            handle,
            body_timeout,
            map_ambiguous_headers,
        } = setup;
        let t = PyDict::new(py);
        // Set on every request: placeholders, so the copy already has the key slot.
        for key in [
            intern!(py, "REQUEST_METHOD"),
            intern!(py, "PATH_INFO"),
            intern!(py, "QUERY_STRING"),
            intern!(py, "RAW_URI"),
            intern!(py, "SERVER_PROTOCOL"),
            intern!(py, "SERVER_NAME"),
            intern!(py, "SERVER_PORT"),
            intern!(py, "REMOTE_ADDR"),
            intern!(py, "wsgi.url_scheme"),
            intern!(py, "wsgi.input"),
            intern!(py, "rwsgi.queue_time"),
            intern!(py, "rwsgi.server_wait"),
        ] {
            t.set_item(key, py.None())?;
        }
        t.set_item(intern!(py, "SCRIPT_NAME"), script_name.as_str())?;
        t.set_item(
            intern!(py, "wsgi.version"),
            pyo3::types::PyTuple::new(py, [1, 0])?,
        )?;
        t.set_item(intern!(py, "wsgi.errors"), errors)?;
        t.set_item(intern!(py, "wsgi.multithread"), multithread)?;
        t.set_item(intern!(py, "wsgi.multiprocess"), multiprocess)?;
        t.set_item(intern!(py, "wsgi.run_once"), false)?;
        t.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper)?;
        // Room for about twenty more keys (REMOTE_PORT, CONTENT_*, HTTP_*): the copy
        // keeps the template's table, so a request adding its headers does not resize
        // it. PyDict_Copy still copies the table in one piece while at most a third of
        // its entries are deleted ones.
        let fillers: Vec<String> = (0..TEMPLATE_FILLERS)
            .map(|i| format!("rwsgi.room{i}"))
            .collect();
        for f in &fillers {
            t.set_item(f, py.None())?;
        }
        for f in &fillers {
            t.del_item(f)?;
        }
        Ok(EnvironShared {
            template: t.unbind(),
            script_name,
            header_keys: Mutex::new(HashMap::default()),
            empty_input: Py::new(
                py,
                Input::new(BodySource::new(None, handle.clone(), body_timeout)),
            )?,
            handle,
            body_timeout,
            map_ambiguous: map_ambiguous_headers,
        })
    }

    /// The `HTTP_*` key of `name`; `None` for an ambiguous name that is dropped (see
    /// [`ambiguous_header_name`]). Such names are never cached, so the check costs
    /// nothing on a name already seen.
    fn header_key<'py>(&self, py: Python<'py>, name: &HeaderName) -> Option<Bound<'py, PyString>> {
        let mut keys = self
            .header_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(key) = keys.get(name) {
            return Some(key.bind(py).clone());
        }
        if !self.map_ambiguous && ambiguous_header_name(name.as_str()) {
            return None;
        }
        let key = PyString::intern(py, &cgi_header_key(name.as_str()));
        if keys.len() < MAX_HEADER_KEYS {
            keys.insert(name.clone(), key.clone().unbind());
        }
        Some(key)
    }
}

/// The per-request facts that do not come from the request bytes.
pub struct RequestFacts<'a> {
    /// `REMOTE_ADDR` from a trusted `X-Forwarded-For` (`--forwarded-allow-ips`);
    /// `None`: the peer's own.
    pub remote_addr: Option<&'a str>,
    /// `wsgi.url_scheme` after `--forwarded-allow-ips` handling.
    pub url_scheme: &'static str,
    /// `rwsgi.queue_time`: seconds since the proxy stamp, when there was a usable one.
    pub queue_time: Option<f64>,
    /// `rwsgi.server_wait`: seconds between parsing the head and dispatch.
    pub server_wait: f64,
    /// `HTTP_X_REQUEST_START` as `t=<µs>` (`--set-request-start`), when dispatch made one.
    pub request_start_us: Option<u64>,
}

/// A Python str from bytes taken as latin-1 (every byte value maps to one code point).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if bytes.is_ascii() {
        return ascii(py, bytes);
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

/// A Python str from bytes the caller checked are ASCII: one copy, where decoding
/// would scan them again.
fn ascii<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    debug_assert!(bytes.is_ascii());
    let len = ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("string too long"))?;
    // SAFETY: PyUnicode_New(len, 127) returns a new compact ASCII str with room for
    // `len` one-byte characters (or NULL with an exception set, turned into an error);
    // it is filled before anyone else sees it, with ASCII only, as a compact ASCII str
    // requires.
    unsafe {
        let ptr = ffi::PyUnicode_New(len, 127);
        let s = Bound::from_owned_ptr_or_err(py, ptr)?;
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            ffi::PyUnicode_DATA(ptr).cast::<u8>(),
            bytes.len(),
        );
        Ok(s.cast_into_unchecked())
    }
}

/// Whether a header name maps ambiguously into the environ: `X_Foo` and `X-Foo` both
/// become `HTTP_X_FOO`, so a client could pose as a header a proxy set. gunicorn's
/// `--header-map` says what becomes of such a header: `drop` (the default) leaves it
/// out of the environ, `refuse` answers the request 400 (`dispatch/request.rs`),
/// `dangerous` maps it like any other and joins colliding values.
pub fn ambiguous_header_name(name: &str) -> bool {
    name.contains('_')
}

/// `HTTP_` + upper-cased name with `-` as `_`.
pub fn cgi_header_key(name: &str) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for c in name.chars() {
        key.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    key
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

/// The method as a Python str: interned for the common ones.
fn method_str<'py>(py: Python<'py>, method: &http::Method) -> Bound<'py, PyString> {
    match *method {
        http::Method::GET => intern!(py, "GET").clone(),
        http::Method::POST => intern!(py, "POST").clone(),
        http::Method::HEAD => intern!(py, "HEAD").clone(),
        http::Method::PUT => intern!(py, "PUT").clone(),
        http::Method::DELETE => intern!(py, "DELETE").clone(),
        http::Method::PATCH => intern!(py, "PATCH").clone(),
        http::Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

/// Where one environ's values come from: the request, its connection (and that
/// connection's template), and what dispatch decided about it.
pub struct Sources<'a> {
    pub request: &'a Request,
    pub conn: &'a Connection,
    pub template: &'a ConnEnviron,
    pub facts: &'a RequestFacts<'a>,
}

/// Builds the environ of one request; `input` becomes `wsgi.input`.
pub fn build<'py>(
    py: Python<'py>,
    src: &Sources<'_>,
    shared: &EnvironShared,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let Sources {
        request,
        conn,
        template,
        facts,
    } = *src;
    let template = template
        .0
        .get_or_try_init(py, || connection_template(py, conn, shared))?;
    // SAFETY: the template is a dict; PyDict_Copy returns a new reference or NULL
    // with an exception set, which from_owned_ptr_or_err turns into an error.
    let env: Bound<'py, PyDict> = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyDict_Copy(template.as_ptr()))?.cast_into_unchecked()
    };
    env.set_item(
        intern!(py, "REQUEST_METHOD"),
        method_str(py, &request.method),
    )?;
    let raw_path = request.uri.path();
    let decoded: Vec<u8>;
    let mut path_info: &[u8] = if raw_path.contains('%') {
        decoded = percent_decode(raw_path.as_bytes()).collect();
        &decoded
    } else {
        raw_path.as_bytes()
    };
    if !shared.script_name.is_empty() {
        if let Some(rest) = path_info.strip_prefix(shared.script_name.as_bytes()) {
            path_info = rest;
        }
    }
    let path_info_str = latin1(py, path_info)?;
    env.set_item(intern!(py, "PATH_INFO"), &path_info_str)?;
    let query = request.uri.query().unwrap_or("");
    env.set_item(
        intern!(py, "QUERY_STRING"),
        if query.is_empty() {
            intern!(py, "").clone()
        } else {
            latin1(py, query.as_bytes())?
        },
    )?;
    let raw_uri = request
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // Usually the same text as PATH_INFO (no query, nothing decoded): one str for both.
    if raw_uri.as_bytes() == path_info {
        env.set_item(intern!(py, "RAW_URI"), path_info_str)?;
    } else {
        env.set_item(intern!(py, "RAW_URI"), latin1(py, raw_uri.as_bytes())?)?;
    }
    // The connection's template says HTTP/1.1, the peer's address, and http.
    match request.version {
        http::Version::HTTP_10 => {
            env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.0"))?
        }
        http::Version::HTTP_09 => {
            env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/0.9"))?
        }
        _ => {}
    }
    if let Some(forwarded) = facts.remote_addr {
        env.set_item(intern!(py, "REMOTE_ADDR"), forwarded)?;
    }

    // Each name once, with all its values. When no name repeats (nearly every
    // request), the pairs are walked directly, without a hash lookup per header.
    // `--header-map dangerous`: `X_Foo` and `X-Foo` share a key, and their values
    // are joined as a repeated header's are (checked only in that mode).
    let collide = shared.map_ambiguous
        && request
            .headers
            .keys()
            .any(|n| ambiguous_header_name(n.as_str()));
    let unique = request.headers.keys_len() == request.headers.len();
    let pairs = unique.then(|| request.headers.iter()).into_iter().flatten();
    let names = (!unique)
        .then(|| request.headers.keys())
        .into_iter()
        .flatten();
    for (name, single) in pairs
        .map(|(n, v)| (n, Some(v)))
        .chain(names.map(|n| (n, None)))
    {
        if name == CONTENT_TYPE || name == CONTENT_LENGTH {
            let value = joined_value(&request.headers, name);
            let key = if name == CONTENT_TYPE {
                intern!(py, "CONTENT_TYPE")
            } else {
                intern!(py, "CONTENT_LENGTH")
            };
            env.set_item(key, latin1(py, &value)?)?;
            continue;
        }
        let Some(key) = shared.header_key(py, name) else {
            continue;
        };
        if let (Some(v), false) = (single, collide) {
            env.set_item(key, latin1(py, v.as_bytes())?)?;
            continue;
        }
        let mut values = request.headers.get_all(name).iter();
        let mut value = match (values.next(), values.next()) {
            (Some(v), None) => latin1(py, v.as_bytes())?.into_any(),
            (Some(_), Some(_)) => latin1(py, &joined_value(&request.headers, name))?.into_any(),
            (None, _) => continue,
        };
        if collide {
            if let Some(earlier) = env.get_item(&key)? {
                value = earlier.add(", ")?.add(value)?;
            }
        }
        env.set_item(key, value)?;
    }

    if facts.url_scheme != conn.scheme() {
        env.set_item(intern!(py, "wsgi.url_scheme"), facts.url_scheme)?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "rwsgi.queue_time"), facts.queue_time)?;
    env.set_item(intern!(py, "rwsgi.server_wait"), facts.server_wait)?;
    if let Some(us) = facts.request_start_us {
        env.set_item(intern!(py, "HTTP_X_REQUEST_START"), format!("t={us}"))?;
    }
    Ok(env)
}

/// The environ template of one connection: the worker's, with what every request of
/// the connection shares (see [`ConnEnviron`]).
fn connection_template(
    py: Python<'_>,
    conn: &Connection,
    shared: &EnvironShared,
) -> PyResult<Py<PyDict>> {
    let t = shared.template.bind(py).copy()?;
    t.set_item(
        intern!(py, "SERVER_NAME"),
        PyString::intern(py, &conn.local.name),
    )?;
    t.set_item(
        intern!(py, "SERVER_PORT"),
        PyString::intern(py, &conn.local.port),
    )?;
    t.set_item(intern!(py, "REMOTE_ADDR"), conn.addr.as_str())?;
    if let Some(port) = conn.port {
        t.set_item(intern!(py, "REMOTE_PORT"), itoa::Buffer::new().format(port))?;
    }
    t.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?;
    let scheme = if conn.transport.tls {
        intern!(py, "https")
    } else {
        intern!(py, "http")
    };
    t.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    if let Some(p) = conn.transport.proxied {
        // gunicorn's keys for a PROXY protocol connection.
        t.set_item(intern!(py, "PROXY_PROTOCOL"), p.protocol)?;
        if let Some((_, to)) = p.addrs {
            t.set_item(intern!(py, "PROXY_ADDR"), crate::contract::ip_text(to.ip()))?;
            t.set_item(
                intern!(py, "PROXY_PORT"),
                itoa::Buffer::new().format(to.port()),
            )?;
        }
    }
    Ok(t.unbind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_follow_cgi() {
        assert_eq!(cgi_header_key("x-forwarded-for"), "HTTP_X_FORWARDED_FOR");
        assert_eq!(cgi_header_key("host"), "HTTP_HOST");
        assert_eq!(cgi_header_key("x_foo"), "HTTP_X_FOO");
        assert!(ambiguous_header_name("x_foo") && !ambiguous_header_name("x-foo"));
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
