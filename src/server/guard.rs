//! The head limits on hyper's side: hyper buffers a partial head up to its
//! `max_buf_size` (a head at every limit, about 827 KB at gunicorn's defaults) and
//! checks nothing until the head is complete. [`HeadGuard`] sits under hyper (with
//! `--hyper-only`, and after the own path hands a connection over) and holds each line
//! of a head to its limit while it arrives ([`rules::line_too_long`], the limits the
//! own path applies), so an endless line costs a connection one line's limit, not the
//! whole head's.
//!
//! A line past its limit ends the head there: the guard gives hyper the end of the
//! line and of the head, then nothing more from the client, and marks that head in
//! [`Cut`], so that the service answers it with the [`Refusal`] (414 or 431, its log
//! line) without calling the app. hyper writes that answer in its turn, after any
//! response still going out on the connection.
//!
//! To know where the next head starts, the guard follows the framing of each request
//! as hyper does: no body, `Content-Length` bytes, or chunks (RFC 9112 §7.1). A
//! framing it does not read exactly so (another transfer coding, an odd
//! `Content-Length` or chunk line, which hyper refuses anyway) makes it step aside
//! for the rest of the connection, leaving later heads to hyper's buffer limit, so
//! that it never takes body bytes for a head line.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::rules::{self, Refusal};
use crate::config::Limits;

/// Which head of a hyper connection the guard cut short, shared with the service
/// (`service.rs`), which counts the heads hyper hands it.
#[derive(Default)]
pub struct Cut {
    /// `2 × head number + (1 if the request line was too long)`; 0: none cut. Heads
    /// are numbered from 1 in the order hyper reads them.
    mark: AtomicUsize,
    /// Heads hyper has handed to the service so far.
    served: AtomicUsize,
}

impl Cut {
    /// The service's check for the head hyper hands it now: the refusal, if the guard
    /// cut this one.
    pub fn take_next(&self) -> Option<Refusal> {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let mark = self.mark.load(Ordering::Relaxed);
        marked(mark).filter(|_| mark / 2 == n)
    }

    fn mark(&self, head: usize, refusal: Refusal) {
        let line = usize::from(refusal == Refusal::RequestLineTooLarge);
        self.mark.store(head * 2 + line, Ordering::Relaxed);
    }
}

/// The refusal a mark of [`Cut`] stands for.
fn marked(mark: usize) -> Option<Refusal> {
    (mark != 0).then_some(if mark % 2 == 1 {
        Refusal::RequestLineTooLarge
    } else {
        Refusal::FieldTooLarge
    })
}

/// What the client may still send once its head was cut, read and dropped while the
/// answer is on its way (closing with unread bytes would reset the connection).
const DRAIN_BUDGET: usize = 1 << 20;
/// The start of a line kept to read `Content-Length` and `Transfer-Encoding`.
const KEPT: usize = 32;

/// Where the guard is in the byte stream.
enum State {
    Head(Lines),
    /// Bytes of a `Content-Length` body still to come.
    Body(u64),
    Chunks(Chunks),
    /// A framing the guard does not follow: everything passes.
    Aside,
    /// The end of a cut head, still to give to hyper.
    Ending(&'static [u8]),
    /// After a cut head: what the client sends is dropped, up to this many bytes more.
    Draining(usize),
}

/// The head being received.
#[derive(Default)]
struct Lines {
    /// Bytes of the current line so far (without `\n`).
    len: usize,
    /// The current line's last byte was `\r`.
    cr: bool,
    /// Lines of this head so far (the request line and field lines).
    lines: usize,
    /// The current line's first bytes.
    start: [u8; KEPT],
    /// `Content-Length`, when one came.
    length: Option<u64>,
    /// `Transfer-Encoding: chunked` came.
    chunked: bool,
    /// A framing the guard does not follow.
    aside: bool,
}

enum Scanned {
    /// The head continues past these bytes.
    More,
    /// The head ends after `at` bytes; `State` says what follows.
    End(usize, State),
    /// The line is past its limit: hyper gets the bytes before `at` and then the end.
    Cut(usize, Refusal),
}

impl Lines {
    fn scan(&mut self, bytes: &[u8], limits: &Limits) -> Scanned {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let Some(i) = rest.iter().position(|&c| c == b'\n') else {
                self.take(rest);
                // The line still arriving; its last byte may be the `\r` of its end.
                let len = self.len - usize::from(self.cr);
                return match rules::line_too_long(self.lines == 0, len, limits) {
                    Some(r) => Scanned::Cut(bytes.len() - usize::from(self.cr), r),
                    None => Scanned::More,
                };
            };
            self.take(&rest[..i]);
            let end = at + i;
            at = end + 1;
            let len = self.len - usize::from(self.cr);
            if len == 0 {
                // (Empty lines before the request line are skipped, as hyper does.)
                if self.lines > 0 {
                    let next = match (self.chunked, self.length) {
                        _ if self.aside => State::Aside,
                        (true, None) => State::Chunks(Chunks::Size(0, 0)),
                        (true, Some(_)) => State::Aside,
                        (false, Some(n)) if n > 0 => State::Body(n),
                        _ => State::Head(Lines::default()),
                    };
                    return Scanned::End(at, next);
                }
            } else {
                if let Some(r) = rules::line_too_long(self.lines == 0, len, limits) {
                    return Scanned::Cut(end - usize::from(self.cr), r);
                }
                if self.lines > 0 {
                    self.framing(len);
                }
                self.lines += 1;
            }
            self.len = 0;
            self.cr = false;
        }
        Scanned::More
    }

