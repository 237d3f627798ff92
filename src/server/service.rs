//! The per-connection request service: checks a head against [`super::rules`]
//! (hyper's path; the own path checks while parsing), hands the request to dispatch,
//! and awaits the reply. hyper calls it as a `Service`; the own HTTP/1.1 path
//! (`own.rs`) through [`RequestService::respond`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use tokio::sync::watch;

use super::arrival::Arrival;
use super::guard::Cut;
use super::{rules, Stop};
use crate::config::Limits;
use crate::contract::{self, Peer, Reply, RequestBody, ResponseBody};
use crate::dispatch::Conn;

/// One per connection (hyper calls it once per request, in order).
pub struct RequestService {
    conn: Conn,
    /// When this connection's bytes reached the host (TCP only): `server_wait`
    /// starts there, not when the head was parsed.
    arrival: Option<Arrival>,
    limits: Limits,
    stop: watch::Receiver<Stop>,
    /// Who is on the other end, for the log line of a refused request.
    peer: Peer,
    /// Requests of this connection not yet answered; the idle watcher reads it.
    in_flight: Arc<AtomicUsize>,
    /// The head hyper's read guard cut short, if any (`guard.rs`).
    cut: Arc<Cut>,
}

impl RequestService {
    pub fn new(
        conn: Conn,
        arrival: Option<Arrival>,
        limits: Limits,
        stop: watch::Receiver<Stop>,
        peer: Peer,
    ) -> Self {
        RequestService {
            conn,
            arrival,
            limits,
            stop,
            peer,
            in_flight: Arc::new(AtomicUsize::new(0)),
            cut: Arc::default(),
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Shared with the guard under hyper (`guard.rs`).
    pub fn cut(&self) -> Arc<Cut> {
        self.cut.clone()
    }

    /// The request for dispatch, with its arrival.
    fn request(
        &self,
        parts: (Method, Uri, Version, HeaderMap),
        body: Option<RequestBody>,
        now: Instant,
    ) -> contract::Request {
        let (method, uri, version, headers) = parts;
        let (arrived_at, arrived_wall) = self
            .arrival
            .as_ref()
            .map_or((now, None), |a| a.instant(now));
        contract::Request {
            method,
            uri,
            version,
            headers,
            body,
            arrived_at,
            arrived_wall,
        }
    }

    /// The own HTTP/1.1 path's way in (`own.rs`): a request whose head was parsed and
    /// checked against the rules there, with its whole body if it has one.
    ///
    /// The request is started when this is called, not when the future is first
    /// polled: the future then holds the small pending reply, not the request's parts.
    pub fn respond(
        &self,
        parts: (Method, Uri, Version, HeaderMap),
        body: Option<Bytes>,
        now: Instant,
    ) -> impl Future<Output = Reply> + '_ {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(&*self.in_flight);
        let pending = self
            .conn
            .start(self.request(parts, body.map(RequestBody::Whole), now));
        async move {
            let _guard = guard;
            let reply = pending.reply().await;
            WriteTogether(false).await;
            close_if_draining(reply, &self.stop)
        }
    }
}

/// Counts a request in flight until dropped: the connection's counter, owned (hyper's
/// `'static` futures) or borrowed (the own path).
struct InFlight<T: std::ops::Deref<Target = AtomicUsize>>(T);

impl<T: std::ops::Deref<Target = AtomicUsize>> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let now = Instant::now();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.in_flight.clone());
        let stop = self.stop.clone();
        let fields = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        // A head the guard cut short ends in bytes the client never sent.
        let checked = match self.cut.take_next() {
            Some(refusal) => Err(refusal),
            None => rules::check(
                req.method().as_str(),
                rules::target_len(req.uri()),
                req.version() == Version::HTTP_11,
                req.headers().len(),
                fields,
                &self.limits,
            ),
        };
        if let Err(refusal) = checked {
            rules::warn(&self.peer, &refusal.reason());
            return Box::pin(async move {
                drop(guard);
                Ok(close_if_draining(refusal.reply(), &stop).into_response())
            });
        }
        let (parts, body) = req.into_parts();
        let body = (!body.is_end_stream()).then_some(RequestBody::Streamed(body));
        let request = self.request(
            (parts.method, parts.uri, parts.version, parts.headers),
            body,
            now,
        );
        let pending = self.conn.start(request);
        Box::pin(async move {
            let _guard = guard;
            let reply = pending.reply().await;
            WriteTogether(false).await;
            Ok(close_if_draining(reply, &stop).into_response())
        })
    }
}

/// A draining worker answers every response with `Connection: close`, so that the
/// client reconnects to another worker (both paths; `conn.rs` says when the
/// connection itself closes).
fn close_if_draining(mut reply: Reply, stop: &watch::Receiver<Stop>) -> Reply {
    if *stop.borrow() != Stop::Running {
        reply.close();
    }
    reply
}

/// Yields once, to the back of the worker's run queue. The connections that became
/// ready together then run their requests first and write their responses back to
/// back, as bjoern's event loop does. Each write that finds the peer (nginx, a load
/// generator) asleep costs a wake-up, an inter-processor interrupt that a virtual
/// machine pays dearly for: `sock_def_readable` took a fifth of a worker's time under
/// Flask when every response went out on its own. Responses that arrive together
/// share one wake-up. (`tokio::task::yield_now` would poll the IO driver first: one
/// more system call per round.)
struct WriteTogether(bool);

impl Future for WriteTogether {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
