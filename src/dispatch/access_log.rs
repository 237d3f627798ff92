//! The access log, in gunicorn's format language (`%(h)s %(l)s %(u)s %(t)s "%(r)s" …`).
//!
//! The format is compiled once into atoms; a line is rendered after the response is
//! done, with the GIL released, and written whole under a short lock.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;

use crate::wsgi::{LogNeeds, Outcome};

/// The parts of a request that outlive the app call (for the log line).
pub struct RequestLine {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Lit(String),
    /// `h` remote address
    Remote,
    /// `l` always `-`
    Dash,
    /// `u` user from Basic auth
    User,
    /// `t` `[10/Oct/2000:13:55:36 -0700]`
    Time,
    /// `r` request line
    RequestLine,
    /// `m` method
    Method,
    /// `U` path
    Path,
    /// `q` query string
    Query,
    /// `H` protocol
    Protocol,
    /// `s` status
    Status,
    /// `B` body length
    BodyLen,
    /// `b` body length (`-` in gunicorn when unknown)
    BodyLenDash,
    /// `f` referer
    Referer,
    /// `a` user agent
    UserAgent,
    /// `T` seconds
    Secs,
    /// `D` microseconds
    Micros,
    /// `M` milliseconds
    Millis,
    /// `L` decimal seconds
    DecimalSecs,
    /// `p` process id
    Pid,
    /// `{name}i` request header
    ReqHeader(String),
    /// `{name}o` response header
    RespHeader(String),
    /// `{key}e` a key of the request's WSGI environ (matched case-insensitively, as
    /// gunicorn does)
    Env(String),
}

/// Parses gunicorn's `%(atom)s` format; unknown atoms render as `-`, as in gunicorn.
fn compile(format: &str) -> Vec<Atom> {
    let mut atoms = Vec::new();
    let mut lit = String::new();
    let mut rest = format;
    while let Some(i) = rest.find("%(") {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find(")s") else {
            lit.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        if !lit.is_empty() {
            atoms.push(Atom::Lit(std::mem::take(&mut lit)));
        }
        atoms.push(match name {
            "h" => Atom::Remote,
            "l" => Atom::Dash,
            "u" => Atom::User,
            "t" => Atom::Time,
            "r" => Atom::RequestLine,
            "m" => Atom::Method,
            "U" => Atom::Path,
            "q" => Atom::Query,
            "H" => Atom::Protocol,
            "s" => Atom::Status,
            "B" => Atom::BodyLen,
            "b" => Atom::BodyLenDash,
            "f" => Atom::Referer,
            "a" => Atom::UserAgent,
            "T" => Atom::Secs,
            "D" => Atom::Micros,
            "M" => Atom::Millis,
            "L" => Atom::DecimalSecs,
            "p" => Atom::Pid,
            n if n.starts_with('{') && n.len() > 3 => {
                // `{name}i`, `{name}o`, `{key}e`: the last two characters say which.
                // Cut at a character boundary: the format may hold any UTF-8.
                let body = &n[1..];
                let cut = body.char_indices().rev().nth(1).map_or(0, |(i, _)| i);
                let (inner, kind) = body.split_at(cut);
                let inner = inner.trim_end_matches('}').to_ascii_lowercase();
                match kind {
                    "}i" => Atom::ReqHeader(inner),
                    "}o" => Atom::RespHeader(inner),
                    _ => Atom::Env(inner),
                }
            }
            _ => Atom::Dash,
        });
        rest = &after[end + 2..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        atoms.push(Atom::Lit(lit));
    }
    atoms
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: std::fs::File },
}

/// An open access log.
pub struct AccessLog {
    atoms: Vec<Atom>,
    /// Computed once: the keys `%({key}e)s` atoms read from each request's environ.
    env_keys: Vec<String>,
    sink: Mutex<Sink>,
    /// A failing sink (a full disk) fails every line: one error line per interval.
    errors: crate::throttle::Throttle,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-")
}

fn basic_user(h: &HeaderMap) -> Option<String> {
    let v = h.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8_lossy(&raw);
    Some(s.split(':').next().unwrap_or("").to_string())
}

impl AccessLog {
    /// `path` None means stdout.
    pub fn open(path: Option<&Path>, format: &str) -> anyhow::Result<AccessLog> {
        let sink = match path {
            None => Sink::Stdout,
            Some(p) => Sink::File {
                path: p.to_path_buf(),
                file: open_append(p)?,
            },
        };
        Ok(AccessLog::new(compile(format), sink))
    }

    /// Whether lines need the response headers (`%({name}o)s`).
    pub fn wants_response_headers(&self) -> bool {
        self.atoms.iter().any(|a| matches!(a, Atom::RespHeader(_)))
    }

    /// The environ keys (lower-cased) that `%({key}e)s` atoms ask for.
    pub fn environ_keys(&self) -> &[String] {
        &self.env_keys
    }

    /// What the app call must keep for this log's lines.
    pub fn needs(&self) -> LogNeeds<'_> {
        LogNeeds {
            keep_headers: self.wants_response_headers(),
            env_keys: self.environ_keys(),
            keep_environ: false,
        }
    }

    /// Reopens the file (USR1, after log rotation).
    pub fn reopen(&self) -> std::io::Result<()> {
        let Ok(mut sink) = self.sink.lock() else {
            return Ok(());
        };
        if let Sink::File { path, file } = &mut *sink {
            *file = open_append(path)?;
        }
        Ok(())
    }

    /// Renders one line.
    pub fn render(
        &self,
        line: &RequestLine,
        headers: &HeaderMap,
        remote: &str,
        outcome: &Outcome,
        elapsed: Duration,
    ) -> String {
        let mut out = String::with_capacity(160);
        let proto = match line.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_09 => "HTTP/0.9",
            _ => "HTTP/1.1",
        };
        let target = line.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        for atom in &self.atoms {
            let _ = match atom {
                Atom::Lit(s) => write!(out, "{s}"),
                Atom::Remote => write!(out, "{}", if remote.is_empty() { "-" } else { remote }),
                Atom::Dash => write!(out, "-"),
                Atom::User => write!(out, "{}", basic_user(headers).unwrap_or_else(|| "-".into())),
                Atom::Time => write!(
                    out,
                    "{}",
                    chrono::Local::now().format("[%d/%b/%Y:%H:%M:%S %z]")
                ),
                Atom::RequestLine => write!(out, "{} {} {}", line.method, target, proto),
                Atom::Method => write!(out, "{}", line.method),
                Atom::Path => write!(out, "{}", line.uri.path()),
                Atom::Query => write!(out, "{}", line.uri.query().unwrap_or("")),
                Atom::Protocol => write!(out, "{proto}"),
                Atom::Status => write!(out, "{}", outcome.status),
                Atom::BodyLen => write!(out, "{}", outcome.sent),
                // gunicorn prints `-` only when the length is unknown; rwsgi always
                // knows what it sent.
                Atom::BodyLenDash => write!(out, "{}", outcome.sent),
                Atom::Referer => write!(out, "{}", header(headers, "referer")),
                Atom::UserAgent => write!(out, "{}", header(headers, "user-agent")),
                Atom::Secs => write!(out, "{}", elapsed.as_secs()),
                Atom::Micros => write!(out, "{}", elapsed.as_micros()),
                Atom::Millis => write!(out, "{}", elapsed.as_millis()),
                Atom::DecimalSecs => write!(out, "{:.6}", elapsed.as_secs_f64()),
                Atom::Pid => write!(out, "<{}>", std::process::id()),
                Atom::ReqHeader(n) => write!(out, "{}", header(headers, n)),
                Atom::RespHeader(n) => write!(
                    out,
                    "{}",
                    outcome
                        .headers
                        .iter()
                        .find(|(k, _)| k.as_str() == n)
                        .and_then(|(_, v)| v.to_str().ok())
                        .unwrap_or("-")
                ),
                Atom::Env(n) => write!(
                    out,
                    "{}",
                    outcome
                        .environ
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("-")
                ),
            };
        }
        out.push('\n');
        out
    }

    /// Writes one line; errors cost a log line, never the request.
    pub fn write(
        &self,
        line: &RequestLine,
        headers: &HeaderMap,
        remote: &str,
        outcome: &Outcome,
        elapsed: Duration,
    ) {
        let text = self.render(line, headers, remote, outcome, elapsed);
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let res = match &mut *sink {
            Sink::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(text.as_bytes()).and_then(|_| o.flush())
            }
            Sink::File { file, .. } => file.write_all(text.as_bytes()),
        };
        if let Err(e) = res {
            if let Some(skipped) = self.errors.allow() {
                tracing::warn!(error = %e, skipped, "cannot write the access log");
            }
        }
    }
}

