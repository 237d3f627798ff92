//! A worker process: boots its own interpreter and imports the app, tells the master
//! it is ready, receives the listening sockets, serves, and reports on the control
//! channel (heartbeats, tracker snapshots, recycling).
//!
//! Workers are started by re-executing the rwsgi binary ([`main`]), or with
//! `--preload` forked from the process that imported the app ([`forked`], from
//! `zygote.rs`), never from a process that runs a thread or a tokio runtime. Both are
//! reached from `start.rs`, not from the master's code.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::control::{self, ToMaster, ToWorker};
use crate::dispatch::{Dispatcher, Shared};
use crate::error::{exit, Fatal, OrLog};
use crate::hooks::in_worker as hooks;
use crate::server::{self, listener::Listener, Stop};
use crate::wsgi::interpreter;

/// Runs worker `id` on the control socket `control_fd` until it is told to stop.
pub fn main(
    layers: &crate::config::Layers,
    config: Arc<Config>,
    id: u32,
    control_fd: RawFd,
    balance_fd: Option<RawFd>,
) -> Result<(), Fatal> {
    let span = tracing::info_span!("worker", id);
    let _enter = span.enter();
    // SAFETY: the master passed this fd number for our end of the control socket.
    let ctl = unsafe { UnixStream::from_raw_fd(control_fd) };
    let _ = nix::fcntl::fcntl(
        &ctl,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );

    // gunicorn's worker start: title, privileges, then the config file's post_fork.
    set_title(&config);
    enter_process(&config)?;
    interpreter::initialize(&config.python).map_err(Fatal::boot)?;
    hooks::init(&config, id)
        .and_then(|()| hooks::post_fork())
        .map_err(Fatal::boot)?;
    let app = pyo3::Python::attach(|py| interpreter::load_app(py, &config.app))
        .map_err(Fatal::boot)
        .inspect_err(|_| hooks::worker_exit())?;
    serve(layers, config, app, ctl, id, balance_fd, None)
}

/// Runs worker `id`, forked by the `--preload` process (`zygote.rs`) with the app
/// imported there: gunicorn's `preload_app` order (title, `post_fork`, then
/// `post_worker_init`).
pub fn forked(
    layers: &crate::config::Layers,
    config: Arc<Config>,
    forked: crate::zygote::Forked,
) -> Result<(), Fatal> {
    let crate::zygote::Forked {
        app,
        control,
        id,
        master,
        balance,
    } = forked;
    let balance_fd = balance.map(std::os::fd::IntoRawFd::into_raw_fd);
    let span = tracing::info_span!("worker", id);
    let _enter = span.enter();
    // The lines the master and the preload process logged are not this worker's.
    let _ = crate::logging::take_line_counts();
    set_title(&config);
    hooks::init(&config, id)
        .and_then(|()| hooks::post_fork())
        .map_err(Fatal::boot)?;
    serve(layers, config, app, control, id, balance_fd, Some(master))
}

/// `-n/--name`: the worker's process title.
fn set_title(config: &Config) {
    if let Some(name) = &config.hooks.proc_name {
        crate::hooks::proctitle::set(&format!("rwsgi: worker [{name}]"));
    }
}

/// `--chdir`, then `--user/--group`: what a process that imports the app does first
/// (a worker, or the `--preload` process).
pub fn enter_process(config: &Config) -> Result<(), Fatal> {
    if let Some(dir) = &config.python.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| Fatal::boot(format_args!("--chdir {}: {e}", dir.display())))?;
    }
    if let Some(owner) = &config.hooks.user {
        crate::hooks::privileges::drop_to(owner).map_err(Fatal::boot)?;
    }
    Ok(())
}

