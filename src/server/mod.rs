//! A worker's HTTP side: bytes in, requests out, replies back to bytes. Accept
//! loops, the own HTTP/1.1 path and hyper, request limits, keep-alive and draining.
//! It holds no Python object: each request goes to `dispatch/` through
//! [`crate::dispatch::Conn`], and its [`crate::contract::Reply`] comes back.
//!
//! The worker runs one current-thread tokio runtime for all network IO; Python runs
//! on `--threads` OS threads of its own (and, with `--threads 1`, inline on this
//! runtime's thread: `dispatch/inline.rs`).
//!
//! Where a change goes: a rule both HTTP paths apply (limits, Host) in `rules.rs`;
//! a per-connection read or send timeout in `conn.rs` (hyper's builder) and `own.rs`
//! (its `Alarm`); a new kind of listening socket in `listener.rs`; a layer below
//! both paths (like TLS and the PROXY protocol) in `transport.rs`.

/// `AsyncWrite` for a stream wrapper whose writes go straight to its `inner` stream
/// (the wrappers only add something to reads): `arrival::StampedTcp`,
/// `conn::Tracked`, `rewind::Rewind`.
macro_rules! forward_async_write {
    ($ty:ty $(, $g:ident)?) => {
        impl$(<$g: tokio::io::AsyncWrite + Unpin>)? tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
            }
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
            }
        }
    };
}

pub mod arrival;
pub mod balance;
pub mod conn;
pub mod guard;
pub mod head;
pub mod listener;
pub mod own;
pub mod proxy;
pub mod rewind;
pub mod rules;
pub mod service;
pub mod transport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::dispatch::Dispatcher;
use listener::Listener;

/// The connections of one worker, for graceful shutdown and balancing.
#[derive(Default)]
pub struct Conns {
    /// Connections open right now.
    pub open: AtomicUsize,
    /// This worker's share of the connection counts all workers see.
    pub balance: Option<balance::Balance>,
}

/// How a worker was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// Finish in-flight requests (TERM, HUP, recycling), then exit.
    Graceful,
    /// Exit now (INT, QUIT).
    Fast,
}

/// Serves `listeners`, handing requests to `dispatch`, until `stop` says otherwise;
/// returns after in-flight requests are done (graceful) or at once (fast).
pub fn run(
    config: &Config,
    listeners: Vec<Listener>,
    runtime: &tokio::runtime::Runtime,
    dispatch: Arc<Dispatcher>,
    balance: Option<balance::Balance>,
    stop: watch::Receiver<Stop>,
) {
    let conns = Arc::new(Conns {
        open: AtomicUsize::new(0),
        balance,
    });
    runtime.block_on(async {
        let permits = Arc::new(Semaphore::new(config.server.worker_connections));
        let http = Arc::new(conn::Http::new(config));
        let mut accepts = Vec::new();
        for l in listeners {
            let ctx = conn::AcceptCtx {
                http: http.clone(),
                dispatch: dispatch.clone(),
                conns: conns.clone(),
                permits: permits.clone(),
                stop: stop.clone(),
            };
            accepts.push(tokio::spawn(conn::accept_loop(l, ctx)));
        }
        drop(dispatch);
        let mut stop = stop.clone();
        let how = loop {
            let now = *stop.borrow_and_update();
            if now != Stop::Running {
                break now;
            }
            if stop.changed().await.is_err() {
                break Stop::Graceful;
            }
        };
        for a in &accepts {
            a.abort();
        }
        if let Some(b) = &conns.balance {
            b.leave();
        }
        if how == Stop::Graceful {
            let deadline = Instant::now() + config.process.graceful_timeout;
            while conns.open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
}
