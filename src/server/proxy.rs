//! The PROXY protocol (`--proxy-protocol`, HAProxy's v1 text and v2 binary headers,
//! as AWS NLB and HAProxy send them): read once per connection, below TLS and HTTP,
//! from `--proxy-allow-from` peers only. The header is parsed by the `ppp` crate;
//! this file only reads until a header is complete and says what it announced.
//!
//! A peer outside `--proxy-allow-from` is never asked for a header: what it sends is
//! HTTP (or TLS), so a PROXY line from it is refused by the HTTP parser as a bad
//! request and cannot pose as another client. From an allowed peer, a missing or
//! malformed header closes the connection (the proxy in front is misconfigured, and
//! guessing would attribute its requests to the proxy).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::gunicorn::ProxyProtocol;
use crate::contract::Proxied;

/// v2's fixed part (signature, version/command, family, length).
const V2_FIXED: usize = 16;
/// v2's signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1's prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// v1's longest line, CRLF included.
const V1_MAX: usize = 107;
/// The longest header read: v2's fixed part plus its largest length field.
const MAX_HEADER: usize = V2_FIXED + u16::MAX as usize;

/// Why a connection from an allowed proxy is closed before HTTP: the log line's
/// reason.
#[derive(Debug)]
pub enum ProxyError {
    /// No whole header within `--header-timeout`.
    Timeout(Duration),
    /// Longer than any header can be (v2's fixed part plus its largest length).
    TooLong,
    /// A v1 line without its end within 107 bytes.
    V1TooLong,
    /// The socket failed.
    Read(std::io::Error),
    /// The peer closed: before sending anything (`false`), or inside the header.
    Closed { partial: bool },
    /// The bytes are not a header of the version(s) `--proxy-protocol` accepts.
    NotProxy(&'static str),
    /// A header of `version` (1 or 2) that `ppp` refused.
    Malformed { version: u8, detail: String },
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::Timeout(t) => write!(f, "no complete PROXY header within {t:?}"),
            ProxyError::TooLong => f.write_str("PROXY header too long"),
            ProxyError::V1TooLong => write!(f, "PROXY v1 line longer than {V1_MAX} bytes"),
            ProxyError::Read(e) => write!(f, "reading the PROXY header: {e}"),
            ProxyError::Closed { partial: false } => {
                f.write_str("closed before sending a PROXY header")
            }
            ProxyError::Closed { partial: true } => {
                f.write_str("closed in the middle of the PROXY header")
            }
            ProxyError::NotProxy(wanted) => {
                write!(f, "the connection did not start with {wanted}")
            }
            ProxyError::Malformed { version, detail } => {
                write!(f, "malformed PROXY v{version} header: {detail}")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

/// Reads the PROXY header at the start of `io` within `timeout`: what it announced,
/// and the bytes read past it (the start of the TLS or HTTP stream).
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
    mode: ProxyProtocol,
    timeout: Duration,
) -> Result<(Proxied, Bytes), ProxyError> {
    match tokio::time::timeout(timeout, read(io, mode)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout(timeout)),
    }
}

async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    mode: ProxyProtocol,
) -> Result<(Proxied, Bytes), ProxyError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if buf.len() >= MAX_HEADER {
            return Err(ProxyError::TooLong);
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len());
        }
        let n = io.read_buf(&mut buf).await.map_err(ProxyError::Read)?;
        if n == 0 {
            return Err(ProxyError::Closed {
                partial: !buf.is_empty(),
            });
        }
        if let Some((proxied, used)) = parse(&buf, mode)? {
            let rest = buf.split_off(used).freeze();
            return Ok((proxied, rest));
        }
    }
}

