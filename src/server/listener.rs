//! Listening sockets: bound once (by the master), inherited by workers as fds.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use socket2::{Domain, Socket, Type};

use crate::config::BindSpec;
use crate::contract::Local;

/// A bound, listening socket ready for tokio.
pub enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    /// The SERVER_NAME / SERVER_PORT this socket stands for.
    pub fn local(&self) -> Arc<Local> {
        Arc::new(match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => Local::new(a.ip().to_string(), a.port().to_string()),
                Err(_) => Local::new("localhost".into(), "80".into()),
            },
            Listener::Unix(l) => Local::new(
                l.local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "localhost".into()),
                String::new(),
            ),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Human form for the "Listening at" line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(p) => format!("unix:{p}"),
                None => "unix".into(),
            },
        }
    }

    /// Wraps an inherited fd, telling TCP from unix by its address family.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Listener> {
        let sock = Socket::from(fd);
        let is_unix = sock.local_addr()?.domain() == Domain::UNIX;
        sock.set_nonblocking(true)?;
        let fd = OwnedFd::from(sock);
        Ok(if is_unix {
            Listener::Unix(std::os::unix::net::UnixListener::from(fd))
        } else {
            Listener::Tcp(std::net::TcpListener::from(fd))
        })
    }
}

/// Binds one `--bind` address; errors say what to change.
pub fn bind(spec: &BindSpec, backlog: u32, unix_mode: u32) -> anyhow::Result<Listener> {
    let backlog = backlog.min(i32::MAX as u32) as i32;
    match spec {
        BindSpec::Tcp(addr) => {
            let sock = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
            sock.set_reuse_address(true)?;
            if let SocketAddr::V6(_) = addr {
                sock.set_only_v6(true)?;
            }
            sock.bind(&(*addr).into()).map_err(|e| {
                anyhow::anyhow!(
                    "cannot bind --bind {addr}: {e}; is another server using that port?"
                )
            })?;
            sock.listen(backlog)?;
            sock.set_nonblocking(true)?;
            Ok(Listener::Tcp(sock.into()))
        }
        BindSpec::Unix(path) => {
            if path.exists() {
                // A stale socket from a previous run; anything else is refused.
                let meta = std::fs::symlink_metadata(path)?;
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    anyhow::bail!(
                        "cannot bind --bind unix:{}: the path exists and is not a socket",
                        path.display()
                    );
                }
                std::fs::remove_file(path)?;
            }
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let addr = socket2::SockAddr::unix(path)?;
            sock.bind(&addr)
                .map_err(|e| anyhow::anyhow!("cannot bind --bind unix:{}: {e}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(unix_mode))?;
            sock.listen(backlog)?;
            sock.set_nonblocking(true)?;
            Ok(Listener::Unix(OwnedFd::from(sock).into()))
        }
        BindSpec::Fd(fd) => {
            // Taking ownership of a number that is not an open fd would make its
            // eventual close an IO-safety abort; ask the kernel first.
            // SAFETY: F_GETFD only reads the descriptor flags of any fd number.
            if unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
                anyhow::bail!(
                    "--bind fd://{fd}: not an open file descriptor: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: the fd is open, and the user gave it to this process to serve
            // (socket activation); it is checked to be a listening socket below.
            let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
            let sock = Socket::from(owned);
            if sock.local_addr().is_err() || !sock.is_listener().unwrap_or(false) {
                // Not ours to close: it was not a listening socket after all.
                let _ = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(sock));
                anyhow::bail!("--bind fd://{fd}: not a listening socket");
            }
            // Workers get it over the control socket; later ones need not inherit it.
            sock.set_cloexec(true)?;
            Listener::from_fd(OwnedFd::from(sock)).map_err(Into::into)
        }
    }
}
