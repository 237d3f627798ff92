//! Accept loops, and each connection's life: the own HTTP/1.1 path first, hyper after
//! a hand-off (or throughout), the keep-alive idle timer, and when a draining
//! worker's connection closes (what each response says while draining is
//! `service.rs`'s). hyper's builder (header-read timeout, buffer sizes) is set here,
//! and the connection's `--send-timeout` ([`Tracked`]), which holds on both paths.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};

use super::arrival::StampedTcp;
use super::balance;
use super::guard::HeadGuard;
use super::listener::Listener;
use super::own::{self, Ended, OwnConfig, OwnCtl};
use super::rewind::Rewind;
use super::service::RequestService;
use super::transport::Layers;
use super::{Conns, Stop};
use crate::config::{Config, Limits};
use crate::contract::{Peer, Transport};
use crate::dispatch::Dispatcher;

/// hyper's connection settings, built once per worker.
pub struct Http {
    builder: http1::Builder,
    keep_alive: Option<Duration>,
    /// `--send-timeout` (see [`Tracked`]).
    send_timeout: Duration,
    pub(super) limits: Limits,
    /// The own HTTP/1.1 path (`own.rs`); `None` with `--hyper-only` or without
    /// keep-alive (every response then closes, which hyper handles).
    own: Option<OwnConfig>,
    /// PROXY protocol and TLS (`transport.rs`); `None`: plain connections.
    layers: Option<Layers>,
}

impl Http {
    pub fn new(config: &Config) -> Http {
        let cfg = &config.server;
        let mut b = http1::Builder::new();
        let l = cfg.limits;
        // Big enough for a head at every limit, so the limits (not hyper's buffer)
        // decide, with gunicorn's status codes.
        let head = l
            .request_line
            .saturating_add(
                l.request_fields
                    .saturating_mul(l.request_field_size.saturating_add(2)),
            )
            .saturating_add(4096)
            .clamp(8192, 4 << 20);
        b.timer(TokioTimer::new())
            .header_read_timeout(cfg.header_timeout)
            .keep_alive(cfg.keep_alive.is_some())
            .max_headers(l.request_fields)
            .max_buf_size(head)
            .title_case_headers(true)
            .half_close(false);
        Http {
            builder: b,
            keep_alive: cfg.keep_alive,
            send_timeout: cfg.send_timeout,
            limits: l,
            own: (!cfg.hyper_only && cfg.keep_alive.is_some()).then_some(OwnConfig {
                limits: l,
                head_limit: head,
                header_timeout: cfg.header_timeout,
            }),
            layers: Layers::new(&config.gunicorn, cfg.header_timeout),
        }
    }
}

/// What every accept loop of a worker shares.
#[derive(Clone)]
pub struct AcceptCtx {
    pub http: Arc<Http>,
    pub dispatch: Arc<Dispatcher>,
    pub conns: Arc<Conns>,
    pub permits: Arc<Semaphore>,
    pub stop: watch::Receiver<Stop>,
}

