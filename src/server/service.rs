//! The per-connection request service: checks gunicorn's request limits (hyper's
//! path; the own path checks them while parsing), then runs the request inline
//! (`--threads 1`, no streamed body, Python thread idle) or hands it to the Python
//! threads, and awaits the response. hyper calls it as a `Service`; the own HTTP/1.1
//! path (`own.rs`) through [`RequestService::respond`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};

use super::arrival::Arrival;
use super::conn::AcceptCtx;
use super::handoff::{plain, Job, Local, Peer, PeerText, Reply, RequestBody, ResponseBody};
use super::WorkerShared;
use crate::config::Config;
use crate::wsgi::threads::{run_inline, Inline, Work};

/// One per connection (hyper calls it once per request, in order).
pub struct RequestService {
    jobs: crossbeam_channel::Sender<Work>,
    inline: Option<Arc<Inline>>,
    shared: Arc<WorkerShared>,
    peer: Peer,
    peer_text: Arc<PeerText>,
    local: Arc<Local>,
    /// When this connection's bytes reached the host (TCP only): `server_wait`
    /// starts there, not when the head was parsed.
    arrival: Option<Arrival>,
    config: Arc<Config>,
    /// Whether this connection's peer may set the queue stamp: one check per
    /// connection, not per request.
    trusted: bool,
    /// Whether this connection's `X-Forwarded-*` headers are believed.
    forwarded_allowed: bool,
    /// Requests of this connection not yet answered; the idle watcher reads it.
    in_flight: Arc<AtomicUsize>,
}

impl RequestService {
    pub fn new(ctx: &AcceptCtx, peer: Peer, local: Arc<Local>, arrival: Option<Arrival>) -> Self {
        RequestService {
            jobs: ctx.jobs.clone(),
            inline: ctx.inline.clone(),
            shared: ctx.shared.clone(),
            peer,
            peer_text: Arc::new(PeerText::new(peer)),
            local,
            arrival,
            trusted: match peer {
                Peer::Tcp(addr) => ctx.config.tracker.trusted.contains(addr.ip()),
                Peer::Unix => true,
            },
            forwarded_allowed: match peer {
                Peer::Tcp(addr) => ctx.config.server.forwarded_allow.contains(addr.ip()),
                Peer::Unix => true,
            },
            config: ctx.config.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

/// gunicorn's limit checks, with its status codes: 400 for the request line, 431 for
/// header fields.
fn check_limits(req: &Request<Incoming>, cfg: &Config) -> Option<Reply> {
    let l = cfg.server.limits;
    let uri_len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1)
        + req
            .uri()
            .authority()
            .map(|a| a.as_str().len() + 8)
            .unwrap_or(0);
    let line = req.method().as_str().len() + 1 + uri_len + 9;
    if line > l.request_line {
        return Some(plain(400, "Bad Request: request line is too large\n", true));
    }
    if req.headers().len() > l.request_fields {
        return Some(plain(
            431,
            "Request Header Fields Too Large: too many header fields\n",
            true,
        ));
    }
    for (name, value) in req.headers() {
        if name.as_str().len() + 2 + value.len() > l.request_field_size {
            return Some(plain(
                431,
                "Request Header Fields Too Large: a header field is too large\n",
                true,
            ));
        }
    }
    None
}

/// Counts a request in flight until dropped: the connection's counter, owned (hyper's
/// `'static` futures) or borrowed (the own path).
struct InFlight<T: std::ops::Deref<Target = AtomicUsize>>(T);

impl<T: std::ops::Deref<Target = AtomicUsize>> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a job was started: sent on its way (`false`: could not be queued), or held
/// until the IO thread's turn comes (see `turn.rs`).
enum Start {
    Sent(bool),
    Held(Arc<Inline>, Box<Job>),
}

impl RequestService {
    /// The job for a parsed request, and where its response will come from.
    fn job(
        &self,
        parts: (Method, Uri, Version, HeaderMap),
        body: Option<RequestBody>,
        now: Instant,
    ) -> (Job, ReplyRx) {
        let (method, uri, version, headers) = parts;
        let (arrived_at, wall) = self
            .arrival
            .as_ref()
            .map_or((now, None), |a| a.instant(now));
        // Only the inline decision needs the route (a hash of method and path).
        let route = match self.inline {
            Some(_) => super::RouteTimes::route(method.as_str(), uri.path()),
            None => 0,
        };
        let (reply, response) = tokio::sync::oneshot::channel();
        let job = Job {
            method,
            uri,
            version,
            headers,
            peer: self.peer,
            peer_text: self.peer_text.clone(),
            local: self.local.clone(),
            body,
            arrived_at,
            arrived_wall: wall,
            trusted: self.trusted,
            forwarded_allowed: self.forwarded_allowed,
            route,
            reply: Some(reply),
        };
        (job, response)
    }

    /// Runs the job inline, or sends it to the Python threads, or holds it.
    fn start(&self, job: Job) -> Start {
        // A whole body cannot make the app wait for the client; a streamed one can.
        let eligible = self.inline.is_some()
            && !matches!(job.body, Some(RequestBody::Streamed(_)))
            && self.shared.routes.quick(job.route)
            && !self.shared.write_seen.load(Ordering::Relaxed);
        match (&self.inline, eligible) {
            (Some(inline), true) if self.shared.turns.io_may_run() => {
                Start::Sent(run_here(inline, job, &self.shared, &self.jobs))
            }
            (Some(inline), true) => Start::Held(inline.clone(), Box::new(job)),
            _ => Start::Sent(send(&self.shared, &self.jobs, Work::Request(job))),
        }
    }

    /// The own HTTP/1.1 path's way in (`own.rs`): a request whose head was parsed and
    /// checked against the limits there, with its whole body if it has one.
    pub async fn respond(
        &self,
        parts: (Method, Uri, Version, HeaderMap),
        body: Option<Bytes>,
        now: Instant,
    ) -> Reply {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _guard = InFlight(&*self.in_flight);
        let (job, response) = self.job(parts, body.map(RequestBody::Whole), now);
        let sent = match self.start(job) {
            Start::Sent(sent) => sent,
            Start::Held(inline, job) => run_in_turn(&inline, *job, &self.shared, &self.jobs).await,
        };
        answer(sent, response).await
    }
}

type ReplyRx = tokio::sync::oneshot::Receiver<Reply>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let now = Instant::now();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.in_flight.clone());
        if let Some(resp) = check_limits(&req, &self.config) {
            return Box::pin(async move {
                drop(guard);
                Ok(resp.into_response())
            });
        }
        let (parts, body) = req.into_parts();
        let body = (!body.is_end_stream()).then_some(RequestBody::Streamed(body));
        let (job, response) = self.job(
            (parts.method, parts.uri, parts.version, parts.headers),
            body,
            now,
        );
        match self.start(job) {
            Start::Sent(sent) => Box::pin(async move {
                let _guard = guard;
                Ok(answer(sent, response).await.into_response())
            }),
            Start::Held(inline, job) => {
                let (shared, jobs) = (self.shared.clone(), self.jobs.clone());
                Box::pin(async move {
                    let _guard = guard;
                    let sent = run_in_turn(&inline, *job, &shared, &jobs).await;
                    Ok(answer(sent, response).await.into_response())
                })
            }
        }
    }
}

