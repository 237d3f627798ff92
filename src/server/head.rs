//! Response heads for the own HTTP/1.1 path ([`super::own`]), framed by the rules
//! hyper applies on the other path, so a response is the same bytes whichever path
//! wrote it (`python-tests/test_own_http.py` compares the two; one difference: the
//! fields go out in the app's order, where hyper groups repeated names under the
//! first, as gunicorn does not): status line with the
//! app's reason phrase, title-case names, the app's Content-Length or one from the
//! body, chunked or close-delimited streams, nothing after HEAD/1xx/204/304, a cached
//! `Date`, and `Connection: close` when the client asked for it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE};
use http::{HeaderName, HeaderValue, StatusCode};

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: nothing after the head).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    CloseDelimited,
}

/// What the body is known to be when the head is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all (hyper: `is_end_stream`).
    None,
    /// A whole body of this many bytes.
    Known(u64),
    /// A stream of unknown length.
    Unknown,
}

/// The head's consequences for the rest of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// Close the connection after this response.
    pub last: bool,
}

/// The request facts the head depends on.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForRequest {
    pub head: bool,
    /// The client sent `Connection: close`.
    pub close: bool,
}

fn can_have_body(head: bool, status: StatusCode) -> bool {
    !(head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes `Name` in title case (`content-type` → `Content-Type`), as hyper's
/// `title_case_headers` does.
fn title_case(dst: &mut Vec<u8>, name: &[u8]) {
    let mut prev = b'-';
    for &c in name {
        dst.push(if prev == b'-' {
            c.to_ascii_uppercase()
        } else {
            c
        });
        prev = c;
    }
}

/// Appends the response head to `dst` and says how the body is framed.
pub fn encode(
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &[(HeaderName, HeaderValue)],
    body: BodyKind,
    req: ForRequest,
    dst: &mut Vec<u8>,
) -> Encoded {
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // hyper cannot send interim responses from a service: it answers 500 and
        // closes. The app's headers and body are not sent.
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\n");
        if !req.head {
            dst.extend_from_slice(b"Content-Length: 0\r\n");
        }
        write_date(dst);
        dst.extend_from_slice(b"\r\n");
        return Encoded {
            framing: Framing::Length(0),
            last: true,
        };
    }
    let mut last = req.close || status == StatusCode::SWITCHING_PROTOCOLS;
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }

    let mut framing = Framing::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut connection_seen = false;
    // A header of the same name as the last one continues its line (Content-Length,
    // Connection) or is dropped (repeated Content-Length).
    let mut open_line: Option<&HeaderName> = None;
    let mut prev_name: Option<&HeaderName> = None;
    let mut seen_len = false;
    for (name, value) in headers {
        let same = prev_name == Some(name);
        prev_name = Some(name);
        if !same && open_line.take().is_some() {
            dst.extend_from_slice(b"\r\n");
        }
        if *name == CONTENT_LENGTH {
            // hyper sends the first of repeated lengths (grouped under one name).
            let first = !seen_len;
            seen_len = true;
            match body {
                BodyKind::Known(len) => {
                    if first {
                        dst.extend_from_slice(b"Content-Length: ");
                        dst.extend_from_slice(value.as_bytes());
                        framing = Framing::Length(len);
                        wrote_len = true;
                        open_line = Some(name);
                    }
                    continue;
                }
                BodyKind::Unknown => {
                    if first {
                        match parse_u64(value.as_bytes()) {
                            Some(len) => {
                                dst.extend_from_slice(b"Content-Length: ");
                                dst.extend_from_slice(value.as_bytes());
                                framing = Framing::Length(len);
                                wrote_len = true;
                                open_line = Some(name);
                            }
                            // start_response checks Content-Length, so this is
                            // only a safeguard: no length, so close after the body.
                            None => last = true,
                        }
                    }
                    continue;
                }
                BodyKind::None if !req.head => continue,
                BodyKind::None => wrote_len = true,
            }
        } else if *name == CONNECTION {
            connection_seen = true;
            if contains_token(value.as_bytes(), b"close") {
                last = true;
            }
            if same && open_line.is_some() {
                dst.extend_from_slice(b", ");
            } else {
                dst.extend_from_slice(b"Connection: ");
                open_line = Some(name);
            }
            dst.extend_from_slice(value.as_bytes());
            continue;
        } else if *name == DATE {
            wrote_date = true;
        }
        title_case(dst, name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if open_line.is_some() {
        dst.extend_from_slice(b"\r\n");
    }
    if req.close && !connection_seen {
        dst.extend_from_slice(b"Connection: close\r\n");
    }

    let bodied = can_have_body(req.head, status);
    if !wrote_len {
        framing = match body {
            BodyKind::Unknown if bodied => {
                dst.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                Framing::Chunked
            }
            BodyKind::Unknown => Framing::CloseDelimited,
            BodyKind::None | BodyKind::Known(0) => {
                if can_have_content_length(status) && !req.head {
                    dst.extend_from_slice(b"Content-Length: 0\r\n");
                }
                Framing::Length(0)
            }
            BodyKind::Known(len) => {
                if can_have_content_length(status) {
                    dst.extend_from_slice(b"Content-Length: ");
                    dst.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                    dst.extend_from_slice(b"\r\n");
                    Framing::Length(len)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !bodied {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        write_date(dst);
    }
    dst.extend_from_slice(b"\r\n");
    if framing == Framing::CloseDelimited {
        last = true;
    }
    Encoded { framing, last }
}

/// A plain decimal (no sign, no spaces), as a length.
pub fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
}

/// Whether comma-separated `value` holds `token` (ASCII case-insensitive).
pub fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&c| c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

thread_local! {
    /// The `Date` line of the current second: formatted once a second, not per response.
    static DATE_LINE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// The wall clock in whole seconds since the Unix epoch, from the kernel's coarse
/// clock: a `Date` line needs seconds, and the coarse clock (updated every tick, a
/// few ms) is read without the cycle counter the precise one needs.
fn wall_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        u64::try_from(ts.tv_sec).unwrap_or(0)
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Appends `Date: <IMF-fixdate>\r\n`.
fn write_date(dst: &mut Vec<u8>) {
    let secs = wall_secs();
    DATE_LINE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let now = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            cached.1.clear();
            cached.1.extend_from_slice(b"Date: ");
            cached
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cached.1.extend_from_slice(b"\r\n");
            cached.0 = secs;
        }
        dst.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        status: u16,
        reason: Option<&str>,
        hs: &[(&str, &str)],
        body: BodyKind,
        req: ForRequest,
    ) -> (String, Encoded) {
        let map: Vec<_> = hs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect();
        let mut dst = Vec::new();
        let e = encode(
            StatusCode::from_u16(status).unwrap(),
            reason.map(str::as_bytes),
            &map,
            body,
            req,
            &mut dst,
        );
        let text = String::from_utf8(dst).unwrap();
        // The date changes; its shape is checked once below.
        let mut lines: Vec<&str> = text.split("\r\n").collect();
        let date = lines.iter().position(|l| l.starts_with("Date: ")).unwrap();
        assert_eq!(
            lines[date].len(),
            "Date: Thu, 26 Nov 2026 03:30:00 GMT".len()
        );
        lines[date] = "Date: X";
        (lines.join("\r\n"), e)
    }

    const GET: ForRequest = ForRequest {
        head: false,
        close: false,
    };

    #[test]
    fn a_whole_body_gets_its_length_and_title_case_names() {
        let (h, e) = head(
            200,
            None,
            &[("content-type", "text/plain"), ("x-a-b", "1")],
            BodyKind::Known(5),
            GET,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A-B: 1\r\nContent-Length: 5\r\nDate: X\r\n\r\n"
        );
        assert_eq!(
            e,
            Encoded {
                framing: Framing::Length(5),
                last: false
            }
        );
    }

    #[test]
    fn the_apps_length_and_reason_are_kept() {
        let (h, e) = head(
            201,
            Some("Made It"),
            &[("content-length", "3"), ("x", "y")],
            BodyKind::Known(3),
            GET,
        );
        assert_eq!(
            h,
            "HTTP/1.1 201 Made It\r\nContent-Length: 3\r\nX: y\r\nDate: X\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Length(3));
        let (h, _) = head(404, None, &[], BodyKind::None, GET);
        assert_eq!(
            h,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nDate: X\r\n\r\n"
        );
    }

    #[test]
    fn streams_are_chunked_unless_they_declare_a_length() {
        let (h, e) = head(200, None, &[], BodyKind::Unknown, GET);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: X\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Chunked);
        let (h, e) = head(
            200,
            None,
            &[("content-length", "10")],
            BodyKind::Unknown,
            GET,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nDate: X\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Length(10));
    }

    #[test]
    fn head_and_bodiless_statuses_send_nothing_after_the_head() {
        let head_req = ForRequest {
            head: true,
            close: false,
        };
        let (h, e) = head(
            200,
            None,
            &[("content-length", "42")],
            BodyKind::None,
            head_req,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nDate: X\r\n\r\n"
        );
        assert_eq!(e.framing, Framing::Length(0));
        let (h, _) = head(200, None, &[], BodyKind::None, head_req);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nDate: X\r\n\r\n");
        let (h, e) = head(200, None, &[], BodyKind::Unknown, head_req);
        assert_eq!(h, "HTTP/1.1 200 OK\r\nDate: X\r\n\r\n");
        assert_eq!(
            e,
            Encoded {
                framing: Framing::Length(0),
                last: false
            }
        );
        for code in [204, 304] {
            let (h, e) = head(code, None, &[("content-length", "7")], BodyKind::None, GET);
            assert!(!h.contains("Content-Length"), "{h}");
            assert_eq!(e.framing, Framing::Length(0));
        }
        let (h, e) = head(103, None, &[("link", "</a>")], BodyKind::None, GET);
        assert_eq!(
            h,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nDate: X\r\n\r\n"
        );
        assert!(e.last);
    }

    #[test]
    fn connection_close_from_either_side_ends_the_connection() {
        let close = ForRequest {
            head: false,
            close: true,
        };
        let (h, e) = head(200, None, &[("x", "1")], BodyKind::Known(2), close);
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\nContent-Length: 2\r\nDate: X\r\n\r\n"
        );
        assert!(e.last);
        let (h, e) = head(
            200,
            None,
            &[("connection", "close")],
            BodyKind::Known(2),
            GET,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nDate: X\r\n\r\n"
        );
        assert!(e.last);
        let (_, e) = head(
            200,
            None,
            &[("date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("date", "x")],
            BodyKind::Known(1),
            GET,
        )
        .clone();
        assert!(!e.last);
    }

    #[test]
    fn fields_keep_the_apps_order() {
        let (h, _) = head(
            200,
            None,
            &[("set-cookie", "a=1"), ("x", "1"), ("set-cookie", "b=2")],
            BodyKind::Known(1),
            GET,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX: 1\r\nSet-Cookie: b=2\r\nContent-Length: 1\r\nDate: X\r\n\r\n"
        );
    }

    #[test]
    fn tokens_and_lengths() {
        assert!(contains_token(b"keep-alive, Close", b"close"));
        assert!(!contains_token(b"closed", b"close"));
        assert_eq!(parse_u64(b"1048576"), Some(1_048_576));
        assert_eq!(parse_u64(b"1x"), None);
        assert_eq!(parse_u64(b""), None);
    }
}
