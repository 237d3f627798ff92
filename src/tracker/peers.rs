//! The set of peers whose headers are believed: `--queue-header-trusted-from` and
//! `--forwarded-allow-ips`.
//!
//! A queue stamp is just a header, so any client could send one claiming it waited an
//! hour and trigger a scale-out. Only the proxy's stamps count, and the proxy is known
//! by its address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::ConfigError;
use ipnet::{IpNet, Ipv4Net};

/// A list of IP addresses and CIDR networks (v4 and v6), or everyone (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedPeers {
    /// `*` was listed: every peer is trusted, as behind a proxy that is the only route in.
    any: bool,
    /// The listed networks; a bare address is a network of one. IPv4-mapped IPv6
    /// entries are stored as IPv4 so that they match however the kernel reports a peer.
    nets: Vec<IpNet>,
}

impl TrustedPeers {
    /// Parses a comma-separated list such as `127.0.0.1, ::1, 10.0.0.0/8, fd00::/8` or `*`.
    ///
    /// Blank entries (a trailing comma) are skipped; an empty list trusts nobody. The
    /// error names the first bad entry, so that the CLI can show it as it was typed.
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let mut peers = TrustedPeers::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                peers.any = true;
                continue;
            }
            let net = if entry.contains('/') {
                entry.parse::<IpNet>().ok()
            } else {
                entry.parse::<IpAddr>().ok().map(IpNet::from)
            };
            let net = net.ok_or_else(|| {
                format!(
                    "invalid trusted peer {entry:?}: expected an IP address, \
                     a CIDR network such as 10.0.0.0/8, or *"
                )
            })?;
            peers.nets.push(unmap(net).trunc());
        }
        Ok(peers)
    }

    /// Whether a request from `ip` may set trusted headers. Allocation-free: it runs on
    /// every request.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// Rewrites an IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps.
fn unmap(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), Some(prefix)) =
            (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
        {
            if let Ok(v4net) = Ipv4Net::new(v4, prefix) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}

impl FromStr for TrustedPeers {
    type Err = ConfigError;

    fn from_str(list: &str) -> Result<Self, ConfigError> {
        TrustedPeers::parse(list)
    }
}

/// Shows the normalized list, as the startup log line should.
impl fmt::Display for TrustedPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        if self.any {
            f.write_str("*")?;
            first = false;
        }
        for net in &self.nets {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if net.prefix_len() == net.max_prefix_len() {
                write!(f, "{}", net.addr())?;
            } else {
                write!(f, "{net}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_addresses_v4_and_v6() {
        let peers = TrustedPeers::parse("127.0.0.1,::1").unwrap();
        assert!(peers.contains(ip("127.0.0.1")));
        assert!(peers.contains(ip("::1")));
        assert!(!peers.contains(ip("127.0.0.2")));
        assert!(!peers.contains(ip("::2")));
        assert!(!peers.contains(ip("10.0.0.1")));
    }

    #[test]
    fn cidr_networks() {
        let peers = TrustedPeers::parse(" 10.0.0.0/8 , 192.168.1.0/24, fd00::/8 ").unwrap();
        assert!(peers.contains(ip("10.255.3.4")));
        assert!(peers.contains(ip("192.168.1.77")));
        assert!(!peers.contains(ip("192.168.2.1")));
        assert!(!peers.contains(ip("11.0.0.1")));
        assert!(peers.contains(ip("fd12:3456::1")));
        assert!(!peers.contains(ip("fe80::1")));
        // Host bits in the entry are ignored, as for any CIDR.
        let peers = TrustedPeers::parse("10.1.2.3/16").unwrap();
        assert!(peers.contains(ip("10.1.200.1")));
        assert!(!peers.contains(ip("10.2.0.1")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let peers = TrustedPeers::parse("10.0.0.0/8").unwrap();
        assert!(peers.contains(ip("::ffff:10.1.2.3")));
        assert!(!peers.contains(ip("::ffff:11.1.2.3")));
        // And a mapped entry matches a plain IPv4 peer.
        let peers = TrustedPeers::parse("::ffff:192.168.0.0/112,::ffff:127.0.0.1").unwrap();
        assert!(peers.contains(ip("192.168.7.8")));
        assert!(peers.contains(ip("127.0.0.1")));
        assert!(!peers.contains(ip("192.169.0.1")));
    }

    #[test]
    fn star_trusts_everyone_and_empty_trusts_nobody() {
        let all = TrustedPeers::parse("*").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(all.contains(ip("2001:db8::1")));
        let none = TrustedPeers::parse("").unwrap();
        assert!(!none.contains(ip("127.0.0.1")));
        let trailing = TrustedPeers::parse("127.0.0.1,").unwrap();
        assert!(trailing.contains(ip("127.0.0.1")));
    }

    #[test]
    fn bad_entries_are_named() {
        for (list, bad) in [
            ("127.0.0.1,localhost", "localhost"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("::1/129", "::1/129"),
            ("10.0.0.256", "10.0.0.256"),
            ("10.0.0.0/", "10.0.0.0/"),
            ("10.0.0.0/8/8", "10.0.0.0/8/8"),
            ("**", "**"),
            ("[::1]", "[::1]"),
        ] {
            let err = TrustedPeers::parse(list).unwrap_err().0;
            assert!(err.contains(&format!("{bad:?}")), "{list}: {err}");
        }
        assert!("1.2.3.4,nope".parse::<TrustedPeers>().is_err());
    }

    #[test]
    fn display_shows_the_normalized_list() {
        let peers = TrustedPeers::parse("*, 127.0.0.1, 10.9.0.0/8, ::ffff:1.2.3.4").unwrap();
        assert_eq!(peers.to_string(), "*,127.0.0.1,10.0.0.0/8,1.2.3.4");
    }
}
