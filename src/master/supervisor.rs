//! The master's event loop: keeps `--workers` workers alive, hands them the sockets,
//! handles signals (TERM, INT, QUIT, HUP, TTIN, TTOU, USR1), enforces `--timeout`,
//! recycles workers, and limits respawn storms.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::exit;
use super::health::Health;
use super::spawn;
use super::zygote::Zygote;
use crate::config::Config;
use crate::control::{self, ToMaster, ToWorker};
use crate::error::Fatal;
use crate::hooks::in_master as hooks;
use crate::server::listener::{self, Listener};
use crate::server::Stop;

/// How many early deaths within [`STORM_WINDOW`] make a respawn storm.
const STORM_DEATHS: usize = 5;
const STORM_WINDOW: Duration = Duration::from_secs(10);
const STORM_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A worker that dies sooner than this after starting counts towards a storm.
const EARLY_DEATH: Duration = Duration::from_secs(2);

mod autoscale;
mod lifecycle;
mod preload;
mod reload;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Importing the app; no sockets yet.
    Booting,
    /// Has the sockets and serves.
    Ready,
    /// Sent TERM; finishing in-flight requests.
    Draining(Instant),
}

struct Slot {
    process: spawn::Process,
    pid: Pid,
    state: State,
    started: Instant,
    last_beat: Instant,
    oldest: Option<control::Busy>,
    /// To be replaced (HUP, --max-requests, TTOU) once enough fresh workers are ready.
    retiring: bool,
    /// Raw fd of the master's end, for SCM_RIGHTS.
    control_fd: RawFd,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

enum Event {
    Msg(u32, ToMaster),
    Closed(u32),
    /// `--preload`: import number `n` (after HUP, or its process died) ended.
    Preloaded(u64, std::io::Result<()>),
}

/// The master's signal streams.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    ttin: tokio::signal::unix::Signal,
    ttou: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    chld: tokio::signal::unix::Signal,
}

impl Signals {
    /// The handlers, then the signals that came while they did not exist yet
    /// (`early_signals`), which they now receive.
    fn install() -> std::io::Result<Signals> {
        let signals = Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
            usr1: signal(SignalKind::user_defined1())?,
            chld: signal(SignalKind::child())?,
        };
        super::early_signals::replay();
        Ok(signals)
    }
}

/// The notifier side of the master, driven by the supervisor's loop.
pub trait Collector {
    /// An interval snapshot (or a final one) from a worker.
    fn snapshot(&mut self, worker: u32, seq: u64, data: Vec<u8>);
    /// QUEUE_TIME_TRACKER_* settings found by the first worker that booted.
    fn django_settings(&mut self, _settings: &BTreeMap<String, String>) {}
    /// Called every 100 ms; `collect(seq)` asks every serving worker for its snapshot
    /// and returns how many were asked. `serving` is the live worker count.
    fn tick(&mut self, collect: &mut dyn FnMut(u64) -> usize, serving: usize);
}

/// How long, after the first worker of the first generation serves, the workers that
/// still import the app are left their share of a burst (`server/balance.rs`): one
/// that is that much slower is probably stuck, and the serving ones take everything.
const BOOT_TOGETHER: Duration = Duration::from_secs(5);

/// `--preload`: how long a forked worker may take to say Ready before the next one is
/// forked anyway (a fork and the worker's set-up take a few ms; a slow `post_fork`
/// hook must not hold the rest back).
const FORK_SPACING: Duration = Duration::from_secs(1);

