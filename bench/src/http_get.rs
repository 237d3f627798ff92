//! A tiny blocking HTTP/1.1 GET for the control plane: readiness probes and metrics
//! scrapes. Not for load: it opens a connection per call and reads to the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// An answer: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// GETs `path` from `addr` with `Connection: close`, all within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Answer> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n"
    )?;
    read_answer(&mut s)
}

/// Reads one answer from `s` without waiting for the server to close: up to the end of
/// the headers, then `Content-Length` bytes (to the end of the stream without one). A
/// server may keep the connection open despite `Connection: close` (uWSGI's HTTP/1.1
/// socket waits for the next request until its socket timeout).
pub fn read_answer(s: &mut impl Read) -> Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).context("reading the answer")?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|len| buf.len() >= end + 4 + len) {
                return parse(&buf);
            }
        }
        if n == 0 {
            return parse(&buf);
        }
    }
}

/// Splits a raw HTTP/1.x answer into status and body (undoing chunked encoding).
pub fn parse(raw: &[u8]) -> Result<Answer> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match parts.next() {
        Some(v) if v.starts_with("HTTP/1.") => {}
        _ => bail!("not an HTTP/1 answer: {status_line:?}"),
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_str = std::str::from_utf8(&raw[..line_end]).context("bad chunk size")?;
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).context("bad chunk size")?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!(
            a,
            Answer {
                status: 200,
                body: b"hi".to_vec()
            }
        );
        let a = parse(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.body, b"abcde");
    }

    #[test]
    fn reads_an_answer_by_its_length_without_waiting_for_the_close() {
        // Trailing bytes stand for a connection the server keeps open: they are
        // never read, as a blocking read would hang there.
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n1234";
        let mut r = &raw[..];
        assert_eq!(read_answer(&mut r).unwrap().body, b"1234");
        let mut closed = &b"HTTP/1.0 200 OK\r\n\r\nuntil close"[..];
        assert_eq!(read_answer(&mut closed).unwrap().body, b"until close");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
