//! What sits between an accepted socket and HTTP when `--proxy-protocol` or TLS
//! (`--certfile`) is on: the PROXY header first (from `--proxy-allow-from` peers),
//! then the TLS handshake, then the connection is served like any other.
//!
//! The plain path (`conn.rs`) never comes here, so neither costs a plain connection
//! anything; a wrapped connection pays one boxed stream (one dynamic call per read
//! or write), which keeps the HTTP code compiled once for all the combinations.
//! The kernel receive stamps still come from the TCP reads: `StampedTcp` is the
//! lowest layer, below the PROXY reader and rustls.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::arrival::{Arrival, StampedTcp};
use super::conn::{serve, AcceptCtx, Conn};
use super::proxy;
use super::rewind::Rewind;
use super::service::RequestService;
use crate::config::gunicorn::{Gunicorn, ProxyProtocol};
use crate::contract::{Local, Peer, Transport};
use crate::tracker::TrustedPeers;

/// The layers a worker puts under HTTP, from the validated config.
pub struct Layers {
    tls: Option<TlsAcceptor>,
    proxy: Option<(ProxyProtocol, TrustedPeers)>,
    /// How long the PROXY header and the TLS handshake may take (`--header-timeout`,
    /// which bounds a request's head the same way).
    timeout: Duration,
}

impl Layers {
    /// `None` when the connections are plain HTTP.
    pub fn new(g: &Gunicorn, timeout: Duration) -> Option<Layers> {
        let tls = g
            .tls
            .server
            .as_ref()
            .map(|s| TlsAcceptor::from(s.0.clone()));
        let proxy = (g.proxy_protocol != ProxyProtocol::Off)
            .then(|| (g.proxy_protocol, g.proxy_allow.clone()));
        (tls.is_some() || proxy.is_some()).then_some(Layers {
            tls,
            proxy,
            timeout,
        })
    }
}

/// One stream type for every combination of layers.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Reads the PROXY header, does the TLS handshake, then serves the connection; a
/// connection that fails either is closed (and counted closed).
pub(super) async fn serve_layered(
    layers: &Layers,
    conn: Conn,
    peer: Peer,
    local: Arc<Local>,
    ctx: &AcceptCtx,
) {
    let (mut io, arrival): (Box<dyn Io>, Option<Arrival>) = match conn {
        Conn::Tcp(s) => {
            let (s, a) = StampedTcp::new(s);
            (Box::new(s), Some(a))
        }
        Conn::Unix(s) => (Box::new(s), None),
    };
    let mut transport = Transport::default();
    if let Some((mode, allow)) = &layers.proxy {
        // A unix-socket peer is a local process, trusted as for X-Forwarded-*.
        let peer_ip: Option<IpAddr> = match peer {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix => None,
        };
        if peer_ip.is_none_or(|ip| allow.contains(ip)) {
            match proxy::read_header(&mut io, *mode, layers.timeout).await {
                Ok((proxied, rest)) => {
                    transport.proxied = Some(proxied);
                    if !rest.is_empty() {
                        io = Box::new(Rewind::new(rest, io));
                    }
                }
                Err(reason) => {
                    tracing::warn!(peer = ?peer_ip, %reason, "PROXY protocol: connection closed");
                    return ctx.closed();
                }
            }
        }
    }
    if let Some(tls) = &layers.tls {
        match tokio::time::timeout(layers.timeout, tls.accept(io)).await {
            Ok(Ok(s)) => {
                io = Box::new(s);
                transport.tls = true;
            }
            Ok(Err(e)) => {
                tracing::info!(peer = ?peer, error = %e, "TLS handshake failed");
                return ctx.closed();
            }
            Err(_) => {
                tracing::info!(peer = ?peer, "TLS handshake timed out");
                return ctx.closed();
            }
        }
    }
    let to_app = ctx.dispatch.connection(peer, local, transport);
    let svc = RequestService::new(to_app, arrival, ctx.http.limits, ctx.stop.clone(), peer);
    serve(io, svc, ctx).await
}
