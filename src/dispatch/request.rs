//! One request through the worker's policy, whichever thread runs it: the dispatch
//! stamp (`server_wait`, `queue_time`), shedding past `--max-queue-time`, trusted
//! `X-Forwarded-*`, the app call (`wsgi/`), and what is recorded afterwards (the
//! tracker, the access log, the served count).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use tokio::sync::oneshot;

use super::access_log::{AccessLog, RequestLine};
use super::forwarded;
use super::Shared;
use crate::config::{Config, TrackerConfig};
use crate::contract::{plain, Connection, Reply, Request};
use crate::tracker::{classify_at, last_value, Stamp, TrustedPeers};
use crate::wsgi::{Call, Handled, Mode, Outcome, RequestFacts, Suspended};

/// The settings the policy applies, taken from the config once per worker.
pub struct Policy {
    tracker: TrackerConfig,
    forwarded_allow: TrustedPeers,
    /// `--remote-addr-from-forwarded`: REMOTE_ADDR from X-Forwarded-For (gunicorn keeps
    /// the peer's address there, so this is opt-in).
    remote_addr_from_forwarded: bool,
    /// `--set-request-start`.
    set_request_start: bool,
    /// `--header-map refuse`: a header name with `_` gets the request a 400.
    refuse_ambiguous_headers: bool,
}

impl Policy {
    pub fn new(config: &Config) -> Policy {
        Policy {
            tracker: config.tracker.clone(),
            forwarded_allow: config.server.forwarded_allow.clone(),
            remote_addr_from_forwarded: config.server.remote_addr_from_forwarded,
            set_request_start: config.lifecycle.set_request_start,
            refuse_ambiguous_headers: config.server.header_map == crate::config::HeaderMap::Refuse,
        }
    }

    /// gunicorn's `--header-map refuse`: a request carrying a header whose name maps
    /// ambiguously into the environ (`X_Foo` would pose as `X-Foo`) is answered 400
    /// and never reaches the app, with the WARNING line of every refused request. In
    /// the other modes (drop, dangerous) `wsgi/environ.rs` applies the rule; this is
    /// one branch per request.
    pub fn refusal(&self, conn: &Connection, request: &Request) -> Option<Reply> {
        if !self.refuse_ambiguous_headers {
            return None;
        }
        let name = request
            .headers
            .keys()
            .find(|n| crate::wsgi::environ::ambiguous_header_name(n.as_str()))?;
        crate::throttle::refused_request(
            &conn.peer,
            &format_args!("header name {name} contains '_' (--header-map refuse)"),
        );
        Some(plain(
            400,
            "Bad Request: a header name contains '_' (--header-map refuse)\n",
            true,
        ))
    }

    /// `HTTP_X_REQUEST_START` for APM agents, in µs since the epoch: when the request
    /// started waiting as far as rwsgi knows (the trusted proxy stamp, else the
    /// kernel's arrival time). `None` without `--set-request-start` or when the
    /// request brought its own `X-Request-Start` (the app sees that one).
    fn request_start_us(
        &self,
        request: &Request,
        dispatch_wall: Option<Duration>,
        waited: Duration,
    ) -> Option<u64> {
        if !self.set_request_start || request.headers.contains_key("x-request-start") {
            return None;
        }
        let start = dispatch_wall?.checked_sub(waited)?;
        u64::try_from(start.as_micros()).ok()
    }

    /// What the policy decides once per connection.
    pub fn connection(&self, conn: Connection) -> ConnState {
        let (trusted, forwarded_allowed) = match conn.peer {
            crate::contract::Peer::Tcp(addr) => (
                self.tracker.trusted.contains(addr.ip()),
                self.forwarded_allow.contains(addr.ip()),
            ),
            crate::contract::Peer::Unix => (true, true),
        };
        ConnState {
            conn,
            trusted,
            forwarded_allowed,
            environ: crate::wsgi::ConnEnviron::default(),
        }
    }
}

/// What every request of one connection shares on the dispatch side.
pub struct ConnState {
    pub conn: Connection,
    /// Whether the peer may set the queue stamp (`--queue-header-trusted-from`).
    trusted: bool,
    /// Whether the peer's `X-Forwarded-*` headers are believed (`--forwarded-allow-ips`).
    forwarded_allowed: bool,
    /// The connection's environ template, made by its first request.
    environ: crate::wsgi::ConnEnviron,
}

/// A request waiting for a thread to run it.
pub struct Job {
    pub request: Request,
    pub conn: Arc<ConnState>,
    /// The request's slot in [`super::RouteTimes`] (inline only; else 0).
    pub route: usize,
    /// Where the response goes. Taken (`None`) once a responder owns it.
    pub reply: Option<oneshot::Sender<Reply>>,
}

