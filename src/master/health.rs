//! What the master knows about its own health, and `/healthz` and `/readyz` on
//! `--health-bind` for an orchestrator's probes.
//!
//! The supervisor writes the pool's state and the drain flag, the aggregator writes
//! the last report's signals; the HTTP handler only reads. Everything is an atomic,
//! so a probe never waits on the supervisor's loop. The listener runs on the master's
//! runtime: a master whose loop is stuck stops answering, and the probe fails, which
//! is what a liveness probe should see.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin_http;
use crate::error::ConfigError;
use crate::tracker::report::Report;

/// Shared between the supervisor, the aggregator and the health listener.
#[derive(Debug, Default)]
pub struct Health {
    /// Set on TERM (at the start of `--shutdown-delay`) and on INT/QUIT: readiness
    /// fails from then on, so new traffic goes elsewhere while this instance drains.
    draining: AtomicBool,
    /// Workers that have the sockets and serve.
    serving: AtomicUsize,
    /// The pool size the supervisor aims at (`--workers`, TTIN/TTOU, self-scaling).
    target: AtomicUsize,
    /// The last report's signals, as `f64` bits (0 before the first report).
    server_wait_p90: AtomicU64,
    queue_time_p90: AtomicU64,
    utilization: AtomicU64,
    /// Reports seen; the scaler acts once per new report.
    reports: AtomicU64,
}

/// The last report's values that lifecycle decisions read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    pub server_wait_p90: f64,
    pub queue_time_p90: f64,
    pub utilization: f64,
    pub reports: u64,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_pool(&self, serving: usize, target: usize) {
        self.serving.store(serving, Ordering::Relaxed);
        self.target.store(target, Ordering::Relaxed);
    }

    /// Called by the aggregator with each report.
    pub fn record(&self, r: &Report) {
        let store = |a: &AtomicU64, v: f64| {
            a.store(
                if v.is_finite() { v } else { 0.0 }.to_bits(),
                Ordering::Relaxed,
            )
        };
        store(&self.server_wait_p90, r.server_wait.p90);
        store(&self.queue_time_p90, r.queue_time.p90);
        store(&self.utilization, r.utilization);
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    pub fn signals(&self) -> Signals {
        let load = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        Signals {
            server_wait_p90: load(&self.server_wait_p90),
            queue_time_p90: load(&self.queue_time_p90),
            utilization: load(&self.utilization),
            reports: self.reports.load(Ordering::Relaxed),
        }
    }

    /// `/healthz`: the master answers (it runs this) and at least one worker serves.
    fn live(&self) -> (StatusCode, String) {
        let serving = self.serving.load(Ordering::Relaxed);
        let target = self.target.load(Ordering::Relaxed);
        if serving == 0 && !self.draining() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not live: no worker serving (0/{target})\n"),
            );
        }
        (
            StatusCode::OK,
            format!("ok: master alive, {serving}/{target} workers serving\n"),
        )
    }

    /// `/readyz`: live, not draining, and (with a bound) not queueing inside rwsgi.
    fn ready(&self, max_server_wait: Option<Duration>) -> (StatusCode, String) {
        if self.draining() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: draining (shutting down)\n".into(),
            );
        }
        let (status, live) = self.live();
        if status != StatusCode::OK {
            return (status, live.replacen("not live", "not ready", 1));
        }
        if let Some(bound) = max_server_wait {
            let p90 = self.signals().server_wait_p90;
            if p90 > bound.as_secs_f64() {
                let mut msg = String::new();
                let _ = writeln!(
                    msg,
                    "not ready: p90 server_wait {p90:.3}s over --ready-max-server-wait {:.3}s",
                    bound.as_secs_f64()
                );
                return (StatusCode::SERVICE_UNAVAILABLE, msg);
            }
        }
        (StatusCode::OK, "ready\n".into())
    }
}

/// The running `--health-bind` listener; stops when dropped.
pub struct HealthServer {
    task: JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `bind` and serves the probes from `health`. A busy address fails the start.
pub async fn start(
    bind: &str,
    health: Arc<Health>,
    max_server_wait: Option<Duration>,
) -> Result<HealthServer, ConfigError> {
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("--health-bind {bind}: cannot listen: {e}"))?;
    let handler: admin_http::Handler = Arc::new(move |req| respond(req, &health, max_server_wait));
    Ok(HealthServer {
        task: tokio::spawn(admin_http::serve(listener, "health", handler)),
    })
}

fn respond<B>(
    req: &Request<B>,
    health: &Health,
    max_server_wait: Option<Duration>,
) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/healthz" | "/livez" => health.live(),
        "/readyz" => health.ready(max_server_wait),
        _ => {
            return admin_http::text(
                StatusCode::NOT_FOUND,
                "not found; probes are /healthz and /readyz\n",
            )
        }
    };
    if let Some(refused) = admin_http::refuse_writes(req) {
        return refused;
    }
    admin_http::body(status, body, "text/plain; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testing::sample_report;

    #[test]
    fn readiness_follows_pool_drain_and_server_wait() {
        let h = Health::default();
        assert_eq!(h.live().0, StatusCode::SERVICE_UNAVAILABLE, "booting");
        assert_eq!(h.ready(None).0, StatusCode::SERVICE_UNAVAILABLE);
        h.set_pool(2, 2);
        assert_eq!(h.live().0, StatusCode::OK);
        assert_eq!(h.ready(None).0, StatusCode::OK);
        // sample_report's server_wait p90 is 0.003 s.
        h.record(&sample_report(1));
        assert_eq!(h.ready(Some(Duration::from_millis(5))).0, StatusCode::OK);
        let (status, body) = h.ready(Some(Duration::from_millis(2)));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("p90 server_wait 0.003s"), "{body}");
        h.set_draining();
        assert_eq!(h.ready(None).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.live().0, StatusCode::OK, "draining is still alive");
    }
}
