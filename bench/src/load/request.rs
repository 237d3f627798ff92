//! The request every connection sends, built once and stamped per request.
//!
//! Parsing the target, the headers and the body happens once, up front; per request
//! only the header map is cloned (cheap: names and values are shared `Bytes`) and the
//! optional queue-time stamp is formatted on the stack.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request, Uri};

use crate::stamp::Msec;

/// Where the load goes: a loopback address and the request target on it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved socket address; always a loopback address.
    pub addr: SocketAddr,
    /// `host[:port]` as given, for the Host header.
    pub authority: String,
    /// Origin-form request target (`/path?query`): connections are made by hand, so
    /// hyper writes the URI exactly as it is given.
    pub path: Uri,
}

impl Target {
    /// Parses `http://HOST[:PORT]/PATH`. Only loopback hosts are accepted: this tool
    /// generates load, and load is only ever meant for the local machine.
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("only http:// is supported, not {other}://"),
            None => bail!("URL {url:?} needs a scheme (http://)"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("URL {url:?} has no host"))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .find(|a| a.ip().is_loopback())
            .with_context(|| {
                format!("{host} is not a loopback address: load is only sent to this machine")
            })?;
        let path: Uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .context("invalid path")?;
        Ok(Self {
            addr,
            authority: authority.as_str().to_string(),
            path,
        })
    }
}

/// The queue-time stamp header and which instant it carries.
#[derive(Debug, Clone)]
pub struct StampSpec {
    /// Header name, e.g. `X-RequestTime`.
    pub header: HeaderName,
    /// Stamp the due time or the actual send time.
    pub at: StampAt,
}

/// Which instant the stamp carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum StampAt {
    /// When the request was due in the schedule: in the open model that is when the
    /// request "arrived at the proxy", which is what nginx's `$msec` would say.
    Due,
    /// When the generator actually wrote it.
    Sent,
}

/// Method, target, headers and body shared by all requests of a run.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: Method,
    path: Uri,
    headers: HeaderMap,
    body: Bytes,
    stamp: Option<StampSpec>,
}

impl RequestTemplate {
    /// Builds the template. `headers` are `Name: value` strings.
    pub fn new(
        target: &Target,
        method: &str,
        headers: &[String],
        body: Bytes,
        keep_alive: bool,
        stamp: Option<StampSpec>,
    ) -> Result<Self> {
        let method: Method = method
            .parse()
            .with_context(|| format!("invalid method {method:?}"))?;
        let mut map = HeaderMap::new();
        map.insert(
            HOST,
            HeaderValue::from_str(&target.authority).context("invalid host")?,
        );
        if !keep_alive {
            map.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if !body.is_empty() {
            map.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not `Name: value`"))?;
            let name: HeaderName = name
                .trim()
                .parse()
                .with_context(|| format!("invalid header name in {h:?}"))?;
            let value = HeaderValue::from_str(value.trim())
                .with_context(|| format!("invalid header value in {h:?}"))?;
            map.append(name, value);
        }
        Ok(Self {
            method,
            path: target.path.clone(),
            headers: map,
            body,
            stamp,
        })
    }

    /// Whether requests carry a stamp, and which instant it holds.
    pub fn stamp_at(&self) -> Option<StampAt> {
        self.stamp.as_ref().map(|s| s.at)
    }

    /// One request, stamped with `stamp` when the template has a stamp header.
    pub fn build(&self, stamp: Option<Msec>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        if let (Some(spec), Some(msec)) = (&self.stamp, stamp) {
            if let Ok(v) = HeaderValue::from_bytes(msec.as_bytes()) {
                req.headers_mut().insert(spec.header.clone(), v);
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_loopback_targets() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?c=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/a/b?c=1");
        let t = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(t.path, "/");
    }

    #[test]
    fn refuses_other_hosts_and_schemes() {
        assert!(Target::parse("http://192.0.2.1/").is_err());
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(Target::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn builds_stamped_requests() {
        let t = Target::parse("http://127.0.0.1:1/x").unwrap();
        let tpl = RequestTemplate::new(
            &t,
            "POST",
            &["X-A: 1".to_string()],
            Bytes::from_static(b"abc"),
            false,
            Some(StampSpec {
                header: HeaderName::from_static("x-requesttime"),
                at: StampAt::Due,
            }),
        )
        .unwrap();
        let req = tpl.build(Some(Msec::new(Duration::from_millis(1_700_000_000_123))));
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()["host"], "127.0.0.1:1");
        assert_eq!(req.headers()["connection"], "close");
        assert_eq!(req.headers()["x-a"], "1");
        assert_eq!(req.headers()["x-requesttime"], "1700000000.123");
    }

    #[test]
    fn rejects_malformed_headers() {
        let t = Target::parse("http://127.0.0.1:1/").unwrap();
        let bad = |h: &str| {
            RequestTemplate::new(&t, "GET", &[h.to_string()], Bytes::new(), true, None).is_err()
        };
        assert!(bad("no colon"));
        assert!(bad("bad name: v"));
        assert!(bad("X: bad\nvalue"));
    }
}