/// A request being run, borrowed from wherever it waits (the IO thread's stack, or a
/// queued [`Job`]): a request is a few hundred bytes, and each move between the
/// layers would copy it.
pub struct JobRef<'a> {
    pub request: &'a mut Request,
    pub conn: &'a Arc<ConnState>,
    pub route: usize,
    pub reply: Option<oneshot::Sender<Reply>>,
}

impl Job {
    /// The job to run; its reply sender moves into the [`JobRef`].
    pub fn running(&mut self) -> JobRef<'_> {
        JobRef {
            request: &mut self.request,
            conn: &self.conn,
            route: self.route,
            reply: self.reply.take(),
        }
    }
}

/// The rest of a request begun on the IO thread, for a Python thread to finish.
pub struct Resume {
    pub suspended: Suspended,
    pub tail: Tail,
    pub method: http::Method,
    /// The request's URI (a shared buffer, not a copy), for the busy slot's path.
    pub uri: http::Uri,
    conn: Arc<ConnState>,
}

/// What is needed once a response is done: timing and the access-log line.
pub struct Tail {
    pub dispatched: Instant,
    /// A client named by a trusted `X-Forwarded-For`; else the peer's.
    remote_addr: Option<String>,
    line: Option<(RequestLine, http::HeaderMap)>,
    /// gunicorn's `req` object, for `post_request` (config file hooks only).
    hook_req: Option<Py<PyAny>>,
}

/// Runs `job` from its dispatch (`dispatched`, a clock reading the caller has): the
/// stamp is classified, the request shed or handed to the app, and, when the app is
/// done with it, recorded. Returns what a Python thread must finish (inline only),
/// and how long this part took from `dispatched`.
pub fn run(
    py: Python<'_>,
    shared: &Shared,
    job: JobRef<'_>,
    mode: Mode,
    dispatched: Instant,
) -> (Option<Box<Resume>>, Duration) {
    let JobRef {
        request,
        conn,
        reply,
        ..
    } = job;
    let server_wait = dispatched.saturating_duration_since(request.arrived_at);
    let policy = &shared.policy;
    // The wall clock at dispatch: the arrival's, carried forward by the monotonic
    // server_wait, when the kernel stamped the arrival.
    let dispatch_wall = match request.arrived_wall {
        Some(arrived) => arrived.checked_add(server_wait),
        None => SystemTime::now().duration_since(UNIX_EPOCH).ok(),
    };
    let stamp = match &policy.tracker.queue_header {
        None => Stamp::Missing,
        // The last one: a proxy that appends its stamp (rather than replacing it) puts
        // it after any the client sent, and the client's must not be the one believed.
        Some(name) => classify_at(
            last_value(&request.headers, name).map(|v| v.as_bytes()),
            conn.trusted,
            dispatch_wall,
            policy.tracker.max_age,
        ),
    };
    let mut fwd = forwarded::resolve_for(
        &request.headers,
        conn.forwarded_allowed,
        &policy.forwarded_allow,
        conn.conn.scheme(),
    );
    // REMOTE_ADDR stays the peer's, as in gunicorn, unless the user opted in.
    if !policy.remote_addr_from_forwarded {
        fwd.remote_addr = None;
    }
    let line = shared.access_log.as_ref().map(|_| {
        (
            RequestLine {
                method: request.method.clone(),
                uri: request.uri.clone(),
                version: request.version,
            },
            request.headers.clone(),
        )
    });
    // The request waited at least its server_wait (monotonic, certain), whatever a
    // skewed proxy clock says: a `future` stamp (queue_time 0) must not exempt it.
    let waited = stamp
        .queue_time()
        .map_or(server_wait, |queue_time| queue_time.max(server_wait));
    let request_start_us = policy.request_start_us(request, dispatch_wall, waited);
    let max_queue_time = policy.tracker.max_queue_time;
    let shedding = max_queue_time.is_some_and(|max| waited > max);
    // gunicorn's `req`, only when the config file has pre_request/post_request, for
    // requests that reach the app (a shed one never does).
    let hook_req = shared.hooks.filter(|_| !shedding).and_then(|h| {
        h.request_object(py, request, &conn.conn)
            .map_err(|e| tracing::error!("pre_request: cannot build req: {e}"))
            .ok()
    });
    let refused = match (shared.hooks, &hook_req) {
        (Some(h), Some(req)) => h.pre_request(py, req).err(),
        _ => None,
    };
    let (handled, ended) = if shedding {
        shared.recorder.record_shed(server_wait, &stamp);
        let shed = shed(reply, max_queue_time.unwrap_or_default());
        let ended = Instant::now();
        (
            Handled::Done(shed),
            (ended.saturating_duration_since(dispatched), ended),
        )
    } else if let Some(error) = refused {
        // As in gunicorn: a pre_request hook that raises fails the request with a 500.
        tracing::error!(target: crate::logging::EXCEPTION, "{error}");
        shared
            .recorder
            .record_dispatch_at(&stamp, server_wait, dispatched);
        let failed = internal_error(reply);
        let ended = Instant::now();
        let took = ended.saturating_duration_since(dispatched);
        shared.recorder.record_finish_at(took, 500, ended);
        (Handled::Done(failed), (took, ended))
    } else {
        shared
            .recorder
            .record_dispatch_at(&stamp, server_wait, dispatched);
        let call = Call {
            request: &mut *request,
            reply,
            conn: &conn.conn,
            environ: &conn.environ,
            facts: RequestFacts {
                remote_addr: fwd.remote_addr.as_deref(),
                url_scheme: fwd.scheme,
                queue_time: stamp.queue_time().map(|d| d.as_secs_f64()),
                server_wait: server_wait.as_secs_f64(),
                request_start_us,
            },
            log: {
                let mut needs = shared
                    .access_log
                    .as_ref()
                    .map(AccessLog::needs)
                    .unwrap_or_default();
                if shared.hooks.is_some_and(|h| h.wants_post()) {
                    needs.keep_headers = true;
                    needs.keep_environ = true;
                }
                needs
            },
            mode,
        };
        let handled = shared.app.call(py, call);
        let ended = Instant::now();
        let took = ended.saturating_duration_since(dispatched);
        if let Handled::Done(outcome) = &handled {
            record(shared, outcome, took, ended);
        }
        (handled, (took, ended))
    };
    let (took, _) = ended;
    let tail = Tail {
        dispatched,
        remote_addr: fwd.remote_addr,
        line,
        hook_req,
    };
    match handled {
        Handled::Done(outcome) => {
            finish(py, shared, tail, conn, outcome, took);
            (None, took)
        }
        Handled::Suspended(suspended) => {
            let resume = Resume {
                suspended,
                tail,
                method: request.method.clone(),
                uri: request.uri.clone(),
                conn: conn.clone(),
            };
            (Some(Box::new(resume)), took)
        }
    }
}

