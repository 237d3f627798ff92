//! Property tests of the parsers that see bytes from outside the process: the queue
//! stamp parser (every request's proxy header) and the access-log formatter (every
//! request's line, head and environ values, and the operator's format string). Any
//! input, valid or not, gives an answer and never a panic.
//!
//! CI runs `FUZZ_CASES` cases per property (default 4,000); `bench/run.sh fuzz` runs
//! millions with an optimised build. Each property prints how many cases it ran.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use rwsgi::dispatch::access_log::{AccessLog, RequestLine};
use rwsgi::tracker::header::{classify_at, parse_stamp, Stamp};
use rwsgi::wsgi::Outcome;

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    ProptestConfig {
        cases,
        // Failures are shrunk and printed; nothing is written next to the sources.
        failure_persistence: None,
        // Some generated URIs are not ones `http` would hand the server; over
        // millions of cases the default limit on such rejects would end the run.
        max_local_rejects: u32::MAX,
        max_global_rejects: u32::MAX,
        ..ProptestConfig::default()
    }
}

/// Runs one property for `FUZZ_CASES` cases; prints how many ran; panics with the
/// shrunk failing input if one fails (a panic inside counts as a failure).
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let ran = AtomicU64::new(0);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        property(v)
    });
    eprintln!("fuzz {name}: {} cases run", ran.load(Ordering::Relaxed));
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Stamp-like text: digits, dots, signs, whitespace, `t=`, letters, the odd high byte.
fn stamp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => "[0-9]{1,20}".prop_map(String::into_bytes),
        2 => Just(b".".to_vec()),
        1 => Just(b"t=".to_vec()),
        1 => "[ \t+\\-eE]".prop_map(String::into_bytes),
        1 => "(NaN|inf|0x)".prop_map(String::into_bytes),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop_oneof![
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

#[test]
fn stamp_parser_takes_any_bytes() {
    let input = (stamp_bytes(), 0u64..4_000_000_000, 0u32..1_000_000_000);
    check("stamp parser", input, |(raw, now_s, frac)| {
        let parsed = parse_stamp(&raw);
        // Whatever parses is after 2000-01-01 and comes from digits.
        if let Some(d) = parsed {
            prop_assert!(
                d >= Duration::from_secs(946_684_800),
                "{:?} parsed to {:?}",
                raw,
                d
            );
            prop_assert!(raw.iter().any(u8::is_ascii_digit));
        }
        let now = Duration::new(now_s, frac);
        let max_age = Duration::from_secs(3600);
        match (parsed, classify_at(Some(&raw), true, Some(now), max_age)) {
            (None, Stamp::Invalid) => {}
            (Some(_), Stamp::Ok(q)) => prop_assert!(q <= max_age),
            (Some(_), Stamp::Future | Stamp::Invalid) => {}
            (p, s) => prop_assert!(false, "{:?} parsed {:?} but classified {:?}", raw, p, s),
        }
        prop_assert_eq!(
            classify_at(Some(&raw), false, Some(now), max_age),
            Stamp::Untrusted
        );
        Ok(())
    });
}

/// Format strings: gunicorn's atoms, braces with any name, stray `%(`, `)s`, any text.
fn format_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "%\\([hlutrmUqHsBbfaTDMLp]\\)s",
        2 => "%\\(\\{[^)]{0,6}\\}[ioe]\\)s",
        1 => "%\\(\\{?.{0,4}\\)s",
        1 => "(%\\(|\\)s|\\{|\\}|%)",
        2 => ".{0,6}",
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

/// A request as the server may see it: any method token, any URI that `http` accepts,
/// any header values (opaque bytes, as hyper and the own path allow).
fn request() -> impl Strategy<Value = (http::Method, http::Uri, http::Version, http::HeaderMap)> {
    let method = "[A-Za-z!#$%&'*+.^_`|~-]{1,10}";
    let uri = prop_oneof![
        "/[A-Za-z0-9/._~!$&'()*+,;=:@%-]{0,30}(\\?[A-Za-z0-9/._~!$&'()*+,;=:@%?-]{0,20})?",
        Just("*".to_string()),
        "http://[a-z]{1,8}(:[0-9]{1,5})?/[\\x21-\\x7e]{0,20}",
    ];
    let version = prop_oneof![
        Just(http::Version::HTTP_09),
        Just(http::Version::HTTP_10),
        Just(http::Version::HTTP_11),
    ];
    let name = prop_oneof![
        Just("authorization".to_string()),
        Just("referer".to_string()),
        Just("user-agent".to_string()),
        "x-[a-z0-9-]{1,8}",
    ];
    let value = prop_oneof![
        "(Basic|basic|Bearer) [A-Za-z0-9+/=:\\x80-\\xff ]{0,24}".prop_map(String::into_bytes),
        prop::collection::vec(
            // Any byte a field value may hold: controls other than HTAB become `x`.
            any::<u8>().prop_map(|b| if b == b'\t' || (b >= 0x20 && b != 0x7f) {
                b
            } else {
                b'x'
            }),
            0..30
        ),
    ];
    let headers = prop::collection::vec((name, value), 0..6);
    (method, uri, version, headers).prop_filter_map("parseable request", |(m, u, v, hs)| {
        let method = http::Method::from_bytes(m.as_bytes()).ok()?;
        let uri: http::Uri = u.parse().ok()?;
        let mut map = http::HeaderMap::new();
        for (n, val) in hs {
            let n = http::HeaderName::from_bytes(n.as_bytes()).ok()?;
            let val = http::HeaderValue::from_bytes(&val).ok()?;
            map.append(n, val);
        }
        Some((method, uri, v, map))
    })
}

#[test]
fn access_log_formats_anything() {
    let input = (
        format_string(),
        request(),
        ".{0,20}",
        (0u16..1000, any::<u64>(), any::<u32>()),
        prop::collection::vec(("[a-z.]{1,8}", ".{0,10}"), 0..4),
    );
    check(
        "access-log formatter",
        input,
        |(format, (method, uri, version, headers), remote, (status, sent, micros), environ)| {
            let line = RequestLine {
                method,
                uri,
                version,
            };
            let log = AccessLog::open(Some(std::path::Path::new("/dev/null")), &format)
                .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
            let outcome = Outcome {
                status,
                sent,
                received: 0,
                client_timeout: false,
                environ_dict: None,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                environ,
            };
            let text = log.render(
                &line,
                &headers,
                &remote,
                &outcome,
                Duration::from_micros(micros.into()),
            );
            // One line per request, whatever the request carried.
            prop_assert!(text.ends_with('\n'));
            let _ = (log.environ_keys(), log.wants_response_headers());
            Ok(())
        },
    );
}

/// What the property found: a `{name}` atom whose last characters are not ASCII
/// cut a character in two (a panic in every worker at start).
#[test]
fn access_log_format_names_may_be_any_utf8() {
    let line = RequestLine {
        method: http::Method::GET,
        uri: http::Uri::from_static("/"),
        version: http::Version::HTTP_11,
    };
    let outcome = Outcome {
        status: 200,
        sent: 0,
        received: 0,
        client_timeout: false,
        environ_dict: None,
        headers: Vec::new(),
        environ: vec![("é".into(), "v".into())],
    };
    for format in ["%({ࠀ)s", "%({a€)s", "%({é}e)s", "%({€}i)s"] {
        let log = AccessLog::open(Some(std::path::Path::new("/dev/null")), format).unwrap();
        let text = log.render(&line, &http::HeaderMap::new(), "", &outcome, Duration::ZERO);
        assert!(text.ends_with('\n'), "{format}: {text:?}");
    }
}
