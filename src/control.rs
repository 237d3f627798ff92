//! The control channel between the master and each worker: a unix socket pair,
//! carrying length-prefixed JSON frames, and the listening sockets themselves
//! (SCM_RIGHTS) once the worker has loaded the app.
//!
//! Sockets travel this way so the master can bind only after the app imported
//! cleanly, and a replacement worker gets them without the master re-binding.
//!
//! With `--preload`, the master also talks to the process that imported the app once
//! and forks the workers (`zygote.rs`): [`ToZygote`] and [`FromZygote`], a worker's
//! control socket passed along with SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Environment variable naming a worker's end of the control socket.
pub const CONTROL_FD_ENV: &str = "RWSGI_CONTROL_FD";
/// Environment variable carrying a worker's id (1-based, unique per master).
pub const WORKER_ID_ENV: &str = "RWSGI_WORKER_ID";
/// Environment variable naming the `--preload` process's end of its control socket.
pub const ZYGOTE_FD_ENV: &str = "RWSGI_ZYGOTE_FD";

/// The largest frame either side accepts; a snapshot is a few KiB.
const MAX_FRAME: usize = 16 << 20;
/// The most sockets one `--bind` list may pass.
const MAX_FDS: usize = 64;

/// The request a busy Python thread has been running the longest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Busy {
    /// How long it has run, in milliseconds.
    pub age_ms: u64,
    /// `METHOD /path` for the timeout log line.
    pub request: String,
}

/// Worker → master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToMaster {
    /// The app imported; send the sockets. Carries QUEUE_TIME_TRACKER_* values found
    /// in a Django project's settings (empty otherwise).
    Ready {
        pid: u32,
        django: std::collections::BTreeMap<String, String>,
    },
    /// Sent every second from the worker's runtime, never from a Python thread, so a
    /// stuck app cannot fake liveness.
    Heartbeat { served: u64, oldest: Option<Busy> },
    /// The tracker's interval snapshot (encoded), answering `Collect` with the same
    /// `seq`, or `seq == u64::MAX` for the last one before exit.
    Snapshot { seq: u64, data: Vec<u8> },
    /// `--max-requests` reached: please start a replacement, then stop me.
    Recycle,
}

/// Master → worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// The listening sockets ride along as SCM_RIGHTS.
    Listen,
    /// Send your tracker snapshot for the interval that just ended.
    Collect { seq: u64 },
}

/// Master → the `--preload` process (`zygote.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToZygote {
    /// Fork worker `id`; its end of a fresh control socket rides along as SCM_RIGHTS.
    /// `master` is the pid the worker must end up the child of.
    Fork { id: u32, master: u32 },
}

/// The `--preload` process → master.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FromZygote {
    /// The app imported; ready to fork workers. Carries QUEUE_TIME_TRACKER_* values
    /// found in a Django project's settings, as a worker's `Ready` does.
    Ready {
        django: std::collections::BTreeMap<String, String>,
    },
    /// Worker forked, now a child of the master.
    Forked { pid: u32 },
}

/// Sequence number of the final snapshot a draining worker sends.
pub const FINAL_SEQ: u64 = u64::MAX;

/// Encodes a frame: 4-byte big-endian length, then JSON.
pub fn encode<T: Serialize>(msg: &T) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body; an error means the peer is broken, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(body).map_err(std::io::Error::other)
}

/// Checks a frame length read from the wire.
pub fn frame_len(header: [u8; 4]) -> std::io::Result<usize> {
    let n = u32::from_be_bytes(header) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::other(format!("control frame of {n} bytes")));
    }
    Ok(n)
}

/// Reads one frame body from an async stream. `None` at end of stream or on a broken
/// frame (the peer is gone or confused: either way the channel is done).
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await.ok()?;
    let n = frame_len(header).ok()?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Blocking write of one frame.
pub fn send_blocking<T: Serialize>(s: &mut UnixStream, msg: &T) -> std::io::Result<()> {
    s.write_all(&encode(msg)?)
}

/// Sends `ToWorker::Listen` with the sockets attached. It is the first frame on a
/// fresh socket and tiny, so one `sendmsg` carries it whole.
pub fn send_listen(s: &impl AsRawFd, fds: &[RawFd]) -> std::io::Result<()> {
    send_with_fds(s, &ToWorker::Listen, fds)
}

/// Blocking read of the `Listen` frame and its sockets (the first thing a worker
/// receives).
pub fn recv_listen(s: &mut UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    match recv_with_fds::<ToWorker>(s)? {
        (ToWorker::Listen, fds) => Ok(fds),
        (other, _) => Err(std::io::Error::other(format!(
            "expected Listen from the master, got {other:?}"
        ))),
    }
}

/// Sends one small frame with `fds` attached (SCM_RIGHTS) in one `sendmsg`.
pub fn send_with_fds<T: Serialize>(
    s: &impl AsRawFd,
    msg: &T,
    fds: &[RawFd],
) -> std::io::Result<()> {
    let frame = encode(msg)?;
    let iov = [IoSlice::new(&frame)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<()>(s.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(std::io::Error::from)?;
    if n < frame.len() {
        return Err(std::io::Error::other("control socket took a partial frame"));
    }
    Ok(())
}

/// Blocking read of one frame and the fds that came with it (close-on-exec).
pub fn recv_with_fds<T: for<'de> Deserialize<'de>>(
    s: &mut UnixStream,
) -> std::io::Result<(T, Vec<OwnedFd>)> {
    let mut header = [0u8; 4];
    let mut fds = Vec::new();
    let mut got = 0;
    while got < 4 {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut header[got..])];
        let msg = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        if msg.bytes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the other end closed the control socket",
            ));
        }
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(list) = c {
                // SAFETY: the kernel just installed these fds in this process for us.
                fds.extend(
                    list.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        got += msg.bytes;
    }
    let mut body = vec![0u8; frame_len(header)?];
    s.read_exact(&mut body)?;
    Ok((decode::<T>(&body)?, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = ToMaster::Heartbeat {
            served: 3,
            oldest: Some(Busy {
                age_ms: 10,
                request: "GET /".into(),
            }),
        };
        let f = encode(&msg).unwrap();
        let n = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, f.len() - 4);
        assert_eq!(decode::<ToMaster>(&f[4..]).unwrap(), msg);
        assert!(decode::<ToMaster>(b"garbage").is_err());
        assert!(frame_len([0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn sockets_cross_the_channel() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        send_listen(&a, &[l.as_raw_fd()]).unwrap();
        let fds = recv_listen(&mut b).unwrap();
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap().port(), port);
    }
}