/// Finishes, on a Python thread, a response begun on the IO thread.
pub fn resume(py: Python<'_>, shared: &Shared, r: Resume) {
    let Resume {
        suspended,
        tail,
        conn,
        ..
    } = r;
    let outcome = crate::wsgi::resume(py, suspended);
    let ended = Instant::now();
    let took = ended.saturating_duration_since(tail.dispatched);
    record(shared, &outcome, took, ended);
    finish(py, shared, tail, &conn, outcome, took);
}

/// The tracker's side of a finished request (`took`: since its dispatch; `ended`: now).
fn record(shared: &Shared, outcome: &crate::wsgi::Outcome, took: Duration, ended: Instant) {
    shared
        .recorder
        .record_finish_at(took, outcome.status, ended);
    if outcome.client_timeout {
        shared.recorder.record_client_timeout();
    }
}

/// The end of every request (`elapsed`: from its dispatch to when its response was
/// done): the access-log line and the served count.
fn finish(
    py: Python<'_>,
    shared: &Shared,
    tail: Tail,
    conn: &ConnState,
    outcome: Outcome,
    elapsed: Duration,
) {
    if let (Some(log), Some((line, headers))) = (&shared.access_log, tail.line) {
        let remote = tail.remote_addr.as_deref().unwrap_or(&conn.conn.addr);
        py.detach(|| log.write(&line, &headers, remote, &outcome, elapsed));
    }
    if let (Some(hooks), Some(req)) = (shared.hooks, &tail.hook_req) {
        hooks.post_request(py, req, outcome.environ_dict.as_deref(), &outcome);
    }
    shared.served.fetch_add(1, Ordering::Relaxed);
}

/// Answers 500 without calling the app (its `pre_request` hook raised).
fn internal_error(reply: Option<oneshot::Sender<Reply>>) -> Outcome {
    const BODY: &str = "Internal Server Error\n";
    if let Some(reply) = reply {
        let _ = reply.send(plain(500, BODY, false));
    }
    Outcome {
        status: 500,
        sent: BODY.len() as u64,
        received: 0,
        headers: Vec::new(),
        environ: Vec::new(),
        environ_dict: None,
        client_timeout: false,
    }
}

/// Answers 503 without calling the app: the request already waited longer than
/// `--max-queue-time`, so serving it late only makes the queue longer.
fn shed(reply: Option<oneshot::Sender<Reply>>, max: Duration) -> Outcome {
    const BODY: &str = "Service Unavailable: queue time too long\n";
    let mut resp = plain(503, BODY, false);
    let retry = max.as_secs().max(1).to_string();
    if let Ok(v) = http::HeaderValue::from_str(&retry) {
        resp.headers.push((http::header::RETRY_AFTER, v));
    }
    if let Some(reply) = reply {
        let _ = reply.send(resp);
    }
    Outcome {
        status: 503,
        sent: BODY.len() as u64,
        received: 0,
        headers: Vec::new(),
        environ: Vec::new(),
        client_timeout: false,
        environ_dict: None,
    }
}