/// [`run_here`] once the IO thread's turn comes: the Python thread is busy, and a
/// quick request waits here rather than queue behind it (see `turn.rs`).
async fn run_in_turn(
    inline: &Inline,
    job: Job,
    shared: &WorkerShared,
    jobs: &crossbeam_channel::Sender<Work>,
) -> bool {
    let held = shared.turns.hold();
    held.ready().await;
    run_here(inline, job, shared, jobs)
}

/// Runs `job` on this (IO) thread; what must wait on the client goes on to the Python
/// thread. `false` when that could not be queued (shutting down).
fn run_here(
    inline: &Inline,
    job: Job,
    shared: &WorkerShared,
    jobs: &crossbeam_channel::Sender<Work>,
) -> bool {
    match run_inline(inline, job, shared) {
        None => true,
        Some(resume) => send(shared, jobs, Work::Resume(resume)),
    }
}

/// Queues work for the Python thread; `false` when the worker is shutting down.
fn send(shared: &WorkerShared, jobs: &crossbeam_channel::Sender<Work>, work: Work) -> bool {
    shared.turns.sent();
    let sent = jobs.send(work).is_ok();
    if !sent {
        shared.turns.unsent();
    }
    sent
}

/// The response: what the Python side replied, or a server-made error. It goes to
/// hyper (to be written) only after the other connections that are ready now have had
/// their turn; see [`WriteTogether`].
async fn answer(sent: bool, response: ReplyRx) -> Reply {
    if !sent {
        return plain(503, "Service Unavailable: shutting down\n", true);
    }
    let resp = match response.await {
        Ok(resp) => resp,
        Err(_) => plain(500, "Internal Server Error\n", true),
    };
    WriteTogether(false).await;
    resp
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