/// From the imported app on: `post_worker_init`, Ready, the sockets, serving.
/// `adopt_by`: a forked worker's master, which adopts it (`zygote::adopted_by`).
fn serve(
    layers: &crate::config::Layers,
    config: Arc<Config>,
    app: pyo3::Py<pyo3::PyAny>,
    mut ctl: UnixStream,
    id: u32,
    balance_fd: Option<RawFd>,
    adopt_by: Option<u32>,
) -> Result<(), Fatal> {
    hooks::post_worker_init(&app)
        .map_err(Fatal::boot)
        .inspect_err(|_| hooks::worker_exit())?;
    let reload = config
        .hooks
        .reload
        .then(|| crate::hooks::reload::start(&config.hooks.reload_extra_files));
    let django = if config.python.read_django_settings {
        pyo3::Python::attach(crate::wsgi::django::read)
    } else {
        Default::default()
    };
    // The Django layer is known now: the config is built again from all layers.
    let config = if django.is_empty() {
        config
    } else {
        Arc::new(Config::from_layers(layers, &django).map_err(Fatal::boot)?)
    };
    // Everything but the sockets is set up before Ready, so that the worker serves
    // the moment they arrive (a burst waits in the backlog meanwhile).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_log("cannot start the runtime")?;
    let balance = balance_fd.and_then(|fd| match server::balance::Region::map(fd) {
        Ok(r) => Some(r.worker(id)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot map the shared connection counts");
            None
        }
    });
    let dispatch =
        Dispatcher::start(&config, app, runtime.handle().clone()).or_log("cannot start")?;
    let ready = ToMaster::Ready {
        pid: std::process::id(),
        django,
    };
    control::send_blocking(&mut ctl, &ready).map_err(|_| Fatal::said(exit::RUNTIME))?;
    if let Some(master) = adopt_by {
        crate::zygote::adopted_by(master).or_log("--preload")?;
    }
    let fds = control::recv_listen(&mut ctl).map_err(|e| {
        Fatal::logged(
            tracing::Level::DEBUG,
            "no sockets from the master; exiting",
            e,
        )
    })?;
    let listeners = fds
        .into_iter()
        .map(Listener::from_fd)
        .collect::<Result<Vec<_>, _>>()
        .or_log("bad socket from the master")?;
    let shared = dispatch.shared().clone();
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    // The control channel (heartbeats, snapshots, recycling, signals) runs on a thread
    // of its own, so that a request running on the IO thread (`--threads 1` runs
    // bodiless requests there) never delays a heartbeat or a snapshot.
    let (served_tx, served_rx) = tokio::sync::oneshot::channel::<Stop>();
    let control = {
        let limit = config.process.max_requests_limit(id);
        let timeout = config.process.timeout;
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let _enter = span.enter();
                control_thread(ctl, shared, stop_tx, limit, reload, timeout, served_rx)
            })
            .or_log("cannot start the control thread")?
    };
    tracing::info!(pid = std::process::id(), "Booted worker");

    server::run(
        &config,
        listeners,
        &runtime,
        dispatch,
        balance,
        stop_rx.clone(),
    );
    let how = *stop_rx.borrow();
    let _ = served_tx.send(how);
    // A control thread that could not run stopped the server at once; the worker
    // still runs its exit hooks, then exits 1 with the reason.
    let control = control.join().unwrap_or_else(|_| {
        Err(Fatal::logged(
            tracing::Level::ERROR,
            "the control thread panicked",
            "",
        ))
    });
    hooks::worker_exit();
    hooks::run_atexit();
    tracing::info!(pid = std::process::id(), "Worker exiting");
    control
}