/// Accepts until aborted; each connection runs in its own task.
pub async fn accept_loop(listener: Listener, ctx: AcceptCtx) {
    let local = listener.local();
    let registered = match listener {
        Listener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Accept::Tcp),
        Listener::Unix(l) => tokio::net::UnixListener::from_std(l).map(Accept::Unix),
    };
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot register listener");
            return;
        }
    };
    loop {
        let Ok(permit) = ctx.permits.clone().acquire_owned().await else {
            return;
        };
        if let Some(balance) = &ctx.conns.balance {
            // Let a less loaded worker take what is queued (see `balance.rs`).
            let mut brief = 0;
            loop {
                match balance.defer() {
                    balance::Defer::No => break,
                    balance::Defer::Briefly if brief < balance::MAX_DEFERS => brief += 1,
                    balance::Defer::Briefly => break,
                    balance::Defer::UntilItServes => {}
                }
                tokio::time::sleep(balance::DEFER_STEP).await;
            }
        }
        let accepted = match &listener {
            Accept::Tcp(l) => l.accept().await.map(|(stream, addr)| {
                let _ = stream.set_nodelay(true);
                (Conn::Tcp(stream), Peer::Tcp(addr))
            }),
            Accept::Unix(l) => l
                .accept()
                .await
                .map(|(stream, _)| (Conn::Unix(stream), Peer::Unix)),
        };
        match accepted {
            Ok((conn, peer)) => {
                let open = ctx.conns.open.fetch_add(1, Ordering::AcqRel) + 1;
                if let Some(b) = &ctx.conns.balance {
                    b.set_connections(open);
                }
                let ctx = ctx.clone();
                let local = local.clone();
                tokio::spawn(async move {
                    if let Some(layers) = &ctx.http.layers {
                        super::transport::serve_layered(layers, conn, peer, local, &ctx).await;
                        drop(permit);
                        return;
                    }
                    let to_app = ctx.dispatch.connection(peer, local, Transport::default());
                    let service = |arrival| {
                        RequestService::new(
                            to_app,
                            arrival,
                            ctx.http.limits,
                            ctx.stop.clone(),
                            peer,
                        )
                    };
                    match conn {
                        Conn::Tcp(s) => {
                            let (s, arrival) = StampedTcp::new(s);
                            serve(s, service(Some(arrival)), &ctx).await
                        }
                        Conn::Unix(s) => serve(s, service(None), &ctx).await,
                    }
                    drop(permit);
                });
            }
            Err(e) => accept_error(e).await,
        }
    }
}

enum Accept {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

pub(super) enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept_error(e: std::io::Error) {
    // The connection itself went wrong before we took it: nothing to wait for.
    if matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    ) {
        tracing::debug!(error = %e, "accept failed");
        return;
    }
    // Out of fds (EMFILE, ENFILE) or memory: the queued connection stays queued and
    // the listener stays readable, so retrying at once would spin a CPU and write a
    // line per try. Wait, and say so once per interval; a connection that closes
    // frees an fd, and the next try takes the queued connection.
    static ACCEPT_ERRORS: crate::throttle::Throttle = crate::throttle::Throttle::new();
    if let Some(skipped) = ACCEPT_ERRORS.allow() {
        tracing::warn!(error = %e, skipped, "accept failed; retrying every 50 ms");
    }
    tokio::time::sleep(ACCEPT_RETRY).await;
}

/// How long an accept that failed for want of fds or memory waits before the next try.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Counts bytes read so the idle watcher can tell an idle keep-alive connection from
/// one that is receiving a request.
struct Tracked<S> {
    inner: S,
    activity: Arc<AtomicU64>,
    /// `--send-timeout`: the longest a write may wait for the client to take bytes.
    send_timeout: Duration,
    /// Armed while a write waits (made on the first wait, then reused).
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: bool,
    /// The send timeout fired: every later write fails at once, uncounted.
    aborted: bool,
    /// Told when the send timeout aborts the connection (counted for the tracker).
    dispatch: Arc<Dispatcher>,
}

impl<S> Tracked<S> {
    /// A write that waits longer than `--send-timeout` fails, and the connection
    /// with it (nginx's send_timeout): a client that stopped reading costs its own
    /// connection, never a worker. A write that goes through disarms the timer.
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.stalled = false;
            return r;
        }
        if self.aborted {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.send_timeout;
            match &mut self.stall {
                Some(s) => s.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(stall) = self.stall.as_mut() else {
            return Poll::Pending;
        };
        if stall.as_mut().poll(cx).is_ready() {
            self.aborted = true;
            self.dispatch.client_timeout();
            tracing::warn!(
                timeout_s = self.send_timeout.as_secs_f64(),
                "client stopped reading the response; connection aborted (--send-timeout)"
            );
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "--send-timeout passed",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, r)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard(cx, r)
    }
}