impl AccessLog {
    fn new(atoms: Vec<Atom>, sink: Sink) -> AccessLog {
        let env_keys = atoms
            .iter()
            .filter_map(|a| match a {
                Atom::Env(k) => Some(k.clone()),
                _ => None,
            })
            .collect();
        AccessLog {
            atoms,
            env_keys,
            sink: Mutex::new(sink),
            errors: crate::throttle::Throttle::new(),
        }
    }
}

fn open_append(p: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, sent: u64) -> Outcome {
        Outcome {
            status,
            sent,
            received: 0,
            headers: vec![(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            )],
            environ: vec![("request_method".into(), "GET".into())],
            client_timeout: false,
            environ_dict: None,
        }
    }

    #[test]
    fn gunicorn_default_format() {
        let log = AccessLog::new(
            compile(r#"%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#),
            Sink::Stdout,
        );
        let mut h = HeaderMap::new();
        h.insert("user-agent", "curl/8".parse().unwrap());
        h.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        let line = RequestLine {
            method: http::Method::GET,
            uri: "/a?b=1".parse().unwrap(),
            version: http::Version::HTTP_11,
        };
        let s = log.render(
            &line,
            &h,
            "127.0.0.1",
            &outcome(200, 5),
            Duration::from_millis(3),
        );
        assert_eq!(
            s,
            "127.0.0.1 - user \"GET /a?b=1 HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn header_and_timing_atoms() {
        let atoms = compile(
            "%({X-Req}i)s %({content-type}o)s %(D)s %(M)s %(zz)s %({REQUEST_METHOD}e)s tail",
        );
        assert_eq!(atoms[0], Atom::ReqHeader("x-req".into()));
        assert_eq!(atoms[2], Atom::RespHeader("content-type".into()));
        let log = AccessLog::new(atoms, Sink::Stdout);
        assert!(log.wants_response_headers());
        let mut h = HeaderMap::new();
        h.insert("x-req", "abc".parse().unwrap());
        let line = RequestLine {
            method: http::Method::GET,
            uri: "/".parse().unwrap(),
            version: http::Version::HTTP_10,
        };
        let s = log.render(&line, &h, "", &outcome(404, 0), Duration::from_micros(2500));
        assert_eq!(s, "abc text/plain 2500 2 - GET tail\n");
    }
}