/// Runs the control channel until the server is done (`served` fires), then sends
/// the last partial interval unless the stop was fast. `Err` when the channel could
/// not be set up: the server was told to stop at once.
fn control_thread(
    ctl: UnixStream,
    shared: Arc<Shared>,
    stop_tx: watch::Sender<Stop>,
    limit: Option<u64>,
    reload: Option<Arc<AtomicBool>>,
    timeout: Duration,
    served: tokio::sync::oneshot::Receiver<Stop>,
) -> Result<(), Fatal> {
    let stop_now = {
        let stop = stop_tx.clone();
        move |e: Fatal| {
            let _ = stop.send(Stop::Fast);
            e
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_log("cannot start the control runtime")
        .map_err(&stop_now)?;
    runtime.block_on(async move {
        let ctl = ctl
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(ctl))
            .or_log("cannot use the control socket")
            .map_err(stop_now)?;
        let (out_tx, out_rx) = mpsc::channel::<ToMaster>(16);
        let (read_half, write_half) = ctl.into_split();
        let writer = tokio::spawn(write_loop(write_half, out_rx));
        let reader = tokio::spawn(read_loop(
            read_half,
            out_tx.clone(),
            stop_tx.clone(),
            shared.clone(),
        ));
        let beats = tokio::spawn(heartbeat_loop(
            shared.clone(),
            out_tx.clone(),
            limit,
            reload,
        ));
        let sigs = tokio::spawn(signals(stop_tx, shared.clone(), timeout));
        let how = served.await.unwrap_or(Stop::Fast);
        sigs.abort();
        if how != Stop::Fast {
            // The last partial interval goes to the master before we exit. Only the
            // writer may hold the channel open now, so it ends after the last frame.
            reader.abort();
            beats.abort();
            let _ = reader.await;
            let _ = beats.await;
            let last = ToMaster::Snapshot {
                seq: control::FINAL_SEQ,
                data: snapshot(&shared),
            };
            let _ = out_tx.send(last).await;
            drop(out_tx);
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
        Ok(())
    })
}

/// The interval's tracker snapshot with the worker's log-line counts, encoded.
fn snapshot(shared: &Shared) -> Vec<u8> {
    let mut snap = shared.recorder.take();
    snap.log_lines = crate::logging::take_line_counts();
    snap.encode()
}

async fn write_loop(mut w: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<ToMaster>) {
    while let Some(msg) = rx.recv().await {
        let Ok(frame) = control::encode(&msg) else {
            continue;
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
}

async fn read_loop(
    mut r: tokio::net::unix::OwnedReadHalf,
    out: mpsc::Sender<ToMaster>,
    stop: watch::Sender<Stop>,
    shared: Arc<Shared>,
) {
    while let Some(body) = control::read_frame(&mut r).await {
        match control::decode::<ToWorker>(&body) {
            Ok(ToWorker::Collect { seq }) => {
                let data = snapshot(&shared);
                let _ = out.send(ToMaster::Snapshot { seq, data }).await;
            }
            Ok(ToWorker::Listen) => {}
            Err(e) => tracing::warn!(error = %e, "bad frame from the master"),
        }
    }
    // The master is gone: nobody supervises us any more, so stop now.
    if *stop.borrow() == Stop::Running {
        tracing::warn!("master went away; worker exiting");
        let _ = stop.send(Stop::Fast);
    }
}

/// How often the worker compares its served count with `--max-requests`: the
/// replacement should start right after the limit, not up to a heartbeat later
/// (a busy worker serves hundreds of requests per heartbeat).
const RECYCLE_POLL: Duration = Duration::from_millis(20);

/// `reload`: set by the `--reload` watcher when a source file changed.
async fn heartbeat_loop(
    shared: Arc<Shared>,
    out: mpsc::Sender<ToMaster>,
    limit: Option<u64>,
    reload: Option<Arc<AtomicBool>>,
) {
    let mut asked = false;
    let mut beat = tokio::time::interval(Duration::from_millis(500));
    let mut poll = tokio::time::interval(RECYCLE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let served = shared.served();
                let beat = ToMaster::Heartbeat {
                    served,
                    oldest: shared.oldest_busy(),
                };
                if out.send(beat).await.is_err() {
                    return;
                }
            }
            _ = poll.tick(), if (limit.is_some() || reload.is_some()) && !asked => {
                let served = shared.served();
                let changed = reload.as_ref().is_some_and(|r| r.load(Ordering::Acquire));
                if changed || limit.is_some_and(|limit| served >= limit) {
                    asked = true;
                    if !changed {
                        tracing::info!(served, "max requests reached; asking to be replaced");
                    }
                    if out.send(ToMaster::Recycle).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// `timeout`: `--timeout`, for the log line of a timed-out worker.
async fn signals(stop: watch::Sender<Stop>, shared: Arc<Shared>, timeout: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr1), Ok(mut hup), Ok(mut abrt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
        signal(SignalKind::from_raw(libc::SIGABRT)),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { let _ = stop.send(Stop::Graceful); }
            _ = int.recv() => { hooks::worker_int(); let _ = stop.send(Stop::Fast); }
            _ = quit.recv() => { hooks::worker_int(); let _ = stop.send(Stop::Fast); }
            _ = abrt.recv() => {
                // The master timed us out (--timeout): say what was stuck, then go.
                crate::hooks::timeout::explain(&shared, timeout);
                hooks::worker_abort();
                hooks::worker_exit();
                hooks::run_atexit();
                std::process::exit(exit::RUNTIME);
            }
            _ = hup.recv() => {}
            _ = usr1.recv() => {
                if let Err(e) = shared.reopen_access_log() {
                    tracing::warn!(error = %e, "cannot reopen the access log");
                }
                crate::logging::reopen();
            }
        }
    }
}
