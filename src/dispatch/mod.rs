//! Policy between the server and the app: who runs a request (a Python thread, or
//! the IO thread inline with `--threads 1`), when (the dispatch stamp), whether at all
//! (shedding past `--max-queue-time`), for whom (`X-Forwarded-*` from trusted peers),
//! and what is recorded about it (busy slots, the tracker, the access log).
//!
//! The server calls it through one narrow interface: [`Dispatcher::connection`] once
//! per accepted connection, then [`Conn::start`] per request and
//! [`Pending::reply`] for its response. It knows nothing of HTTP framing (that is
//! `server/`) and nothing of PEP 3333 (that is `wsgi/`, which it calls).
//!
//! A hook that runs around every request (gunicorn's `pre_request` /
//! `post_request`) belongs in `request.rs`, next to the shedding decision and the
//! access log, so that both strategies (threads and inline) run it.

pub mod access_log;
mod busy;
pub mod forwarded;
mod inline;
mod request;
mod routes;
mod threads;
mod turn;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::contract::{plain, Connection, Local, Peer, Reply, Request, RequestBody, Transport};
use access_log::AccessLog;
use busy::BusySlots;
pub use routes::RouteTimes;
use threads::Work;

/// What the IO thread, the Python threads and the control thread of one worker share.
pub struct Shared {
    policy: request::Policy,
    access_log: Option<AccessLog>,
    /// One per Python thread, and one for the IO thread when it runs requests inline.
    busy: BusySlots,
    /// Requests finished, for `--max-requests`.
    served: AtomicU64,
    /// Queue-time measurements of this worker, taken by the master each interval.
    pub recorder: crate::tracker::Recorder,
    /// Who runs a request: always a Python thread, or the IO thread when it may.
    strategy: Strategy,
    /// The app, and what every environ of this worker shares.
    app: crate::wsgi::App,
    /// gunicorn's `pre_request` / `post_request` from the config file; `None` (one
    /// branch per request) without them.
    hooks: Option<crate::hooks::in_worker::RequestHooks>,
}

/// How requests reach the app.
enum Strategy {
    /// Every request goes to the Python threads.
    Threads,
    /// `--threads 1` (without `--no-inline`): a quick request without a streamed body
    /// runs on the IO thread while the Python thread is idle (see `inline.rs`).
    Inline(inline::Inline),
}

impl Shared {
    /// Requests finished so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The longest-running request, if any (for `--timeout`).
    pub fn oldest_busy(&self) -> Option<crate::control::Busy> {
        self.busy.oldest()
    }

    /// The longest-running request and its thread's id (`hooks/timeout.rs`).
    pub fn oldest_busy_thread(&self) -> Option<(crate::control::Busy, u64)> {
        self.busy.oldest_thread()
    }

    /// Reopens the access log file (USR1).
    pub fn reopen_access_log(&self) -> std::io::Result<()> {
        match &self.access_log {
            Some(log) => log.reopen(),
            None => Ok(()),
        }
    }
}