/// How long a keep-alive connection must have been quiet (no request bytes, nothing
/// in flight) before a draining worker closes it. Closing an idle connection the
/// moment the worker is told to stop races the client's next request, which may
/// already be on the wire, and that request would be lost. A client in the middle of
/// a conversation sends its next request within this window, gets it answered with
/// `Connection: close` (`service.rs`) and reconnects to another worker; a
/// connection quiet for this long is as idle as one the keep-alive timer closes.
/// A connection that has not yet sent a byte is never quiet: it awaits its first
/// request, within --header-timeout.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// How often a draining connection looks for the above.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// What woke a connection's task, in [`serve`].
enum Event<S> {
    /// hyper, or the own path, finished with the connection.
    Done(Result<(), hyper::Error>),
    /// The own path hands the connection to hyper.
    HandOff(S, bytes::Bytes, RequestService),
    /// The worker is stopping.
    Stop,
    /// The idle (or drain) timer fired.
    Timer,
}

/// The waker handed to a connection's idle timer and stop signal: it notes that one of
/// them fired, then wakes the connection's task.
pub(super) struct SideWake {
    pub(super) woken: std::sync::atomic::AtomicBool,
    pub(super) task: futures_util::task::AtomicWaker,
}

impl Default for SideWake {
    fn default() -> Self {
        SideWake {
            // The first round registers both.
            woken: std::sync::atomic::AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        }
    }
}

impl std::task::Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Who speaks HTTP on a connection: the own path first (when enabled), hyper after a
/// hand-off or throughout.
enum Phase<O, H> {
    Own(Pin<Box<O>>),
    Hyper(Pin<Box<H>>),
}

