//! The own HTTP/1.1 path: keep-alive requests without a body, or with a small one
//! that arrived complete with the head (nearly all of a web app's traffic behind
//! nginx), are parsed with `httparse` and answered by writing the head and body
//! straight to the socket, without hyper's connection machinery, which cost more per
//! request than the app's own Python (`bench/results/callgrind-hello.md`).
//!
//! Anything else hands the connection to hyper for the rest of its life, with the
//! bytes read so far put back in front ([`super::rewind::Rewind`]): a chunked,
//! larger or incomplete body, `Expect`, an upgrade, HTTP/1.0, a head over the limits
//! (`rules.rs` says which; hyper's service answers those with gunicorn's 400/431), a head that does
//! not parse.
//! Responses follow hyper's framing rules ([`super::head`]), so a client cannot tell
//! the paths apart; `--hyper-only` turns this path off.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::SideWake;
use super::head::{self, BodyKind, Encoded, ForRequest, Framing};
use super::service::RequestService;
use crate::config::Limits;
use crate::contract::{Reply, ResponseBody};

/// Most header fields a request on this path may have; more goes to hyper.
const MAX_FIELDS: usize = 100;
/// Field names remembered per connection, by position (see [`build`]).
const NAMES_KEPT: usize = 32;
/// Bodies up to this size are copied behind the head and go out in one `write`.
const COPY_BODY_MAX: usize = 8 * 1024;
/// A request body this small that arrived complete with its head stays on this path
/// (a form post, a JSON call); larger or incomplete ones stream through hyper.
const WHOLE_BODY_MAX: u64 = 64 * 1024;

/// Settings of the own path, fixed per worker.
#[derive(Debug, Clone)]
pub struct OwnConfig {
    pub limits: Limits,
    /// A head still incomplete at this size goes to hyper (which answers 431).
    pub head_limit: usize,
    /// `--header-timeout`: from the moment a head is awaited until it is complete.
    pub header_timeout: Duration,
}

/// What the connection task and the own path tell each other.
#[derive(Default)]
pub struct OwnCtl {
    /// Awaiting a request head: nothing in flight, so the connection may be dropped.
    pub waiting: AtomicBool,
    /// Close after the response in flight (idle timer or draining).
    pub close: AtomicBool,
}

/// How the own path ended.
pub enum Ended<S> {
    Closed,
    /// hyper takes over: the stream, what was read and not yet served, the service.
    HandOff(S, Bytes, RequestService),
}

/// A parsed head, by offsets into the read buffer.
struct Parsed {
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    /// The client sent `Connection: close`.
    close: bool,
    /// `Content-Length` (0 without one).
    body: usize,
}

enum Parse {
    Complete(Parsed),
    Partial,
    /// Not for this path: hyper takes it from here.
    Hyper,
}