/// The dispatch side of one worker: the Python threads and the IO thread's way in.
pub struct Dispatcher {
    shared: Arc<Shared>,
    /// Work for the Python threads; they end when the last sender is dropped.
    jobs: crossbeam_channel::Sender<Work>,
    /// Dropped, not joined: a thread still running a request ends with the process.
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts `--threads` Python threads running `app`. `handle` is the runtime that
    /// drives request bodies (`wsgi.input` waits on it).
    pub fn start(
        config: &Config,
        app: Py<PyAny>,
        handle: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<Dispatcher>> {
        let threads = config.python.threads;
        let access_log = match &config.log.access_log {
            None => None,
            Some(dest) => Some(AccessLog::open(
                dest.as_deref(),
                &config.log.access_log_format,
            )?),
        };
        let strategy = if config.python.inline {
            Strategy::Inline(inline::Inline::new(threads, config.python.inline_max_us))
        } else {
            Strategy::Threads
        };
        let inline_slot = usize::from(matches!(strategy, Strategy::Inline(_)));
        let app = crate::wsgi::App::new(
            app,
            crate::wsgi::Setup {
                multithread: threads > 1,
                multiprocess: config.process.workers > 1,
                script_name: std::env::var("SCRIPT_NAME").unwrap_or_default(),
                handle,
                body_timeout: config.server.body_timeout,
                map_ambiguous_headers: config.server.header_map
                    == crate::config::HeaderMap::Dangerous,
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let shared = Arc::new(Shared {
            policy: request::Policy::new(config),
            access_log,
            busy: BusySlots::new(threads + inline_slot),
            served: AtomicU64::new(0),
            recorder: crate::tracker::Recorder::new(threads),
            strategy,
            app,
            hooks: crate::hooks::in_worker::request_hooks(),
        });
        let (jobs, rx) = crossbeam_channel::unbounded::<Work>();
        let handles = threads::spawn(threads, rx, &shared)?;
        Ok(Arc::new(Dispatcher {
            shared,
            jobs,
            _threads: handles,
        }))
    }

    /// What the control thread reads (served count, busy slots, the recorder).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Counts a connection aborted because its client stopped reading
    /// (`--send-timeout`, found by the server side).
    pub fn client_timeout(&self) {
        self.shared.recorder.record_client_timeout();
    }

    /// The dispatch side of a newly accepted connection: whether its peer may set the
    /// queue stamp and its `X-Forwarded-*` headers is decided here, once.
    pub fn connection(
        self: &Arc<Self>,
        peer: Peer,
        local: Arc<Local>,
        transport: Transport,
    ) -> Conn {
        let conn = Connection::new(peer, local, transport);
        Conn {
            dispatcher: self.clone(),
            state: Arc::new(self.shared.policy.connection(conn)),
        }
    }

    /// Queues work for the Python threads; `false` when the worker is shutting down.
    fn send(&self, work: Work) -> bool {
        let turns = match &self.shared.strategy {
            Strategy::Inline(i) => Some(&i.turns),
            Strategy::Threads => None,
        };
        if let Some(t) = turns {
            t.sent();
        }
        let sent = self.jobs.send(work).is_ok();
        if !sent {
            if let Some(t) = turns {
                t.unsent();
            }
        }
        sent
    }
}

/// One connection's way to the app.
pub struct Conn {
    dispatcher: Arc<Dispatcher>,
    state: Arc<request::ConnState>,
}

/// A request on its way: sent to a Python thread (or already answered inline), or
/// held until the IO thread's turn comes (`turn.rs`).
pub struct Pending {
    how: How,
    reply: oneshot::Receiver<Reply>,
}

enum How {
    /// `false`: it could not be queued (the worker is shutting down).
    Sent(bool),
    Held(Arc<Dispatcher>, Box<request::Job>),
}

impl Conn {
    /// Starts `request`: runs it inline now, sends it to the Python threads, or holds
    /// it for the IO thread's turn. Await [`Pending::reply`] for the response.
    pub fn start(&self, mut request: Request) -> Pending {
        let d = &self.dispatcher;
        let (tx, reply) = oneshot::channel();
        if let Some(refused) = d.shared.policy.refusal(&self.state.conn, &request) {
            let _ = tx.send(refused);
            return Pending {
                how: How::Sent(true),
                reply,
            };
        }
        let inline = match &d.shared.strategy {
            Strategy::Inline(i) => Some(i),
            Strategy::Threads => None,
        };
        // Only the inline decision needs the route (a hash of method and path).
        let route = match inline {
            Some(_) => RouteTimes::route(request.method.as_str(), request.uri.path()),
            None => 0,
        };
        // A whole body cannot make the app wait for the client; a streamed one can.
        let eligible = inline.is_some_and(|i| {
            i.eligible(
                route,
                !matches!(request.body, Some(RequestBody::Streamed(_))),
            )
        });
        let queued = |request, tx| request::Job {
            request,
            conn: self.state.clone(),
            route,
            reply: Some(tx),
        };
        let how = match inline {
            // Run here, the request borrowed where it lies: no copy into a job.
            Some(i) if eligible && i.turns.io_may_run() => How::Sent(inline::run_here(
                d,
                request::JobRef {
                    request: &mut request,
                    conn: &self.state,
                    route,
                    reply: Some(tx),
                },
            )),
            Some(_) if eligible => How::Held(d.clone(), Box::new(queued(request, tx))),
            _ => How::Sent(d.send(Work::Request(queued(request, tx)))),
        };
        Pending { how, reply }
    }
}

impl Pending {
    /// The response: what the app replied, or a server-made error.
    pub async fn reply(self) -> Reply {
        let sent = match self.how {
            How::Sent(sent) => sent,
            How::Held(d, job) => inline::run_in_turn(&d, job).await,
        };
        if !sent {
            return plain(503, "Service Unavailable: shutting down\n", true);
        }
        match self.reply.await {
            Ok(resp) => resp,
            Err(_) => plain(500, "Internal Server Error\n", true),
        }
    }
}
