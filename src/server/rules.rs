//! The HTTP rules both paths apply to a request head, in one place: the own path
//! (`own.rs`) checks a head here while parsing it and hands one that breaks a rule to
//! hyper, whose service (`service.rs`) checks it here again and answers with the
//! [`Refusal`]'s status. A new rule on request heads goes into [`check`], and both
//! paths apply it. [`line_too_long`] is the same limits applied to a line still
//! arriving (the own path refuses it before the head ends). [`warn`] is the one
//! log line per refused request.

use http::Uri;

use crate::config::Limits;
use crate::contract::{plain, Reply};

/// Why a head is refused. Status codes follow gunicorn 27 and RFC 9112: 414 for the
/// request line, 431 for header fields, 400 for Host, 501 for a transfer coding
/// other than `chunked`, 405 for `CONNECT` (a WSGI app cannot tunnel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RequestLineTooLarge,
    TooManyFields,
    FieldTooLarge,
    /// HTTP/1.1 without Host, Host repeated, or a Host value that is no
    /// `uri-host [":" port]` (RFC 9112 §3.2).
    BadHost,
    /// A transfer coding other than a final `chunked` (RFC 9112 §6.1).
    UnknownCoding,
    Connect,
}

impl Refusal {
    /// The answer to a refused request; the connection closes after it.
    pub fn reply(self) -> Reply {
        let mut reply = match self {
            Refusal::RequestLineTooLarge => {
                plain(414, "URI Too Long: request line is too large\n", true)
            }
            Refusal::TooManyFields => plain(
                431,
                "Request Header Fields Too Large: too many header fields\n",
                true,
            ),
            Refusal::FieldTooLarge => plain(
                431,
                "Request Header Fields Too Large: a header field is too large\n",
                true,
            ),
            Refusal::BadHost => plain(
                400,
                "Bad Request: missing, repeated or invalid Host header\n",
                true,
            ),
            Refusal::UnknownCoding => plain(
                501,
                "Not Implemented: only the chunked transfer coding is supported\n",
                true,
            ),
            Refusal::Connect => plain(405, "Method Not Allowed: CONNECT is not served\n", true),
        };
        if self == Refusal::Connect {
            // RFC 9110 §15.5.6: a 405 lists the methods that are served.
            reply.headers.push((
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ));
        }
        reply
    }

    /// Why, in a few words, for the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::RequestLineTooLarge => "request line over --limit-request-line",
            Refusal::TooManyFields => "more header fields than --limit-request-fields",
            Refusal::FieldTooLarge => "a header field over --limit-request-field_size",
            Refusal::BadHost => "missing, repeated or invalid Host",
            Refusal::UnknownCoding => "a transfer coding other than chunked",
            Refusal::Connect => "CONNECT",
        }
    }
}

/// The length of a request target as sent: origin form (`/path?query`), or
/// absolute form (`http://authority/path?query`).
pub fn target_len(uri: &Uri) -> usize {
    uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1)
        + uri.authority().map(|a| a.as_str().len() + 8).unwrap_or(0)
}

/// Checks a head: gunicorn's limits, `--limit-request-line` (the method, the target
/// and ` HTTP/1.1`), `--limit-request-fields` and `--limit-request-field_size`
/// (`name: value`), then the RFC's rules on Host, Transfer-Encoding and CONNECT.
/// `fields` are the `count` (name, value) pairs as sent; `http11`: the request is
/// HTTP/1.1 (Host is required).
pub fn check<'a>(
    method: &str,
    target_len: usize,
    http11: bool,
    count: usize,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    limits: &Limits,
) -> Result<(), Refusal> {
    if method.len() + 1 + target_len + 9 > limits.request_line {
        return Err(Refusal::RequestLineTooLarge);
    }
    if count > limits.request_fields {
        return Err(Refusal::TooManyFields);
    }
    let mut hosts = 0;
    for (name, value) in fields {
        if name.len() + 2 + value.len() > limits.request_field_size {
            return Err(Refusal::FieldTooLarge);
        }
        // Both names are 4 or 17 bytes long: one compare of the length first.
        if name.len() == 4 && name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 || !valid_host(value) {
                return Err(Refusal::BadHost);
            }
        } else if name.len() == 17
            && name.eq_ignore_ascii_case(b"transfer-encoding")
            && value
                .split(|&c| c == b',')
                .any(|t| !t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        {
            return Err(Refusal::UnknownCoding);
        }
    }
    if hosts == 0 && http11 {
        return Err(Refusal::BadHost);
    }
    if method == "CONNECT" {
        return Err(Refusal::Connect);
    }
    Ok(())
}

/// Whether the line being received is already longer than its limit: the request
/// line (`first`) against `--limit-request-line`, a field line against
/// `--limit-request-field_size` (plus the two bytes of `: ` that [`check`] counts,
/// so a line within the limit is never refused early). `len`: bytes so far, without
/// the line end.
pub fn line_too_long(first: bool, len: usize, limits: &Limits) -> Option<Refusal> {
    if first && len > limits.request_line {
        Some(Refusal::RequestLineTooLarge)
    } else if !first && len > limits.request_field_size.saturating_add(2) {
        Some(Refusal::FieldTooLarge)
    } else {
        None
    }
}