/// Serves `io` until it closes or a request needs hyper.
pub async fn serve<S>(mut io: S, svc: RequestService, ctl: &OwnCtl, cfg: &OwnConfig) -> Ended<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut fields: Vec<[u32; 4]> = Vec::new();
    let mut names: Vec<(Vec<u8>, HeaderName)> = Vec::new();
    let mut alarm = Alarm::new();
    loop {
        ctl.waiting.store(true, Ordering::Relaxed);
        let mut head_since: Option<Instant> = None;
        let parsed = loop {
            if !buf.is_empty() {
                match parse(&buf, cfg, &mut fields) {
                    Parse::Complete(p) if buf.len() >= p.len + p.body => break p,
                    // The body is still on its way: hyper streams it to the app.
                    Parse::Complete(_) => return Ended::HandOff(io, buf.freeze(), svc),
                    Parse::Partial if buf.len() < cfg.head_limit => {}
                    _ => return Ended::HandOff(io, buf.freeze(), svc),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            let got = read_more(&mut io, &mut buf, &mut alarm, &mut head_since, cfg).await;
            match got {
                Read::Data => {}
                // A partial head at EOF: hyper says what it says to that.
                Read::Eof if !buf.is_empty() => return Ended::HandOff(io, buf.freeze(), svc),
                Read::Eof | Read::Failed | Read::TimedOut => return Ended::Closed,
            }
        };
        ctl.waiting.store(false, Ordering::Relaxed);
        let now = Instant::now();
        let head = buf.split_to(parsed.len).freeze();
        let Some(request) = build(&head, &parsed, &fields, &mut names) else {
            // The request line or a field that httparse let through and `http` does
            // not: hyper gives the error answer.
            let mut all = BytesMut::with_capacity(head.len() + buf.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&buf);
            return Ended::HandOff(io, all.freeze(), svc);
        };
        let body = (parsed.body > 0).then(|| buf.split_to(parsed.body).freeze());
        let head_request = request.0 == Method::HEAD;
        let mut resp = svc.respond(request, body, now).await;
        drop(head);
        if ctl.close.load(Ordering::Relaxed) {
            resp.close();
        }
        let req = ForRequest {
            head: head_request,
            close: parsed.close,
        };
        match write_response(&mut io, resp, req, &mut out).await {
            Ok(false) => {}
            Ok(true) => {
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
            Err(_) => return Ended::Closed,
        }
    }
}

/// Parses the head at the start of `buf` and decides whether this path takes it.
fn parse(buf: &[u8], cfg: &OwnConfig, fields: &mut Vec<[u32; 4]>) -> Parse {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
        [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let max = cfg.limits.request_fields.min(MAX_FIELDS);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots[..max]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Hyper,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parse::Hyper;
    };
    // Origin form only; CONNECT (authority form) and the rest go to hyper.
    if !target.starts_with('/') || method == "CONNECT" {
        return Parse::Hyper;
    }
    let pairs = req.headers.iter().map(|h| (h.name.as_bytes(), h.value));
    if super::rules::check(method, target.len(), req.headers.len(), pairs, &cfg.limits).is_err() {
        // hyper's service checks it again and answers.
        return Parse::Hyper;
    }
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    fields.clear();
    let mut close = false;
    let mut body = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.len() >= 6 {
            let special = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if special("content-length") {
                // One plain length, small enough to take whole; anything else
                // (repeats, lists, signs) is hyper's to judge.
                match (body, head::parse_u64(h.value)) {
                    (None, Some(n)) if n <= WHOLE_BODY_MAX => body = Some(n as usize),
                    _ => return Parse::Hyper,
                }
            }
            if special("transfer-encoding") || special("expect") || special("upgrade") {
                return Parse::Hyper;
            }
            if special("connection") {
                // keep-alive and close only; anything else (upgrade, hop-by-hop
                // names) is hyper's to judge.
                for token in h.value.split(|&c| c == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parse::Hyper;
                    }
                }
            }
        }
        fields.push([
            at(name),
            name.len() as u32,
            at(h.value),
            h.value.len() as u32,
        ]);
    }
    Parse::Complete(Parsed {
        len,
        method: (at(method.as_bytes()) as usize, method.len()),
        target: (at(target.as_bytes()) as usize, target.len()),
        close,
        body: body.unwrap_or(0),
    })
}

/// The `http` types of a parsed head; values share `head`'s memory.
/// `names`: the field names of the connection's last request, by position, as sent
/// and as parsed. A client sends the same fields in the same order on every request,
/// so a name is usually compared, not parsed again (a name `http` does not know,
/// such as `X-RequestTime`, would otherwise be lower-cased into a new allocation).
fn build(
    head: &Bytes,
    p: &Parsed,
    fields: &[[u32; 4]],
    names: &mut Vec<(Vec<u8>, HeaderName)>,
) -> Option<(Method, Uri, Version, HeaderMap)> {
    let method = Method::from_bytes(&head[p.method.0..p.method.0 + p.method.1]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(p.target.0..p.target.0 + p.target.1)).ok()?;
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (i, &[n, nl, v, vl]) in fields.iter().enumerate() {
        let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
        let raw = &head[n..n + nl];
        let name = match names.get(i) {
            Some((seen, name)) if seen.as_slice() == raw => name.clone(),
            _ => {
                let name = HeaderName::from_bytes(raw).ok()?;
                if i < NAMES_KEPT {
                    names.truncate(i);
                    names.push((raw.to_vec(), name.clone()));
                }
                name
            }
        };
        let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl)).ok()?;
        headers.append(name, value);
    }
    Some((method, uri, Version::HTTP_11, headers))
}

enum Read {
    Data,
    Eof,
    Failed,
    TimedOut,
}

/// Reads more of a head, unless `--header-timeout` has passed since it was awaited.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    alarm: &mut Alarm,
    since: &mut Option<Instant>,
    cfg: &OwnConfig,
) -> Read {
    let mut read = std::pin::pin!(io.read_buf(buf));
    poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(match r {
                Ok(0) => Read::Eof,
                Ok(_) => Read::Data,
                Err(_) => Read::Failed,
            });
        }
        // The clock is read only when the head must be waited for.
        let since = *since.get_or_insert_with(Instant::now);
        if alarm.expired(since + cfg.header_timeout, cx.waker()) {
            return Poll::Ready(Read::TimedOut);
        }
        Poll::Pending
    })
    .await
}

