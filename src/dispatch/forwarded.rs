//! `X-Forwarded-For` and `X-Forwarded-Proto`, believed only from trusted peers
//! (`--forwarded-allow-ips`), so a client cannot pose as another address or scheme.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::contract::ip_text;
use crate::tracker::TrustedPeers;

/// The client address and scheme after applying trusted forwarding headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `None`: the peer's own address (its text is made once per connection).
    pub remote_addr: Option<String>,
    pub scheme: &'static str,
}

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Headers up to which a request's names are walked rather than hashed.
const SCAN_MAX: usize = 16;

/// `peer` is `None` for unix-socket clients, which are trusted as in gunicorn.
pub fn resolve(headers: &HeaderMap, peer: Option<IpAddr>, allow: &TrustedPeers) -> Forwarded {
    resolve_for(headers, peer.is_none_or(|p| allow.contains(p)), allow)
}

/// [`resolve`] for a peer already checked against `allow` (`peer_allowed`): the
/// check is made once per connection.
pub fn resolve_for(headers: &HeaderMap, peer_allowed: bool, allow: &TrustedPeers) -> Forwarded {
    let mut out = Forwarded {
        remote_addr: None,
        scheme: "http",
    };
    if !peer_allowed {
        return out;
    }
    // Most requests carry neither header: one walk over their few names costs less
    // than the two hash lookups below.
    if headers.len() <= SCAN_MAX
        && !headers
            .keys()
            .any(|n| n == X_FORWARDED_PROTO || n == X_FORWARDED_FOR)
    {
        return out;
    }
    if let Some(proto) = headers
        .get(&X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
    {
        // Several proxies may each append; the last one is our trusted peer's.
        let last = proto.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("https") {
            out.scheme = "https";
        } else if last.eq_ignore_ascii_case("http") {
            out.scheme = "http";
        }
    }
    // Walk X-Forwarded-For from the right, skipping our own trusted proxies: the first
    // address that is not one of them is the client as our proxies saw it. Any entry
    // that is not an address makes the whole header untrustworthy.
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(value) = value.to_str() else {
            return out;
        };
        for entry in value.split(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                Err(_) => return out,
            }
        }
    }
    let pick = chain
        .iter()
        .rev()
        .find(|ip| !allow.contains(**ip))
        .or(chain.first());
    if let Some(ip) = pick {
        out.remote_addr = Some(ip_text(*ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn trusted_proxy_sets_client_and_scheme() {
        let allow = TrustedPeers::parse("127.0.0.1,::1").unwrap();
        let f = resolve(
            &h(&[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ]),
            Some("127.0.0.1".parse().unwrap()),
            &allow,
        );
        assert_eq!(f.remote_addr.as_deref(), Some("203.0.113.7"));
        assert_eq!(f.scheme, "https");
    }

    #[test]
    fn untrusted_peer_is_ignored() {
        let allow = TrustedPeers::parse("127.0.0.1").unwrap();
        let f = resolve(
            &h(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
            ]),
            Some("198.51.100.1".parse().unwrap()),
            &allow,
        );
        assert_eq!(f.remote_addr, None, "the peer's own address");
        assert_eq!(f.scheme, "http");
    }

    #[test]
    fn forged_leftmost_entry_does_not_win() {
        let allow = TrustedPeers::parse("127.0.0.1,10.0.0.0/8").unwrap();
        let f = resolve(
            &h(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")]),
            Some("127.0.0.1".parse().unwrap()),
            &allow,
        );
        assert_eq!(f.remote_addr.as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn garbage_keeps_the_peer() {
        let allow = TrustedPeers::parse("*").unwrap();
        let f = resolve(
            &h(&[("x-forwarded-for", "not-an-ip")]),
            Some("127.0.0.1".parse().unwrap()),
            &allow,
        );
        assert_eq!(f.remote_addr, None, "the peer's own address");
        let unix = resolve(&h(&[("x-forwarded-for", "203.0.113.9")]), None, &allow);
        assert_eq!(unix.remote_addr.as_deref(), Some("203.0.113.9"));
    }
}