pub struct Supervisor {
    config: Arc<Config>,
    target: usize,
    listeners: Option<Vec<Listener>>,
    workers: BTreeMap<u32, Slot>,
    next_id: u32,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    shutdown: Option<(Stop, Instant)>,
    ever_ready: bool,
    early_deaths: VecDeque<Instant>,
    backoff: Duration,
    next_spawn: Instant,
    settings_seen: bool,
    /// The first ready worker's Django settings, until [`Supervisor::boot`] takes them.
    django: Option<BTreeMap<String, String>>,
    /// [`Supervisor::boot`]: leave the loop once a worker is ready.
    stop_at_ready: bool,
    /// Workers that imported the app during [`Supervisor::boot`] and wait for their
    /// sockets: the master binds only after the notifier started (so that
    /// `--metrics-bind` listens before the app port accepts anything).
    awaiting: Vec<u32>,
    /// When the first worker of the boot said ready: the serving workers leave the
    /// ones still importing their share until [`BOOT_TOGETHER`] after it.
    first_ready_at: Option<Instant>,
    /// Workers marked expected in the balance region that do not serve yet.
    expected: Vec<u32>,
    /// Snapshots that arrived during [`Supervisor::boot`] (a worker that stopped
    /// early sends its final one), handed to the collector when [`Supervisor::run`]
    /// starts, so that no request served during start-up goes unreported.
    boot_snapshots: Vec<(u32, u64, Vec<u8>)>,
    /// Control-socket reader tasks still running.
    readers: usize,
    /// Installed at the first `serve`, kept for the next.
    signals: Option<Signals>,
    /// The connection counts workers share to spread bursts (`server/balance.rs`);
    /// `None` if the memfd could not be made (workers then accept freely).
    balance: Option<crate::server::balance::Region>,
    /// What `/healthz` and `/readyz` read; the aggregator writes the report signals.
    health: Arc<Health>,
    /// End of `--shutdown-delay` after a TERM; the drain starts then.
    term_at: Option<Instant>,
    /// `--min-workers`/`--max-workers`: moves `target` from the reports.
    scaler: Option<super::scaler::Scaler>,
    /// `--preload`: the process that imported the app and forks the workers; `None`
    /// until started, and again after HUP (the next worker starts a fresh import).
    zygote: Option<Zygote>,
    /// `--preload`: a fresh import under way (its number, its process), waited for on
    /// a blocking thread so that the loop keeps serving signals and reports.
    importing: Option<(u64, Zygote)>,
    /// How many imports were started (stale [`Event::Preloaded`] are told apart).
    imports: u64,
}