    fn take(&mut self, part: &[u8]) {
        if self.len < KEPT {
            let n = part.len().min(KEPT - self.len);
            self.start[self.len..self.len + n].copy_from_slice(&part[..n]);
        }
        if let Some(&last) = part.last() {
            self.cr = last == b'\r';
        }
        self.len += part.len();
    }

    /// Notes what a complete field line of `len` bytes says about the body.
    fn framing(&mut self, len: usize) {
        let line = &self.start[..len.min(KEPT)];
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return;
        };
        let name = &line[..colon];
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let chunked = line[colon + 1..]
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
            self.aside |= self.chunked || !chunked || len > KEPT;
            self.chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..].trim_ascii();
            let n = (len <= KEPT && !value.is_empty() && value.len() <= 16)
                .then_some(value)
                .filter(|v| v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            match (n, self.length) {
                (Some(n), None) => self.length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => self.aside = true,
            }
        }
    }
}

/// A chunked body being followed (RFC 9112 §7.1), strictly: anything hyper might
/// read otherwise makes the guard step aside.
enum Chunks {
    /// A chunk-size line: its size so far and its hex digits (0-16), or 17 past them
    /// (an extension), or 18 after its `\r`.
    Size(u64, u8),
    /// Bytes of a chunk's data still to come.
    Data(u64),
    /// The `\r\n` after a chunk's data: how many of its bytes came.
    DataEnd(u8),
    /// After the last chunk: the length of the trailer line so far (`\r` included).
    Trailer(usize),
}

impl Chunks {
    /// `Some(Ok(n))`: the body ends after `n` bytes; `None`: it goes on past them;
    /// `Some(Err(()))`: a framing not followed.
    fn follow(&mut self, bytes: &[u8]) -> Option<Result<usize, ()>> {
        let mut at = 0;
        while at < bytes.len() {
            let c = bytes[at];
            at += 1;
            *self = match *self {
                Chunks::Data(left) => {
                    let n = left.min((bytes.len() - at + 1) as u64);
                    at += n as usize - 1;
                    match left - n {
                        0 => Chunks::DataEnd(0),
                        left => Chunks::Data(left),
                    }
                }
                Chunks::Size(size, digits @ 0..=15) if c.is_ascii_hexdigit() => {
                    let v = (c as char).to_digit(16).unwrap_or(0);
                    Chunks::Size((size << 4) | u64::from(v), digits + 1)
                }
                Chunks::Size(size, 1..=17) if c == b';' || c == b' ' || c == b'\t' => {
                    Chunks::Size(size, 17)
                }
                Chunks::Size(size, 1..=17) if c == b'\r' => Chunks::Size(size, 18),
                Chunks::Size(size, 17) if c != b'\n' => Chunks::Size(size, 17),
                Chunks::Size(0, 18) if c == b'\n' => Chunks::Trailer(0),
                Chunks::Size(size, 18) if c == b'\n' => Chunks::Data(size),
                Chunks::DataEnd(0) if c == b'\r' => Chunks::DataEnd(1),
                Chunks::DataEnd(1) if c == b'\n' => Chunks::Size(0, 0),
                Chunks::Trailer(1) if c == b'\n' => return Some(Ok(at)),
                Chunks::Trailer(0) if c == b'\n' => return Some(Err(())),
                Chunks::Trailer(_) if c == b'\n' => Chunks::Trailer(0),
                Chunks::Trailer(n) => Chunks::Trailer(if c == b'\r' && n == 0 { 1 } else { 2 }),
                _ => return Some(Err(())),
            };
        }
        None
    }
}

