//! When a request's bytes reached this host, from the kernel (`SO_TIMESTAMPNS`), so
//! that `server_wait` also counts the time a request sat in the socket's receive
//! buffer before rwsgi read it: behind a busy IO thread (a request running inline
//! with `--threads 1`, or a burst being parsed), and in the accept queue.
//!
//! TCP reads go through `recvmsg` and keep the timestamp of the last segment read;
//! [`Arrival::instant`] turns it into the monotonic clock the tracker uses. A unix
//! socket has no such stamp and falls back to the moment the head was parsed.

use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The newest kernel receive time of one connection, in nanoseconds since the Unix
/// epoch; 0 while unknown.
#[derive(Clone, Default)]
pub struct Arrival(Arc<AtomicU64>);

/// A stamp older than this is not believed (a clock step, not a queue).
const MAX_AGE: Duration = Duration::from_secs(3600);

impl Arrival {
    /// When the bytes read last arrived: on the monotonic clock (`now` when unknown),
    /// and on the wall clock, as time since the Unix epoch (`None` when unknown). The
    /// second lets the queue stamp be judged at dispatch without another wall-clock
    /// read: dispatch is that moment plus the `server_wait`.
    pub fn instant(&self, now: Instant) -> (Instant, Option<Duration>) {
        let ns = self.0.load(Ordering::Relaxed);
        if ns == 0 {
            return (now, None);
        }
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let age = Duration::from_nanos(wall.saturating_sub(ns));
        match now.checked_sub(age) {
            Some(arrived) if age <= MAX_AGE => (arrived, Some(Duration::from_nanos(wall.min(ns)))),
            _ => (now, Some(Duration::from_nanos(wall))),
        }
    }
}

/// A TCP stream whose reads record [`Arrival`].
pub struct StampedTcp {
    inner: TcpStream,
    arrival: Arrival,
}

impl StampedTcp {
    /// Turns on receive timestamps for `inner`; without them (an old kernel) reads
    /// work as usual and the arrival stays unknown.
    pub fn new(inner: TcpStream) -> (StampedTcp, Arrival) {
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                inner.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "no SO_TIMESTAMPNS");
        }
        let arrival = Arrival::default();
        (
            StampedTcp {
                inner,
                arrival: arrival.clone(),
            },
            arrival,
        )
    }
}

/// One `recvmsg` into `dst`; stores the segment's receive time in `arrival`.
fn recv_stamped(
    fd: libc::c_int,
    dst: &mut [std::mem::MaybeUninit<u8>],
    arrival: &AtomicU64,
) -> std::io::Result<usize> {
    // Room for one SCM_TIMESTAMPNS (a timespec) with its header, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: zeroed msghdr is a valid "no name, no control" header; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the stated sizes for the whole call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_* walk only that.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let ns = (ts.tv_sec as u64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add(ts.tv_nsec as u64);
                if ns != 0 {
                    arrival.store(ns, Ordering::Relaxed);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n as usize)
}

/// A read that did not fill its buffer emptied the socket: drop the stream's
/// read readiness now, so the next read waits for epoll instead of making a
/// `recvmsg` that can only fail with `EAGAIN` (one system call in three per
/// keep-alive request, before). Safe with edge-triggered epoll: bytes that arrive
/// after that read raise a new event, and tokio only clears the readiness it saw
/// before this call (a newer event keeps it set).
fn forget_readable(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            std::task::ready!(this.inner.poll_read_ready(cx))?;
            let fd = this.inner.as_raw_fd();
            // SAFETY: recvmsg only writes into the unfilled part, and only the `n`
            // bytes it reports are marked initialized.
            let dst = unsafe { buf.unfilled_mut() };
            let room = dst.len();
            match this.inner.try_io(Interest::READABLE, || {
                recv_stamped(fd, dst, &this.arrival.0)
            }) {
                Ok(n) => {
                    let short = n > 0 && n < room;
                    // SAFETY: the kernel wrote `n` bytes at the start of `dst`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    if short {
                        forget_readable(&this.inner);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

forward_async_write!(StampedTcp);

#[cfg(test)]
mod tests {
    use super::*;

    fn wall_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    #[test]
    fn a_kernel_stamp_gives_both_clocks_of_the_arrival() {
        let arrival = Arrival::default();
        let now = Instant::now();
        assert_eq!(arrival.instant(now), (now, None), "no stamp yet");

        let stamp = wall_ns() - 50_000_000;
        arrival.0.store(stamp, Ordering::Relaxed);
        let (at, wall) = arrival.instant(now);
        let age = now - at;
        assert!(
            age >= Duration::from_millis(50) && age < Duration::from_millis(150),
            "{age:?}"
        );
        assert_eq!(wall, Some(Duration::from_nanos(stamp)));
    }

    #[test]
    fn an_implausible_stamp_falls_back_to_now() {
        let arrival = Arrival::default();
        let now = Instant::now();
        arrival
            .0
            .store(wall_ns() - 2 * MAX_AGE.as_nanos() as u64, Ordering::Relaxed);
        let (at, wall) = arrival.instant(now);
        assert_eq!(at, now);
        let wall = wall.map(|w| w.as_nanos() as u64).unwrap_or(0);
        assert!(
            wall_ns().abs_diff(wall) < 1_000_000_000,
            "the wall clock read now"
        );
    }
}