impl Supervisor {
    pub fn new(config: Arc<Config>) -> Supervisor {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let scaler = config
            .lifecycle
            .scaling
            .clone()
            .map(super::scaler::Scaler::new);
        Supervisor {
            target: config.process.workers,
            config,
            listeners: None,
            workers: BTreeMap::new(),
            next_id: 1,
            events_tx,
            events_rx,
            shutdown: None,
            ever_ready: false,
            early_deaths: VecDeque::new(),
            backoff: Duration::ZERO,
            next_spawn: Instant::now(),
            settings_seen: false,
            django: None,
            stop_at_ready: false,
            awaiting: Vec::new(),
            first_ready_at: None,
            expected: Vec::new(),
            boot_snapshots: Vec::new(),
            readers: 0,
            signals: None,
            balance: match crate::server::balance::Region::create() {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "no shared connection counts; workers accept freely");
                    None
                }
            },
            health: Health::new(),
            term_at: None,
            scaler,
            zygote: None,
            importing: None,
            imports: 0,
        }
    }

    /// The state the health listener and the aggregator share with this supervisor.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Live worker pids (for tests and logs).
    fn pids(&self) -> Vec<i32> {
        self.workers.values().map(|w| w.pid.as_raw()).collect()
    }

    /// Starts the workers and runs until the first one has imported the app (it waits
    /// for its sockets, which [`Supervisor::run`] binds and hands over):
    /// `Ok(Some(settings))` with its Django QUEUE_TIME_TRACKER_* values, `Ok(None)` when
    /// a signal stopped the master before any worker served, `Err` when booting failed.
    ///
    /// A TERM or INT that arrives once a worker serves does not end the boot early:
    /// the shutdown is under way, and [`Supervisor::run`] (with the notifier started)
    /// finishes it, so workers drain instead of being killed and the requests they
    /// served are reported.
    pub async fn boot(&mut self) -> Result<Option<BTreeMap<String, String>>, Fatal> {
        /// Keeps snapshots for [`Supervisor::run`]; nothing is collected yet.
        #[derive(Default)]
        struct Booting(Vec<(u32, u64, Vec<u8>)>);
        impl Collector for Booting {
            fn snapshot(&mut self, worker: u32, seq: u64, data: Vec<u8>) {
                self.0.push((worker, seq, data));
            }
            fn tick(&mut self, _: &mut dyn FnMut(u64) -> usize, _: usize) {}
        }
        if self.config.process.preload {
            // The app imported without error: `run` binds and forks the workers.
            return self.preload().await;
        }
        self.stop_at_ready = true;
        let mut booting = Booting::default();
        let served = self.serve(&mut booting).await;
        self.stop_at_ready = false;
        // Once a worker serves, a TERM that came in the same moment is a graceful
        // stop like any other: `run` drains the workers. Killing them here would
        // cut requests they already took.
        self.boot_snapshots = booting.0;
        served?;
        if self.ever_ready {
            return Ok(Some(self.django.take().unwrap_or_default()));
        }
        self.kill_all(Signal::SIGKILL);
        Ok(None)
    }

    /// Stops every worker at once (a start-up error after booting).
    pub fn abort(&mut self) {
        self.kill_all(Signal::SIGKILL);
    }

    /// Runs until shutdown; `Err` says why the master must exit at once.
    pub async fn run(mut self, collector: &mut dyn Collector) -> Result<(), Fatal> {
        for (id, seq, data) in std::mem::take(&mut self.boot_snapshots) {
            collector.snapshot(id, seq, data);
        }
        if let Err(fatal) = self.release_awaiting() {
            self.kill_all(Signal::SIGKILL);
            return Err(fatal);
        }
        if self.config.process.preload && self.shutdown.is_none() && self.listeners.is_none() {
            // --preload: the app imported, so the sockets are bound now (a burst
            // waits in the backlog, not refused), and the first generation is forked
            // one by one (`maintain`), each keeping its share of a burst from the
            // start (they take the next ids).
            if let Some(b) = &self.balance {
                let first = self.next_id;
                for id in first..first + self.target as u32 {
                    b.expect(id);
                    self.expected.push(id);
                }
            }
            if let Err(fatal) = self.bind_listeners() {
                self.kill_all(Signal::SIGKILL);
                return Err(fatal);
            }
            self.maintain();
        }
        let ended = self.serve(collector).await;
        // Final snapshots written by workers just before they exited may still sit
        // in the control sockets: read them all (each reader ends with `Closed`).
        let mut open = self.readers;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while open > 0 {
            match tokio::time::timeout_at(deadline, self.events_rx.recv()).await {
                Ok(Some(Event::Closed(_))) => open -= 1,
                Ok(Some(Event::Msg(id, ToMaster::Snapshot { seq, data }))) => {
                    collector.snapshot(id, seq, data)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        ended
    }

    /// Runs the loop until it is done (`Ok`) or the master must exit (`Err`, with
    /// every worker killed).
    async fn serve(&mut self, collector: &mut dyn Collector) -> Result<(), Fatal> {
        // Installed once and kept across boot() and run(): a signal that arrives
        // between them (while the notifier starts) waits in its stream, not lost.
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => Signals::install()
                .map_err(|e| Fatal::runtime(format_args!("cannot install signal handlers: {e}")))?,
        };
        let ended = self.serve_with(collector, &mut signals).await;
        self.signals = Some(signals);
        if ended.is_err() {
            self.kill_all(Signal::SIGKILL);
        }
        ended
    }

    async fn serve_with(
        &mut self,
        collector: &mut dyn Collector,
        sig: &mut Signals,
    ) -> Result<(), Fatal> {
        let Signals {
            term,
            int,
            quit,
            hup,
            ttin,
            ttou,
            usr1,
            chld,
        } = sig;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(ev) = self.events_rx.recv() => {
                    if let Event::Closed(_) = ev {
                        self.readers -= 1;
                    }
                    let changes_pool = matches!(
                        ev,
                        Event::Msg(_, ToMaster::Ready { .. } | ToMaster::Recycle)
                            | Event::Preloaded(..)
                    );
                    self.on_event(ev, collector)?;
                    if self.stop_at_ready && self.boot_complete() {
                        return Ok(());
                    }
                    // A recycle request or a ready replacement acts now, not at the
                    // next tick: the retiring worker overshoots --max-requests less.
                    if changes_pool && self.shutdown.is_none() && !self.stop_at_ready {
                        self.maintain();
                    }
                }
                _ = term.recv() => self.on_term(),
                _ = int.recv() => self.begin_shutdown(Stop::Fast, "int"),
                _ = quit.recv() => self.begin_shutdown(Stop::Fast, "quit"),
                _ = hup.recv() => self.reload(),
                _ = ttin.recv() => {
                    self.target += 1;
                    tracing::info!(workers = self.target, "Handling signal: ttin");
                    hooks::nworkers_changed(self.target, Some(self.target - 1));
                }
                _ = ttou.recv() => {
                    if self.target > 1 {
                        self.target -= 1;
                        hooks::nworkers_changed(self.target, Some(self.target + 1));
                    }
                    tracing::info!(workers = self.target, "Handling signal: ttou");
                }
                _ = usr1.recv() => {
                    tracing::info!("Handling signal: usr1; reopening log files");
                    crate::logging::reopen();
                    self.signal_all(Signal::SIGUSR1);
                }
                _ = chld.recv() => self.reap()?,
                _ = tick.tick() => {
                    if self.stop_at_ready && (self.boot_complete() || self.shutdown.is_some()) {
                        return Ok(());
                    }
                    self.stop_expecting_late_workers();
                    self.reap()?;
                    if let Some((_, deadline)) = self.shutdown {
                        if self.workers.is_empty() {
                            return Ok(());
                        }
                        if Instant::now() >= deadline {
                            tracing::warn!(pids = ?self.pids(), "workers did not stop in time; killing them");
                            self.kill_all(Signal::SIGKILL);
                        }
                        continue;
                    }
                    self.check_timeouts();
                    self.maintain();
                    self.lifecycle_tick();
                    self.autoscale_tick();
                    let serving = self.ready_count();
                    let mut send_collect = |seq: u64| self.collect(seq);
                    collector.tick(&mut send_collect, serving);
                }
            }
        }
    }

    /// Asks every ready worker for its snapshot; returns how many were asked.
    fn collect(&self, seq: u64) -> usize {
        let Ok(frame) = control::encode(&ToWorker::Collect { seq }) else {
            return 0;
        };
        let mut asked = 0;
        for w in self.workers.values() {
            if w.state == State::Ready && w.out.send(frame.clone()).is_ok() {
                asked += 1;
            }
        }
        asked
    }

    /// Workers serving right now (for the report's `workers`).
    pub fn ready_count(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.state == State::Ready)
            .count()
    }

    fn begin_shutdown(&mut self, how: Stop, name: &str) {
        tracing::info!("Handling signal: {name}");
        let (sig, grace) = match how {
            Stop::Graceful => (Signal::SIGTERM, self.config.process.graceful_timeout),
            _ => (Signal::SIGQUIT, Duration::from_secs(1)),
        };
        // A second signal may only make the shutdown faster.
        if let Some((Stop::Fast, _)) = self.shutdown {
            return;
        }
        self.shutdown = Some((how, Instant::now() + grace));
        self.health.set_draining();
        for w in self.workers.values_mut() {
            let _ = kill(w.pid, sig);
            if matches!(w.state, State::Ready | State::Booting) {
                w.state = State::Draining(Instant::now());
            }
        }
    }

    fn signal_all(&self, sig: Signal) {
        for w in self.workers.values() {
            let _ = kill(w.pid, sig);
        }
    }

    fn kill_all(&mut self, sig: Signal) {
        for w in self.workers.values_mut() {
            let _ = kill(w.pid, sig);
            if sig == Signal::SIGKILL {
                w.process.wait();
            }
        }
        if sig == Signal::SIGKILL {
            self.workers.clear();
        }
    }

    /// Starts, retires and drains workers until the pool matches the target.
    fn maintain(&mut self) {
        let now = Instant::now();
        // Spawn fresh workers up to the target.
        let fresh = self
            .workers
            .values()
            .filter(|w| !w.retiring && !matches!(w.state, State::Draining(_)))
            .count();
        if fresh < self.target && now >= self.next_spawn {
            // --preload: one fork at a time (a few ms each), the next once the last
            // one said Ready (or booted for a second), so that the first serves at
            // once and no fork delays the answer to a Ready.
            let want = if self.config.process.preload {
                let forking = self.workers.values().any(|w| {
                    w.state == State::Booting && now.duration_since(w.started) < FORK_SPACING
                });
                if forking {
                    fresh
                } else {
                    (fresh + 1).min(self.target)
                }
            } else {
                self.target
            };
            for _ in fresh..want {
                self.spawn_one();
            }
        }
        // Too many (TTOU): retire the oldest fresh ones.
        if fresh > self.target {
            let extra = fresh - self.target;
            let ids: Vec<u32> = self
                .workers
                .iter()
                .filter(|(_, w)| !w.retiring && !matches!(w.state, State::Draining(_)))
                .map(|(id, _)| *id)
                .take(extra)
                .collect();
            for id in ids {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.retiring = true;
                }
            }
        }
        // Retiring workers drain once enough fresh ones serve, so capacity never
        // drops and no connection is refused.
        let fresh_ready = self
            .workers
            .values()
            .filter(|w| !w.retiring && w.state == State::Ready)
            .count();
        if fresh_ready >= self.target {
            for w in self.workers.values_mut() {
                if w.retiring && !matches!(w.state, State::Draining(_)) {
                    let _ = kill(w.pid, Signal::SIGTERM);
                    w.state = State::Draining(now);
                }
            }
        }
        // Drain deadline.
        let grace = self.config.process.graceful_timeout;
        for w in self.workers.values_mut() {
            if let State::Draining(since) = w.state {
                if now.duration_since(since) > grace + Duration::from_secs(1) {
                    tracing::warn!(
                        pid = w.pid.as_raw(),
                        "worker did not finish draining in time; killing it"
                    );
                    let _ = kill(w.pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn spawn_one(&mut self) {
        if self.config.process.preload && !self.preload_ready() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let balance_fd = self.balance.as_ref().map(|b| b.fd());
        hooks::pre_fork(id);
        let spawned = if self.config.process.preload {
            self.fork_worker(id)
        } else {
            spawn::spawn(id, balance_fd, &self.config.process.env)
        };
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker");
                self.note_early_death();
                return;
            }
        };
        let pid = spawned.process.pid();
        hooks::spawned(id, pid.as_raw());
        if self.stop_at_ready {
            // The first generation: whichever imports first serves at once and
            // leaves this one its share of a burst until it serves.
            if let Some(b) = &self.balance {
                b.expect(id);
                self.expected.push(id);
            }
        }
        let control_fd = spawned.control.as_raw_fd();
        if spawned.control.set_nonblocking(true).is_err() {
            return;
        }
        let stream = match tokio::net::UnixStream::from_std(spawned.control) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch a worker's control socket");
                return;
            }
        };
        let (mut r, mut w) = stream.into_split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if w.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let events = self.events_tx.clone();
        self.readers += 1;
        tokio::spawn(async move {
            while let Some(body) = control::read_frame(&mut r).await {
                match control::decode::<ToMaster>(&body) {
                    Ok(msg) => {
                        if events.send(Event::Msg(id, msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, worker = id, "bad control frame"),
                }
            }
            let _ = events.send(Event::Closed(id));
        });
        tracing::info!(worker = id, pid = pid.as_raw(), "Booting worker");
        let now = Instant::now();
        self.workers.insert(
            id,
            Slot {
                process: spawned.process,
                pid,
                state: State::Booting,
                started: now,
                last_beat: now,
                oldest: None,
                retiring: false,
                control_fd,
                out: out_tx,
            },
        );
    }

    fn note_early_death(&mut self) {
        let now = Instant::now();
        self.early_deaths.push_back(now);
        while self
            .early_deaths
            .front()
            .is_some_and(|t| now.duration_since(*t) > STORM_WINDOW)
        {
            self.early_deaths.pop_front();
        }
        if self.early_deaths.len() >= STORM_DEATHS {
            self.backoff = (self.backoff * 2)
                .max(Duration::from_secs(1))
                .min(STORM_MAX_BACKOFF);
            self.next_spawn = now + self.backoff;
            tracing::warn!(
                deaths = self.early_deaths.len(),
                backoff_secs = self.backoff.as_secs_f64(),
                "respawn storm: workers keep dying soon after start; slowing down respawns"
            );
        }
    }

    /// Collects exited workers. `Err`: the master must exit.
    fn reap(&mut self) -> Result<(), Fatal> {
        let mut gone = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            if let Ok(Some(status)) = w.process.try_wait() {
                gone.push((*id, status, w.state, w.started.elapsed()));
            }
        }
        for (id, status, state, age) in gone {
            let Some(slot) = self.workers.remove(&id) else {
                continue;
            };
            if let Some(b) = &self.balance {
                b.clear(id);
            }
            hooks::child_exit(id, slot.pid.as_raw());
            let code = status.code();
            use std::os::unix::process::ExitStatusExt;
            let how = match (code, status.signal()) {
                (Some(c), _) => format!("exit code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "unknown status".into(),
            };
            if matches!(state, State::Draining(_)) || self.shutdown.is_some() {
                tracing::info!(
                    worker = id,
                    pid = slot.pid.as_raw(),
                    "Worker exited ({how})"
                );
                continue;
            }
            if state == State::Booting && code == Some(exit::BOOT) {
                if !self.ever_ready {
                    return Err(Fatal::boot("worker failed to boot; see the error above"));
                }
                tracing::error!(
                    worker = id,
                    "new worker failed to boot; the running workers keep serving"
                );
            } else {
                tracing::warn!(
                    worker = id,
                    pid = slot.pid.as_raw(),
                    "Worker died unexpectedly ({how}); starting a replacement"
                );
            }
            if age < EARLY_DEATH || state == State::Booting {
                self.note_early_death();
            } else {
                self.backoff = Duration::ZERO;
            }
        }
        if self.config.process.preload {
            self.reap_preload();
        }
        Ok(())
    }

    fn check_timeouts(&mut self) {
        let timeout = self.config.process.timeout;
        let boot_timeout = timeout.max(Duration::from_secs(30));
        let silence = timeout.max(Duration::from_secs(5));
        for (id, w) in self.workers.iter_mut() {
            // A request past --timeout: SIGABRT, so the worker logs the request's Python
            // stack and runs worker_abort (`hooks/timeout.rs`); it is killed if it has
            // not exited within ABORT_GRACE (the drain deadline below).
            let mut abort = false;
            let why = match w.state {
                State::Booting if w.started.elapsed() > boot_timeout => {
                    Some(format!("did not boot within {}s", boot_timeout.as_secs()))
                }
                State::Ready => match &w.oldest {
                    // `--timeout 0`: no limit, as in gunicorn.
                    Some(b) if !timeout.is_zero() && Duration::from_millis(b.age_ms) > timeout => {
                        abort = true;
                        Some(format!(
                            "'{}' ran for {:.1}s (--timeout {}s)",
                            b.request,
                            b.age_ms as f64 / 1000.0,
                            timeout.as_secs_f64()
                        ))
                    }
                    _ if w.last_beat.elapsed() > silence => Some(format!(
                        "sent no heartbeat for {}s",
                        w.last_beat.elapsed().as_secs()
                    )),
                    _ => None,
                },
                _ => None,
            };
            if let Some(why) = why {
                let now = Instant::now();
                let grace = self.config.process.graceful_timeout + Duration::from_secs(1);
                if abort {
                    tracing::error!(
                        target: crate::logging::CRITICAL,
                        worker = *id,
                        pid = w.pid.as_raw(),
                        "WORKER TIMEOUT: {why}; aborting it"
                    );
                    let _ = kill(w.pid, Signal::SIGABRT);
                    // The drain deadline (grace) then kills it ABORT_GRACE from now.
                    let wait = crate::hooks::timeout::ABORT_GRACE;
                    w.state =
                        State::Draining(now.checked_sub(grace.saturating_sub(wait)).unwrap_or(now));
                } else {
                    tracing::error!(
                        target: crate::logging::CRITICAL,
                        worker = *id,
                        pid = w.pid.as_raw(),
                        "WORKER TIMEOUT: {why}; killing it"
                    );
                    let _ = kill(w.pid, Signal::SIGKILL);
                    w.state = State::Draining(now.checked_sub(grace).unwrap_or(now));
                }
                w.retiring = true;
            }
        }
    }

    /// Handles one control message. `Err`: the master must exit.
    fn on_event(&mut self, ev: Event, collector: &mut dyn Collector) -> Result<(), Fatal> {
        match ev {
            Event::Closed(id) => {
                tracing::debug!(worker = id, "control socket closed");
            }
            Event::Preloaded(n, imported) => self.preloaded(n, imported),
            Event::Msg(id, ToMaster::Ready { django, .. }) => {
                if !self.settings_seen {
                    self.settings_seen = true;
                    collector.django_settings(&django);
                    self.django = Some(django);
                }
                if self.listeners.is_none() && self.stop_at_ready {
                    // Booting: the sockets are bound once the notifier runs.
                    self.awaiting.push(id);
                    self.ever_ready = true;
                    self.first_ready_at.get_or_insert_with(Instant::now);
                    return Ok(());
                }
                if self.listeners.is_none() {
                    self.bind_listeners()?;
                }
                self.hand_sockets(id);
            }
            Event::Msg(id, ToMaster::Heartbeat { oldest, .. }) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.last_beat = Instant::now();
                    w.oldest = oldest;
                }
            }
            Event::Msg(id, ToMaster::Snapshot { seq, data }) => {
                collector.snapshot(id, seq, data);
            }
            Event::Msg(id, ToMaster::Recycle) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    if !w.retiring {
                        tracing::info!(worker = id, "Recycling worker after --max-requests");
                        w.retiring = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether [`Supervisor::boot`] may end: a worker has loaded the app. The master
    /// does not wait for the rest of the first generation (on a loaded machine the
    /// last import can finish well after the first): they serve as each is ready,
    /// and until then the serving workers leave them their share of a burst (a
    /// proxy's keep-alive pool, a load test) in the backlog, so that a worker that
    /// starts first does not keep all of those connections for their whole life.
    fn boot_complete(&self) -> bool {
        self.first_ready_at.is_some()
    }

    /// Stops leaving a share to first-generation workers that serve by now, died, or
    /// still import [`BOOT_TOGETHER`] after the first one served.
    fn stop_expecting_late_workers(&mut self) {
        let (Some(first), Some(region)) = (self.first_ready_at, &self.balance) else {
            return;
        };
        let late = first.elapsed() >= BOOT_TOGETHER;
        let workers = &self.workers;
        let next_id = self.next_id;
        self.expected.retain(|id| {
            // Not started yet (--preload forks them one by one) or importing.
            let booting =
                *id >= next_id || workers.get(id).is_some_and(|w| w.state == State::Booting);
            if booting && !late {
                return true;
            }
            region.unexpect(*id);
            false
        });
    }

    /// Binds the listeners (once) and hands them to the workers that booted while
    /// [`Supervisor::boot`] ran; `Err` when binding failed.
    fn release_awaiting(&mut self) -> Result<(), Fatal> {
        let waiting = std::mem::take(&mut self.awaiting);
        if waiting.is_empty() {
            return Ok(());
        }
        if self.shutdown.is_none() && self.listeners.is_none() {
            self.bind_listeners()?;
        }
        for id in waiting {
            if self
                .workers
                .get(&id)
                .is_some_and(|w| w.state == State::Booting)
            {
                self.hand_sockets(id);
            }
        }
        Ok(())
    }

    /// Gives worker `id` the listening sockets and counts it as serving; during a
    /// shutdown it is told to stop instead.
    fn hand_sockets(&mut self, id: u32) {
        let fds: Vec<RawFd> = self
            .listeners
            .iter()
            .flatten()
            .map(Listener::raw_fd)
            .collect();
        let shutting = self.shutdown.is_some();
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        if shutting {
            let _ = kill(w.pid, Signal::SIGTERM);
            return;
        }
        match control::send_listen(&w.control_fd, &fds) {
            Ok(()) => {
                w.state = State::Ready;
                w.last_beat = Instant::now();
                self.ever_ready = true;
                self.first_ready_at.get_or_insert_with(Instant::now);
                tracing::info!(worker = id, pid = w.pid.as_raw(), "Worker ready");
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot hand sockets to a worker");
                let _ = kill(w.pid, Signal::SIGKILL);
            }
        }
    }

    fn bind_listeners(&mut self) -> Result<(), Fatal> {
        self.listeners = Some(self.bind().map_err(Fatal::runtime)?);
        hooks::when_ready();
        Ok(())
    }

    fn bind(&self) -> anyhow::Result<Vec<Listener>> {
        let s = &self.config.server;
        let mut out = Vec::new();
        for spec in &s.binds {
            let l = listener::bind(spec, s.backlog, s.unix_socket_mode, s.reuse_port)?;
            let mut at = l.describe();
            if self.config.gunicorn.tls.server.is_some() {
                at = at.replacen("http://", "https://", 1);
            }
            tracing::info!("Listening at: {at} ({})", std::process::id());
            out.push(l);
        }
        Ok(out)
    }
}

impl AsRawFd for Slot {
    fn as_raw_fd(&self) -> RawFd {
        self.control_fd
    }
}