/// RFC 9112 §3.2: `Host = uri-host [ ":" port ]` (RFC 3986: an IP literal in
/// brackets, or a reg-name of unreserved, percent-encoded and sub-delim characters;
/// port = *DIGIT). Empty is allowed (a target without an authority).
fn valid_host(v: &[u8]) -> bool {
    // What follows the host: nothing, or `:` and the port.
    let port = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&c| c == b']') else {
            return false;
        };
        let literal = &v[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.' | b'v' | b'V'));
        if !ok {
            return false;
        }
        &v[end + 1..]
    } else {
        // One pass: the reg-name runs to the first byte outside it (a reg-name holds
        // no ':'), and the rest must be the port.
        match v.iter().position(|&c| !REG_NAME[c as usize]) {
            None => return true,
            Some(i) => &v[i..],
        }
    };
    match port.split_first() {
        None => true,
        Some((&b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

/// The bytes of a reg-name (RFC 3986: unreserved, `%` of pct-encoded, sub-delims),
/// one lookup per byte: a Host is checked on every request.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let extra = b"-._~%!$&'()*+,;=";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

/// One WARNING line per refused request (rate-limited); dispatch's refusals use it too.
pub use crate::throttle::refused_request as warn;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 30,
        request_fields: 3,
        request_field_size: 10,
    };

    /// gunicorn's defaults, for the RFC's rules.
    const DEFAULTS: Limits = Limits {
        request_line: 4094,
        request_fields: 100,
        request_field_size: 8190,
    };

    fn judge(target: &str, fields: &[(&str, &str)]) -> Result<(), Refusal> {
        judge_with(&LIMITS, "GET", true, target, fields)
    }

    fn judge_as(
        method: &str,
        http11: bool,
        target: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        judge_with(&DEFAULTS, method, http11, target, fields)
    }

    fn judge_with(
        limits: &Limits,
        method: &str,
        http11: bool,
        target: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        let uri: Uri = target.parse().unwrap();
        let pairs = fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        check(
            method,
            target_len(&uri),
            http11,
            fields.len(),
            pairs,
            limits,
        )
    }

    #[test]
    fn limits_count_as_gunicorn_does() {
        let h = ("Host", "h");
        // "GET " + target + " HTTP/1.1": 13 bytes around the target.
        assert_eq!(judge(&format!("/{}", "a".repeat(16)), &[h]), Ok(()));
        assert_eq!(
            judge(&format!("/{}", "a".repeat(17)), &[h]),
            Err(Refusal::RequestLineTooLarge)
        );
        // The absolute form counts its scheme and authority.
        assert_eq!(
            judge("http://example.com/abc", &[h]),
            Err(Refusal::RequestLineTooLarge)
        );
        assert_eq!(
            judge("/", &[h, ("a", "1"), ("b", "2"), ("c", "3")]),
            Err(Refusal::TooManyFields)
        );
        // "name: value" without the line end.
        assert_eq!(judge("/", &[h, ("abc", "defgh")]), Ok(()));
        assert_eq!(
            judge("/", &[h, ("abc", "defghi")]),
            Err(Refusal::FieldTooLarge)
        );
        // A line still arriving is refused once it cannot fit.
        assert_eq!(line_too_long(true, 30, &LIMITS), None);
        assert_eq!(
            line_too_long(true, 31, &LIMITS),
            Some(Refusal::RequestLineTooLarge)
        );
        assert_eq!(line_too_long(false, 12, &LIMITS), None);
        assert_eq!(
            line_too_long(false, 13, &LIMITS),
            Some(Refusal::FieldTooLarge)
        );
    }

    #[test]
    fn host_is_required_once_and_valid() {
        for ok in [
            "h",
            "",
            "example.com:8080",
            "127.0.0.1",
            "[::1]:80",
            "a-b_c.~%41",
        ] {
            assert_eq!(
                judge_as("GET", true, "/", &[("Host", ok)]),
                Ok(()),
                "{ok:?}"
            );
        }
        assert_eq!(judge_as("GET", true, "/", &[]), Err(Refusal::BadHost));
        assert_eq!(judge_as("GET", false, "/", &[]), Ok(()), "HTTP/1.0");
        assert_eq!(
            judge_as("GET", true, "/", &[("Host", "a"), ("host", "a")]),
            Err(Refusal::BadHost)
        );
        for bad in ["a b", "a/c", "x:8o", "u@h", "[::1", "[zz]", "a:1:2"] {
            assert_eq!(
                judge_as("GET", true, "/", &[("Host", bad)]),
                Err(Refusal::BadHost),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_chunked_is_a_known_coding_and_connect_is_refused() {
        let h = ("Host", "h");
        assert_eq!(
            judge_as("GET", true, "/", &[h, ("Transfer-Encoding", "chunked")]),
            Ok(())
        );
        assert_eq!(
            judge_as(
                "GET",
                true,
                "/",
                &[h, ("Transfer-Encoding", "gzip, chunked")]
            ),
            Err(Refusal::UnknownCoding)
        );
        assert_eq!(
            judge_as(
                "GET",
                true,
                "/",
                &[
                    h,
                    ("transfer-encoding", "gzip"),
                    ("Transfer-Encoding", "chunked")
                ]
            ),
            Err(Refusal::UnknownCoding)
        );
        assert_eq!(judge_as("CONNECT", true, "/", &[h]), Err(Refusal::Connect));
    }

    #[test]
    fn refusals_answer_with_their_codes_and_close() {
        for (r, code) in [
            (Refusal::RequestLineTooLarge, 414),
            (Refusal::TooManyFields, 431),
            (Refusal::FieldTooLarge, 431),
            (Refusal::BadHost, 400),
            (Refusal::UnknownCoding, 501),
            (Refusal::Connect, 405),
        ] {
            let reply = r.reply();
            assert_eq!(reply.status.as_u16(), code);
            assert!(reply
                .headers
                .iter()
                .any(|(n, v)| n == http::header::CONNECTION && v == "close"));
        }
    }
}
