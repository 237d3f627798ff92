//! `--bind` addresses in every form gunicorn takes: `HOST:PORT`, `[V6]:PORT`, `:PORT`
//! (all interfaces), `tcp://HOST:PORT`, a bare `HOST` (port 8000), `unix:PATH` and
//! `fd://N`; and a bare `PORT`, which gunicorn would take as a host name, as
//! `0.0.0.0:PORT`, what everyone who writes it means.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::ConfigError;

/// One place to listen, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    /// A TCP address, resolved at start.
    Tcp(SocketAddr),
    /// A unix domain socket path.
    Unix(PathBuf),
    /// An already-open listening socket inherited from the parent (socket activation).
    Fd(RawFd),
}

impl BindSpec {
    /// Parses one `--bind` value; errors name the value and the accepted forms.
    pub fn parse(s: &str) -> Result<BindSpec, ConfigError> {
        let err = |why: &str| {
            ConfigError(format!(
                "--bind {s}: {why} (expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N)"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err("empty socket path"));
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = s.strip_prefix("fd://") {
            let fd: RawFd = fd
                .parse()
                .map_err(|_| err("not a file descriptor number"))?;
            if fd < 0 {
                return Err(err("negative file descriptor"));
            }
            return Ok(BindSpec::Fd(fd));
        }
        let s = s.strip_prefix("tcp://").unwrap_or(s);
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindSpec::Tcp(addr));
        }
        // `:PORT` (Cloud Run's `--bind :$PORT`) and a bare `PORT`: every interface.
        let port_only = s.strip_prefix(':').unwrap_or(s);
        if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
            let port = port_only.parse::<u16>().map_err(|_| err("bad port"))?;
            return Ok(BindSpec::Tcp(SocketAddr::from(([0, 0, 0, 0], port))));
        }
        // A bare host means port 8000, as in gunicorn.
        let bare_v6 = s.starts_with('[') && s.ends_with(']');
        let with_port = if bare_v6 || !s.contains(':') {
            format!("{s}:8000")
        } else {
            s.to_string()
        };
        let (host, port) = with_port.rsplit_once(':').ok_or_else(|| err("no port"))?;
        port.parse::<u16>().map_err(|_| err("bad port"))?;
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let mut addrs = with_port
            .to_socket_addrs()
            .map_err(|e| err(&format!("cannot resolve: {e}")))?;
        addrs
            .next()
            .map(BindSpec::Tcp)
            .ok_or_else(|| err("host resolves to no address"))
    }
}

impl std::fmt::Display for BindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindSpec::Tcp(a) => write!(f, "http://{a}"),
            BindSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            BindSpec::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            BindSpec::parse("127.0.0.1:8000").unwrap(),
            BindSpec::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            BindSpec::parse("[::1]:9000").unwrap(),
            BindSpec::Tcp("[::1]:9000".parse().unwrap())
        );
        assert_eq!(
            BindSpec::parse("unix:/tmp/x.sock").unwrap(),
            BindSpec::Unix("/tmp/x.sock".into())
        );
        assert_eq!(BindSpec::parse("fd://3").unwrap(), BindSpec::Fd(3));
        assert!(matches!(
            BindSpec::parse("localhost:8001").unwrap(),
            BindSpec::Tcp(a) if a.port() == 8001
        ));
        assert!(matches!(
            BindSpec::parse("127.0.0.1").unwrap(),
            BindSpec::Tcp(a) if a.port() == 8000
        ));
        let any = |port| BindSpec::Tcp(SocketAddr::from(([0, 0, 0, 0], port)));
        assert_eq!(BindSpec::parse(":8080").unwrap(), any(8080));
        assert_eq!(BindSpec::parse("8081").unwrap(), any(8081));
        assert_eq!(BindSpec::parse("0.0.0.0").unwrap(), any(8000));
        assert_eq!(BindSpec::parse("tcp://0.0.0.0:9").unwrap(), any(9));
        assert_eq!(
            BindSpec::parse("[::]:80").unwrap(),
            BindSpec::Tcp("[::]:80".parse().unwrap())
        );
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        for bad in [
            "unix:",
            "fd://x",
            "fd://-1",
            "1.2.3.4:99999",
            ":99999",
            ":",
            "host:port",
        ] {
            let e = BindSpec::parse(bad).unwrap_err();
            assert!(e.0.contains("--bind"), "{bad}: {e}");
        }
    }
}
