//! The contract between the layers: the [`Request`] the server hands to dispatch (and
//! dispatch to the app), the [`Reply`] (with its [`ResponseBody`]) coming back, and the
//! [`Connection`] facts every request of one connection shares. It holds no Python
//! object and no policy, so `server/` (bytes), `dispatch/` (policy) and `wsgi/`
//! (PEP 3333) all build on it without knowing each other's types.
//!
//! The async side only ever sends a request (non-blocking) and awaits a oneshot; a
//! Python thread only ever blocks on channels with the GIL released. Neither waits on
//! the other while holding anything the other needs.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// Who sent the request.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A unix-socket client has no address.
    Unix,
}

/// The listening socket that accepted the request, for SERVER_NAME / SERVER_PORT.
#[derive(Debug)]
pub struct Local {
    pub name: String,
    pub port: String,
}

impl Local {
    pub fn new(name: String, port: String) -> Local {
        Local { name, port }
    }
}

/// What every request of one connection shares, made once when it is accepted.
#[derive(Debug)]
pub struct Connection {
    pub peer: Peer,
    pub local: std::sync::Arc<Local>,
    /// The peer's address as text (the access log's remote address, `REMOTE_ADDR`);
    /// empty for a unix-socket peer.
    pub addr: String,
    pub port: Option<u16>,
}

impl Connection {
    pub fn new(peer: Peer, local: std::sync::Arc<Local>) -> Connection {
        let (addr, port) = match peer {
            Peer::Tcp(a) => (ip_text(a.ip()), Some(a.port())),
            Peer::Unix => (String::new(), None),
        };
        Connection {
            peer,
            local,
            addr,
            port,
        }
    }
}

/// An address as text; IPv4 through `itoa`, as `fmt` costs several hundred
/// instructions on every request.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    let mut digits = itoa::Buffer::new();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(digits.format(octet));
    }
    out
}

/// A parsed request, as the server read it: its head, its body, and when it arrived.
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// `None` when the request has no body (known from the framing).
    pub body: Option<RequestBody>,
    /// When the request arrived: the kernel's receive time of its bytes on TCP, else
    /// when its head was parsed. `server_wait` starts here.
    pub arrived_at: Instant,
    /// `arrived_at` on the wall clock (since the Unix epoch), when the kernel's stamp
    /// gave it: the queue stamp is judged at this plus the `server_wait`, without a
    /// second wall-clock read.
    pub arrived_wall: Option<Duration>,
}

/// A request's body, as `wsgi.input` reads it.
pub enum RequestBody {
    /// Frames pulled from hyper's connection as the app reads (and `Expect:
    /// 100-continue` answered on the first read).
    Streamed(Incoming),
    /// The whole body, read together with the head by the own HTTP/1.1 path (small
    /// bodies that arrived complete, `server/own.rs`).
    Whole(Bytes),
}

/// Why a streamed body ended abnormally; hyper then closes the connection.
#[derive(Debug)]
pub struct BodyAbort(pub &'static str);

impl std::fmt::Display for BodyAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BodyAbort {}

/// A chunk, or an abort, from the Python thread. The channel is bounded, so a slow
/// client pauses the app's iterator instead of growing memory.
pub type ChunkSender = mpsc::Sender<Result<Bytes, BodyAbort>>;

/// The response body handed to hyper.
pub enum ResponseBody {
    Empty,
    Full(Option<Bytes>),
    Stream(Streamed),
}

/// A body streamed from a Python thread.
pub struct Streamed {
    rx: mpsc::Receiver<Result<Bytes, BodyAbort>>,
    /// An abort seen but not yet reported: hyper drops unflushed bytes when a body
    /// fails, so the error waits one poll, giving hyper the chance to flush what the
    /// app already sent before the connection is cut.
    abort: Option<BodyAbort>,
}

impl Streamed {
    pub fn new(rx: mpsc::Receiver<Result<Bytes, BodyAbort>>) -> Self {
        Streamed { rx, abort: None }
    }
}

impl ResponseBody {
    pub fn full(b: Bytes) -> Self {
        if b.is_empty() {
            ResponseBody::Empty
        } else {
            ResponseBody::Full(Some(b))
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyAbort;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAbort>>> {
        match self.get_mut() {
            ResponseBody::Empty => Poll::Ready(None),
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(s) => {
                if let Some(e) = s.abort.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                match s.rx.poll_recv(cx) {
                    Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                    Poll::Ready(Some(Err(e))) => {
                        s.abort = Some(e);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Empty => true,
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Empty => SizeHint::with_exact(0),
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A response as the Python side (or the server) made it: the header fields in the
/// app's order, in a `Vec`. The own HTTP/1.1 path writes them from there; hyper gets
/// an `http::Response` ([`Reply::into_response`]). Building a `HeaderMap` only to
/// walk it once cost about 1,200 instructions per response.
pub struct Reply {
    pub status: http::StatusCode,
    /// The app's reason phrase, when it is not the canonical one.
    pub reason: Option<hyper::ext::ReasonPhrase>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: ResponseBody,
}

impl Reply {
    /// The same response for hyper.
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut r = Response::new(self.body);
        *r.status_mut() = self.status;
        if let Some(reason) = self.reason {
            r.extensions_mut().insert(reason);
        }
        let map = r.headers_mut();
        map.reserve(self.headers.len());
        for (name, value) in self.headers {
            map.append(name, value);
        }
        r
    }

    /// Asks for the connection to close after this response.
    pub fn close(&mut self) {
        let close = |(n, v): &(http::HeaderName, http::HeaderValue)| {
            n == http::header::CONNECTION && v == "close"
        };
        if !self.headers.iter().any(close) {
            self.headers.push((
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            ));
        }
    }
}

/// A short plain-text response made by the server itself (errors, limits, shedding).
pub fn plain(status: u16, body: &'static str, close: bool) -> Reply {
    let mut r = Reply {
        status: http::StatusCode::from_u16(status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR),
        reason: None,
        headers: vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body: ResponseBody::full(Bytes::from_static(body.as_bytes())),
    };
    if close {
        r.close();
    }
    r
}

/// `true` for the HTTP/1.0 requests that must be answered and closed.
pub fn is_http10(v: Version) -> bool {
    v == Version::HTTP_10 || v == Version::HTTP_09
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_text() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.100.9.99",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_text(ip), a);
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