/// The header at the start of `buf`, with its length; `None` while incomplete.
pub fn parse(buf: &[u8], mode: ProxyProtocol) -> Result<Option<(Proxied, usize)>, ProxyError> {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    let (v1_ok, v2_ok) = match mode {
        ProxyProtocol::V1 => (true, false),
        ProxyProtocol::V2 => (false, true),
        ProxyProtocol::Auto | ProxyProtocol::Off => (true, true),
    };
    let maybe_v1 = v1_ok && starts(V1_PREFIX);
    let maybe_v2 = v2_ok && starts(V2_SIGNATURE);
    if !maybe_v1 && !maybe_v2 {
        let wanted = match (v1_ok, v2_ok) {
            (true, false) => "a PROXY v1 header",
            (false, true) => "a PROXY v2 header",
            _ => "a PROXY header",
        };
        return Err(ProxyError::NotProxy(wanted));
    }
    if !maybe_v2 && !buf[..buf.len().min(V1_MAX)].contains(&b'\n') {
        // v1 is one line: parse it whole (ppp can take a line cut after a space for a
        // malformed one).
        return if buf.len() < V1_MAX {
            Ok(None)
        } else {
            Err(ProxyError::V1TooLong)
        };
    }
    let result = if maybe_v2 {
        HeaderResult::V2(v2::Header::try_from(buf))
    } else {
        HeaderResult::V1(v1::Header::try_from(buf))
    };
    if result.is_incomplete() {
        return Ok(None);
    }
    match result {
        HeaderResult::V1(Ok(h)) => Ok(Some((from_v1(&h.addresses), h.header.len()))),
        HeaderResult::V2(Ok(h)) => Ok(Some((from_v2(&h), h.len()))),
        HeaderResult::V1(Err(e)) => Err(ProxyError::Malformed {
            version: 1,
            detail: e.to_string(),
        }),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Malformed {
            version: 2,
            detail: e.to_string(),
        }),
    }
}

fn from_v1(a: &v1::Addresses) -> Proxied {
    match a {
        v1::Addresses::Tcp4(a) => Proxied {
            protocol: "TCP4",
            addrs: Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
        },
        v1::Addresses::Tcp6(a) => Proxied {
            protocol: "TCP6",
            addrs: Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
        },
        // The proxy's own connection (a health check): the peer is the client.
        v1::Addresses::Unknown => Proxied {
            protocol: "UNKNOWN",
            addrs: None,
        },
    }
}

fn from_v2(h: &v2::Header<'_>) -> Proxied {
    if h.command == v2::Command::Local {
        // The proxy's own connection (a health check): the peer is the client.
        return Proxied {
            protocol: "LOCAL",
            addrs: None,
        };
    }
    match h.addresses {
        v2::Addresses::IPv4(a) => Proxied {
            protocol: "TCP4",
            addrs: Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
        },
        v2::Addresses::IPv6(a) => Proxied {
            protocol: "TCP6",
            addrs: Some((
                SocketAddr::from((a.source_address, a.source_port)),
                SocketAddr::from((a.destination_address, a.destination_port)),
            )),
        },
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Proxied {
            protocol: "UNSPEC",
            addrs: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, tlv: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x21); // v2, PROXY
        b.push(0x11); // INET, STREAM
        b.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(tlv);
        b
    }

    #[test]
    fn v1_and_v2_give_the_client_and_their_length() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        let (p, n) = parse(line, ProxyProtocol::Auto).unwrap().unwrap();
        assert_eq!(&line[n..n + 3], b"GET");
        assert_eq!(p.addrs.unwrap().0, "203.0.113.7:51234".parse().unwrap());
        assert_eq!(p.protocol, "TCP4");

        // An AWS NLB header carries a TLV (the VPC endpoint id) after the addresses.
        let mut b = v2_tcp4(
            [198, 51, 100, 9],
            40000,
            [10, 0, 0, 2],
            80,
            &[0xEA, 0, 3, 1, 2, 3],
        );
        let len = b.len();
        b.extend_from_slice(b"GET /");
        let (p, n) = parse(&b, ProxyProtocol::V2).unwrap().unwrap();
        assert_eq!(n, len);
        assert_eq!(p.addrs.unwrap().0, "198.51.100.9:40000".parse().unwrap());
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete_and_never_an_error() {
        let v1 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".to_vec();
        let v2 = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, &[]);
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert!(
                    matches!(parse(&h[..cut], ProxyProtocol::Auto), Ok(None)),
                    "{cut}"
                );
            }
            assert!(parse(&h, ProxyProtocol::Auto).unwrap().is_some());
        }
    }

    #[test]
    fn the_wrong_version_or_plain_http_is_refused() {
        assert!(parse(b"GET / HTTP/1.1\r\n", ProxyProtocol::Auto).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyProtocol::V2).is_err());
        let v2 = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, &[]);
        assert!(parse(&v2, ProxyProtocol::V1).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", ProxyProtocol::Auto).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", ProxyProtocol::V1).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap property check: every short byte string, and every truncation or
        // corruption of valid headers, gives a result, never a panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
            v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, &[1, 0, 1, 9]),
        ];
        for _ in 0..20_000 {
            let mut b = base[(next() % 2) as usize].clone();
            let flips = next() % 4;
            for _ in 0..flips {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            b.truncate((next() as usize) % (b.len() + 1));
            for mode in [ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Auto] {
                if let Ok(Some((_, n))) = parse(&b, mode) {
                    assert!(n <= b.len());
                }
            }
        }
    }
}