/// The header-read timer of one connection. It is polled only when it fired (through
/// its own waker, as in `conn.rs`), and moved only when it would fire late, so a
/// keep-alive request costs a compare, not a timer reset: a timer that fires early is
/// set again to the deadline it found.
struct Alarm {
    sleep: Pin<Box<tokio::time::Sleep>>,
    side: Arc<SideWake>,
    waker: Waker,
}

impl Alarm {
    fn new() -> Alarm {
        let side = Arc::new(SideWake::default());
        Alarm {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
            waker: Waker::from(side.clone()),
            side,
        }
    }

    /// Whether `deadline` has passed; arranges for `task` to be woken when it does.
    fn expired(&mut self, deadline: Instant, task: &Waker) -> bool {
        self.side.task.register(task);
        if !self.side.woken.swap(false, Ordering::AcqRel) {
            return false;
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut cx = Context::from_waker(&self.waker);
        loop {
            if self.sleep.deadline() > deadline {
                self.sleep.as_mut().reset(deadline);
            }
            match self.sleep.as_mut().poll(&mut cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if tokio::time::Instant::now() >= deadline => return true,
                Poll::Ready(()) => self.sleep.as_mut().reset(deadline),
            }
        }
    }
}

/// Writes one response. `Ok(true)`: the connection must close after it.
async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    resp: Reply,
    req: ForRequest,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let Reply {
        status,
        reason,
        headers,
        mut body,
    } = resp;
    let kind = match &body {
        ResponseBody::Empty | ResponseBody::Full(None) => BodyKind::None,
        ResponseBody::Full(Some(b)) => BodyKind::Known(b.len() as u64),
        ResponseBody::Stream(_) => BodyKind::Unknown,
    };
    out.clear();
    let reason = reason.as_ref().map(|r| r.as_bytes());
    let Encoded { framing, last } = head::encode(status, reason, &headers, kind, req, out);
    drop(headers);
    match (&mut body, framing) {
        (_, Framing::Length(0)) => {
            write_all(io, &mut [IoSlice::new(out)]).await?;
            Ok(last)
        }
        (ResponseBody::Full(Some(b)), Framing::Length(n)) => {
            let b = &b[..b.len().min(n as usize)];
            if b.len() <= COPY_BODY_MAX {
                out.extend_from_slice(b);
                write_all(io, &mut [IoSlice::new(out)]).await?;
            } else {
                write_all(io, &mut [IoSlice::new(out), IoSlice::new(b)]).await?;
            }
            Ok(last)
        }
        (ResponseBody::Stream(_), _) => {
            let complete = stream_body(io, &mut body, framing, out).await?;
            Ok(last || !complete)
        }
        // A whole body is never chunked or close-delimited (head.rs).
        _ => {
            write_all(io, &mut [IoSlice::new(out)]).await?;
            Ok(true)
        }
    }
}

/// Chunks of a stream sent in one `writev` at most (when the app is ahead of the
/// client, several are ready at once).
const BATCH_CHUNKS: usize = 16;
const BATCH_BYTES: usize = 256 * 1024;

/// How a batch of a stream's frames ended.
#[derive(PartialEq, Eq)]
enum StreamState {
    /// More may come.
    Open,
    /// The body is complete.
    Ended,
    /// The app failed or gave up: the connection must close.
    Aborted,
}