/// The stream hyper reads, with each head line held to its limit (see the module).
pub struct HeadGuard<S> {
    inner: S,
    limits: Limits,
    state: State,
    /// Heads that have begun (the one being received included).
    heads: usize,
    cut: Arc<Cut>,
}

impl<S> HeadGuard<S> {
    /// `inner` starts at the start of a head (a new connection, or what the own path
    /// read from the head it hands over).
    pub fn new(inner: S, limits: Limits, cut: Arc<Cut>) -> Self {
        HeadGuard {
            inner,
            limits,
            state: State::Head(Lines::default()),
            heads: 1,
            cut,
        }
    }

    /// Follows the `new` bytes just read; returns how many of them hyper gets.
    fn follow(&mut self, new: &[u8]) -> usize {
        let mut at = 0;
        while at < new.len() {
            match &mut self.state {
                State::Aside | State::Ending(_) | State::Draining(_) => return new.len(),
                State::Body(left) => {
                    let n = (*left).min((new.len() - at) as u64);
                    *left -= n;
                    at += n as usize;
                    if *left == 0 {
                        self.state = State::Head(Lines::default());
                        self.heads += 1;
                    }
                }
                State::Chunks(chunks) => match chunks.follow(&new[at..]) {
                    Some(Ok(n)) => {
                        at += n;
                        self.state = State::Head(Lines::default());
                        self.heads += 1;
                    }
                    Some(Err(())) => self.state = State::Aside,
                    None => return new.len(),
                },
                State::Head(lines) => match lines.scan(&new[at..], &self.limits) {
                    Scanned::More => return new.len(),
                    Scanned::End(n, next) => {
                        at += n;
                        if matches!(next, State::Head(_)) {
                            self.heads += 1;
                        }
                        self.state = next;
                    }
                    Scanned::Cut(n, refusal) => {
                        self.cut.mark(self.heads, refusal);
                        // A request line cut before its version gets one, so that hyper
                        // parses the head and hands it to the service.
                        let kept = &new[..at + n];
                        let versioned =
                            kept.ends_with(b" HTTP/1.1") || kept.ends_with(b" HTTP/1.0");
                        self.state = State::Ending(
                            if refusal == Refusal::RequestLineTooLarge && !versioned {
                                b" HTTP/1.1\r\n\r\n"
                            } else {
                                b"\r\n\r\n"
                            },
                        );
                        return at + n;
                    }
                },
            }
        }
        new.len()
    }
}

