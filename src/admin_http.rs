//! The master's small internal HTTP listeners: `/metrics` and `/queue-time.json`
//! (the prometheus sink) and `/healthz` and `/readyz` (`--health-bind`).
//!
//! Each answers a handful of GETs from a scraper or a kubelet, so one accept loop with
//! a connection cap and a header timeout serves them all; the handler builds the whole
//! response from shared state that is locked for microseconds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

/// Clients served at once; more connections are closed on accept. These ports are
/// internal, but they should not be a way to exhaust the master's file descriptors.
const MAX_CONNECTIONS: usize = 32;

/// A slow client gets this long to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the response to one request.
pub type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

/// Accept loop; runs until its task is aborted. Connections live in a [`JoinSet`] so
/// that aborting the loop closes them too. `name` labels debug logs.
pub async fn serve(listener: TcpListener, name: &'static str, handler: Handler) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                debug!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let response = handler(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// A response with a static body.
pub fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// A response with `body` and its content type.
pub fn body(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// `None` when the method may read a resource (GET, HEAD); the 405 otherwise.
pub fn refuse_writes<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    Some(r)
}