pub(super) async fn serve<S>(stream: S, svc: RequestService, ctx: &AcceptCtx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Counted by the accept loop already (so that a burst sees its own count rise).
    let activity = Arc::new(AtomicU64::new(0));
    let in_flight = svc.in_flight();
    let peer = *svc.peer();
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
        send_timeout: ctx.http.send_timeout,
        stall: None,
        stalled: false,
        aborted: false,
        dispatch: ctx.dispatch.clone(),
    };
    let ctl = OwnCtl::default();
    let hyper_conn = |io, prefix, svc: RequestService| {
        let guarded = HeadGuard::new(Rewind::new(prefix, io), ctx.http.limits, svc.cut());
        Box::pin(
            ctx.http
                .builder
                .serve_connection(TokioIo::new(guarded), svc),
        )
    };
    let mut conn = match &ctx.http.own {
        Some(cfg) => Phase::Own(Box::pin(own::serve(io, svc, &ctl, cfg))),
        None => Phase::Hyper(hyper_conn(io, bytes::Bytes::new(), svc)),
    };
    let mut stop = ctx.stop.clone();
    let idle = ctx.http.keep_alive.unwrap_or(Duration::from_secs(3600));
    let mut seen = activity.load(Ordering::Relaxed);
    let mut idle_timer = Box::pin(tokio::time::sleep(idle));
    // `draining`: the worker stops; since when this connection has been quiet.
    // `closing`: hyper (or the own path) was told to finish and close.
    let mut draining: Option<tokio::time::Instant> = None;
    let mut closing = false;
    if *stop.borrow() != Stop::Running {
        draining = Some(tokio::time::Instant::now());
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + DRAIN_POLL);
    }
    // The idle timer and the stop signal wake the task through `side`, so a poll that
    // hyper's IO caused (two or three per request) does not poll them too.
    let side = Arc::new(SideWake::default());
    let side_waker = std::task::Waker::from(side.clone());
    loop {
        let watch_stop = draining.is_none() && !closing;
        let event = {
            let mut changed = std::pin::pin!(stop.changed());
            std::future::poll_fn(|cx| {
                side.task.register(cx.waker());
                match &mut conn {
                    Phase::Own(f) => match f.as_mut().poll(cx) {
                        Poll::Ready(Ended::Closed) => return Poll::Ready(Event::Done(Ok(()))),
                        Poll::Ready(Ended::HandOff(io, read, svc)) => {
                            return Poll::Ready(Event::HandOff(io, read, svc))
                        }
                        Poll::Pending => {}
                    },
                    Phase::Hyper(c) => {
                        if let Poll::Ready(res) = c.as_mut().poll(cx) {
                            return Poll::Ready(Event::Done(res));
                        }
                    }
                }
                if side.woken.swap(false, Ordering::AcqRel) {
                    let mut side_cx = Context::from_waker(&side_waker);
                    if watch_stop && changed.as_mut().poll(&mut side_cx).is_ready() {
                        return Poll::Ready(Event::Stop);
                    }
                    if !closing && idle_timer.as_mut().poll(&mut side_cx).is_ready() {
                        return Poll::Ready(Event::Timer);
                    }
                }
                Poll::Pending
            })
            .await
        };
        // Whatever happened, the next round polls the timer and the signal afresh.
        side.woken.store(true, Ordering::Release);
        match event {
            Event::Done(res) => {
                match res {
                    // A head hyper could not parse (it answered 400/414/431).
                    Err(e) if e.is_parse() || e.is_parse_too_large() => {
                        super::rules::warn(&peer, &e)
                    }
                    Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
                    Ok(()) => {}
                }
                break;
            }
            Event::HandOff(io, read, svc) => {
                let mut c = hyper_conn(io, read, svc);
                if closing {
                    c.as_mut().graceful_shutdown();
                }
                conn = Phase::Hyper(c);
            }
            Event::Stop => {
                draining = Some(tokio::time::Instant::now());
                seen = activity.load(Ordering::Relaxed);
                idle_timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + DRAIN_POLL);
            }
            Event::Timer => {
                let now = activity.load(Ordering::Relaxed);
                let busy = in_flight.load(Ordering::Acquire) > 0;
                let t = tokio::time::Instant::now();
                match draining {
                    Some(_) if now != seen || busy => {
                        seen = now;
                        draining = Some(t);
                        idle_timer.as_mut().reset(t + DRAIN_POLL);
                    }
                    // Accepted, but not one byte of its first request yet: the client
                    // connected to send one (under load it may come late), so this is
                    // no idle keep-alive connection. Its request is answered with
                    // `Connection: close`; --header-timeout bounds the wait.
                    Some(_) if now == 0 => idle_timer.as_mut().reset(t + DRAIN_POLL),
                    Some(quiet_since) if t.duration_since(quiet_since) < DRAIN_QUIET => {
                        idle_timer.as_mut().reset(t + DRAIN_POLL);
                    }
                    // Quiet while draining, or idle past --keep-alive: close. (hyper
                    // lets a response still being written finish first.)
                    Some(_) | None if now == seen && !busy => {
                        match &mut conn {
                            Phase::Hyper(c) => c.as_mut().graceful_shutdown(),
                            // Awaiting a head: nothing to finish.
                            Phase::Own(_) if ctl.waiting.load(Ordering::Relaxed) => break,
                            Phase::Own(_) => ctl.close.store(true, Ordering::Relaxed),
                        }
                        closing = true;
                    }
                    _ => {
                        seen = now;
                        idle_timer.as_mut().reset(t + idle);
                    }
                }
            }
        }
    }
    drop(conn);
    ctx.closed();
}

impl AcceptCtx {
    /// A connection the accept loop counted has ended.
    pub(super) fn closed(&self) {
        let open = self.conns.open.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(b) = &self.conns.balance {
            b.set_connections(open);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn http(args: &[&str]) -> Http {
        let cli = crate::cli::Cli::parse_from([&["rwsgi", "app:application"], args].concat());
        let config = crate::config::Config::from_cli(&cli).unwrap();
        Http::new(&config)
    }

    #[test]
    fn the_own_path_serves_unless_turned_off_or_keep_alive_is() {
        // python-tests/test_own_http.py compares the own path with hyper alone; it
        // proves something only if the default server takes the own path.
        assert!(http(&[]).own.is_some());
        assert!(http(&["--hyper-only"]).own.is_none());
        assert!(http(&["--keep-alive", "0"]).own.is_none());
    }
}