impl<S> HeadGuard<S> {
    /// Gives hyper what fits of the end of a cut head, if one is due.
    fn put_end(&mut self, buf: &mut ReadBuf<'_>) {
        if let State::Ending(end) = &mut self.state {
            let n = end.len().min(buf.remaining());
            buf.put_slice(&end[..n]);
            *end = &end[n..];
            if end.is_empty() {
                self.state = State::Draining(DRAIN_BUDGET);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Aside => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Ending(_) => {
                    this.put_end(buf);
                    return Poll::Ready(Ok(()));
                }
                State::Draining(budget) => {
                    if *budget == 0 {
                        // hyper is woken by its answer going out, then closes.
                        return Poll::Pending;
                    }
                    let before = buf.filled().len();
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let n = buf.filled().len() - before;
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    *budget = budget.saturating_sub(n);
                    buf.set_filled(before);
                }
                State::Head(_) | State::Body(_) | State::Chunks(_) => {
                    let before = buf.filled().len();
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let keep = this.follow(&buf.filled()[before..]);
                    buf.set_filled(before + keep);
                    this.put_end(buf);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

forward_async_write!(HeadGuard<S>, S);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: Limits = Limits {
        request_line: 30,
        request_fields: 3,
        request_field_size: 30,
    };

    /// What hyper reads (64 bytes a read) when the client sends `chunks`, the refusal
    /// marked and the number of the head it was marked for.
    async fn through(chunks: &[&[u8]]) -> (Vec<u8>, Option<Refusal>, usize) {
        let mut b = std::io::Cursor::new(chunks.concat());
        let cut = Arc::new(Cut::default());
        let mut g = HeadGuard::new(&mut b, LIMITS, cut.clone());
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let read =
                tokio::time::timeout(std::time::Duration::from_millis(50), g.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        let mark = cut.mark.load(Ordering::Relaxed);
        (out, marked(mark), mark / 2)
    }

    #[tokio::test]
    async fn heads_within_the_limits_and_their_bodies_pass_untouched() {
        let two = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n";
        let body = [b'x'; 40];
        let third = b"GET /c HTTP/1.1\r\n\r\n";
        let (out, cut, _) = through(&[two, &body, third]).await;
        assert_eq!(out, [&two[..], &body, third].concat());
        assert_eq!(cut, None);
    }

    #[tokio::test]
    async fn an_endless_field_line_is_cut_at_its_limit() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: ";
        let (out, cut, n) = through(&[head, &[b'a'; 200]]).await;
        assert_eq!(cut, Some(Refusal::FieldTooLarge));
        assert_eq!(n, 1);
        // The line up to its limit (plus what came in the same read), then the end.
        assert!(out.len() < 200, "{} bytes passed", out.len());
        assert!(out.ends_with(b"aaa\r\n\r\n"), "{out:?}");
    }

    #[tokio::test]
    async fn an_endless_request_line_is_cut_after_a_body() {
        let first = b"POST / HTTP/1.1\r\nContent-Length: 45\r\n\r\n";
        // A body with a long line in it is a body, not a head.
        let body = [b'y'; 45];
        let (out, cut, n) = through(&[first, &body, b"GET /", &[b'a'; 100]]).await;
        assert_eq!(cut, Some(Refusal::RequestLineTooLarge));
        assert_eq!(n, 2, "the second head was cut");
        assert!(out.ends_with(b"a HTTP/1.1\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_whole_long_request_line_keeps_its_version() {
        let line = [&b"GET /"[..], &[b'a'; 40], b" HTTP/1.1\r\nHost: h\r\n\r\n"].concat();
        let (out, cut, _) = through(&[&line]).await;
        assert_eq!(cut, Some(Refusal::RequestLineTooLarge));
        assert!(out.ends_with(b"aa HTTP/1.1\r\n\r\n"), "{out:?}");
    }

    #[tokio::test]
    async fn chunks_are_followed_to_the_next_head() {
        let first = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = [
            &b"5\r\nhello\r\n40;x=y\r\n"[..],
            &[b'z'; 64],
            b"\r\n0\r\nX-T: 1\r\n\r\n",
        ]
        .concat();
        let (out, cut, n) = through(&[first, &body, b"GET / HTTP/1.1\r\nX: ", &[b'a'; 99]]).await;
        assert_eq!(cut, Some(Refusal::FieldTooLarge));
        assert_eq!(n, 2);
        assert!(out.starts_with(&[&first[..], &body].concat()));
    }

    #[tokio::test]
    async fn a_framing_it_does_not_follow_makes_it_step_aside() {
        for head in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            let long = [b'z'; 100];
            let (out, cut, _) = through(&[head, &long]).await;
            assert_eq!(cut, None);
            assert_eq!(out, [head, &long].concat());
        }
    }

    #[test]
    fn the_service_refuses_the_cut_head_only() {
        let cut = Cut::default();
        cut.mark(2, Refusal::FieldTooLarge);
        assert_eq!(cut.take_next(), None);
        assert_eq!(cut.take_next(), Some(Refusal::FieldTooLarge));
        let cut = Cut::default();
        cut.mark(1, Refusal::RequestLineTooLarge);
        assert_eq!(cut.take_next(), Some(Refusal::RequestLineTooLarge));
    }
}