/// Sends a streamed body after the head in `out`. `Ok(false)`: it ended early (the
/// app failed, or sent less than its Content-Length), and the connection must close
/// so the client sees that.
async fn stream_body<S: AsyncWrite + Unpin>(
    io: &mut S,
    body: &mut ResponseBody,
    framing: Framing,
    out: &[u8],
) -> std::io::Result<bool> {
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let chunked = framing == Framing::Chunked;
    let mut head_pending = true;
    let mut batch: Vec<Bytes> = Vec::new();
    let mut sizes: Vec<u8> = Vec::new();
    loop {
        batch.clear();
        // The head waits for the first chunk when that is ready now, so both go out
        // in one write; later batches wait for their first chunk.
        let mut state = StreamState::Open;
        let mut bytes = 0;
        let mut wait = !head_pending;
        while state == StreamState::Open && batch.len() < BATCH_CHUNKS && bytes < BATCH_BYTES {
            let frame = if wait {
                wait = false;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            } else {
                match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                    Poll::Ready(f) => f,
                    Poll::Pending => break,
                }
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue;
                    };
                    if data.len() as u64 > left {
                        data.truncate(left as usize);
                    }
                    if !data.is_empty() {
                        if let Framing::Length(_) = framing {
                            left -= data.len() as u64;
                        }
                        bytes += data.len();
                        batch.push(data);
                    }
                }
                Some(Err(_)) => state = StreamState::Aborted,
                None => state = StreamState::Ended,
            }
        }
        sizes.clear();
        if chunked {
            for data in &batch {
                sizes.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
            }
        }
        {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + 3 * batch.len());
            if head_pending {
                slices.push(IoSlice::new(out));
            }
            let mut at = 0;
            for data in &batch {
                if chunked {
                    let end = at
                        + sizes[at..]
                            .iter()
                            .position(|&c| c == b'\n')
                            .map_or(0, |i| i + 1);
                    slices.push(IoSlice::new(&sizes[at..end]));
                    at = end;
                }
                slices.push(IoSlice::new(data));
                if chunked {
                    slices.push(IoSlice::new(b"\r\n"));
                }
            }
            if state == StreamState::Ended && chunked {
                slices.push(IoSlice::new(b"0\r\n\r\n"));
            }
            write_all(io, &mut slices).await?;
        }
        head_pending = false;
        match state {
            StreamState::Open => {}
            StreamState::Ended => return Ok(!matches!(framing, Framing::Length(_)) || left == 0),
            StreamState::Aborted => return Ok(false),
        }
    }
}

/// Writes all of `bufs`, in as few system calls as the socket allows.
async fn write_all<S: AsyncWrite + Unpin>(
    io: &mut S,
    mut bufs: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, bufs)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OwnConfig {
        OwnConfig {
            limits: Limits {
                request_line: 4094,
                request_fields: 100,
                request_field_size: 8190,
            },
            head_limit: 64 * 1024,
            header_timeout: Duration::from_secs(10),
        }
    }

    fn decide(head: &[u8]) -> &'static str {
        let mut fields = Vec::new();
        match parse(head, &cfg(), &mut fields) {
            Parse::Complete(p) if p.body > 0 => "own+body",
            Parse::Complete(p) if p.close => "own+close",
            Parse::Complete(_) => "own",
            Parse::Partial => "partial",
            Parse::Hyper => "hyper",
        }
    }

    #[test]
    fn keep_alive_requests_and_small_bodies_stay_on_the_own_path() {
        assert_eq!(decide(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "own");
        assert_eq!(decide(b"\r\nGET /a?b HTTP/1.1\r\n\r\n"), "own");
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"),
            "own"
        );
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"),
            "own+close"
        );
        assert_eq!(
            decide(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
            "own+body"
        );
        assert_eq!(
            decide(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            "own"
        );
        assert_eq!(decide(b"GET / HTTP/1.1\r\nHost: x\r\n"), "partial");
        assert_eq!(decide(b"GET / HTT"), "partial");
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for head in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: keep-alive, te\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(decide(head), "hyper", "{}", String::from_utf8_lossy(head));
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(5000));
        assert_eq!(
            decide(long.as_bytes()),
            "hyper",
            "request line over the limit"
        );
        let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(decide(many.as_bytes()), "hyper", "too many fields");
    }

    #[test]
    fn the_parsed_request_shares_the_read_buffer() {
        let raw = Bytes::from_static(b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        let mut fields = Vec::new();
        let Parse::Complete(p) = parse(&raw, &cfg(), &mut fields) else {
            panic!("not parsed");
        };
        assert_eq!(p.len, raw.len());
        let mut names = Vec::new();
        let (method, uri, version, headers) = build(&raw, &p, &fields, &mut names).unwrap();
        assert_eq!((method, version), (Method::GET, Version::HTTP_11));
        assert_eq!((uri.path(), uri.query()), ("/p", Some("q=1")));
        let xa: Vec<_> = headers
            .get_all("x-a")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(xa, [b"1", b"2"]);
        assert_eq!(headers["host"], "h");
        // The next request on the connection: same names where they repeat, by
        // position, and the new ones parsed.
        let raw = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: g\r\nX-B: 3\r\n\r\n");
        let Parse::Complete(p) = parse(&raw, &cfg(), &mut fields) else {
            panic!("not parsed");
        };
        let (_, _, _, headers) = build(&raw, &p, &fields, &mut names).unwrap();
        let got: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        assert_eq!(got, [("host", &b"g"[..]), ("x-b", b"3")]);
        assert_eq!(names.len(), 2);
    }
}
