//! One client connection's life: connect, send the due requests, count the outcomes.
//!
//! Connections are driven by hand with `hyper::client::conn::http1::handshake`, not by
//! the pooled client: no pool lookups, no extra task per connection. The connection
//! future is polled in the same task as the request (a `select!`), so a response costs
//! no cross-task wake-up.

use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::CONNECTION;
use hyper::{Request, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::lane::{Lane, Slot};
use super::stats::ErrorKind;

/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// A complete answer.
struct Answer {
    status: u16,
    body_bytes: u64,
    /// The server said it will close the connection after this answer.
    close: bool,
}

/// Runs one connection (reconnecting as needed) until its lane has no more slots.
pub async fn run(lane: Rc<Lane>) {
    // A slot taken but not yet sent because the connection went away while waiting.
    let mut pending: Option<Slot> = None;
    while let Some(first) = pending.take().or_else(|| lane.next_slot()) {
        let (mut sender, conn) = match connect(&lane).await {
            Ok(c) => c,
            Err(kind) => {
                lane.record_error(kind);
                tokio::time::sleep(CONNECT_BACKOFF).await;
                continue;
            }
        };
        let mut conn = pin!(conn);
        // One timer per connection, pushed forward for each request: tokio extends a
        // registered timer without touching its wheel, where a fresh `timeout` per
        // request would insert and remove an entry every time.
        let mut timer = pin!(tokio::time::sleep(lane.timeout));
        let mut next = Some(first);
        loop {
            let Some(slot) = next.take().or_else(|| lane.next_slot()) else {
                lane.connection_done();
                return;
            };
            let sent = if slot.now {
                slot.due
            } else if slot.due > Instant::now() {
                // Keep polling the connection while idle: a server that closes idle
                // keep-alive connections is noticed here, before a request is lost.
                let closed = tokio::select! {
                    biased;
                    _ = &mut conn => true,
                    _ = tokio::time::sleep_until(slot.due.into()) => false,
                };
                if closed {
                    pending = Some(slot);
                    break;
                }
                Instant::now()
            } else {
                Instant::now()
            };
            let req = lane.build(slot, sent);
            timer.as_mut().reset((sent + lane.timeout).into());
            let mut exchange = pin!(exchange(&mut sender, req));
            let mut conn_done = false;
            let outcome = tokio::select! {
                biased;
                r = &mut exchange => r,
                _ = &mut conn => {
                    // The connection ended; what it already delivered is still in the
                    // body channel, so finish reading that before judging.
                    conn_done = true;
                    tokio::select! {
                        biased;
                        r = &mut exchange => r,
                        _ = &mut timer => Err(ErrorKind::Timeout),
                    }
                }
                _ = &mut timer => Err(ErrorKind::Timeout),
            };
            let keep = match outcome {
                Ok(answer) => {
                    if (200..300).contains(&answer.status) {
                        lane.record_ok(slot, sent, answer.body_bytes);
                    } else {
                        lane.record_error(status_kind(answer.status));
                    }
                    !answer.close
                }
                Err(kind) => {
                    lane.record_error(kind);
                    false
                }
            };
            if !keep || conn_done || !lane.keep_alive {
                break;
            }
        }
    }
    lane.connection_done();
}

type Conn = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

async fn connect(lane: &Lane) -> Result<(SendRequest<Full<Bytes>>, Conn), ErrorKind> {
    let addr = lane.target_addr;
    let stream = tokio::time::timeout(lane.timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ErrorKind::Connect)?
        .map_err(|_| ErrorKind::Connect)?;
    // Small requests must leave at once, as wrk's do.
    let _ = stream.set_nodelay(true);
    http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ErrorKind::Connect)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Answer, ErrorKind> {
    sender.ready().await.map_err(|e| classify(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| classify(&e))?;
    let status = resp.status().as_u16();
    let close = wants_close(resp.version(), resp.headers());
    let mut body = resp.into_body();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match classify(&e) {
            ErrorKind::Closed => ErrorKind::Closed,
            _ => ErrorKind::Body,
        })?;
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    Ok(Answer {
        status,
        body_bytes,
        close,
    })
}

/// Whether the server announced that it closes the connection after this response.
fn wants_close(version: Version, headers: &hyper::HeaderMap) -> bool {
    let says = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if version == Version::HTTP_10 {
        !says("keep-alive")
    } else {
        says("close")
    }
}

fn status_kind(status: u16) -> ErrorKind {
    match status {
        400..=499 => ErrorKind::Status4xx,
        500..=599 => ErrorKind::Status5xx,
        _ => ErrorKind::StatusOther,
    }
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_parse() || e.is_parse_status() {
        ErrorKind::Parse
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorKind::Closed
    } else {
        ErrorKind::Io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn reads_connection_close() {
        let mut h = hyper::HeaderMap::new();
        assert!(!wants_close(Version::HTTP_11, &h));
        assert!(wants_close(Version::HTTP_10, &h));
        h.insert(CONNECTION, HeaderValue::from_static("Keep-Alive"));
        assert!(!wants_close(Version::HTTP_10, &h));
        h.insert(CONNECTION, HeaderValue::from_static("upgrade, Close"));
        assert!(wants_close(Version::HTTP_11, &h));
    }

    #[test]
    fn sorts_statuses() {
        assert_eq!(status_kind(404), ErrorKind::Status4xx);
        assert_eq!(status_kind(503), ErrorKind::Status5xx);
        assert_eq!(status_kind(302), ErrorKind::StatusOther);
    }
}
