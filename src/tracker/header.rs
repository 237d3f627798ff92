//! The proxy's queue stamp: parsing the header value and classifying it against the clock.
//!
//! A proxy writes the time it received the request into a header
//! (`proxy_set_header X-RequestTime $msec;`). At dispatch the worker turns that header
//! into a [`Stamp`]: the `queue_time` when the stamp is usable, otherwise the reason it
//! is not, so that every request is counted under exactly one outcome.
//!
//! Proxies disagree on the unit, so the unit is told apart by magnitude with
//! 2000-01-01 cut-offs, as New Relic and Judoscale do: any stamp after 2000 in one unit
//! is too large to be a stamp after 2000 in the next coarser one, until the year 31969.
//!
//! Clock skew: a stamp slightly in the future (proxy clock ahead of ours) is counted as
//! [`Stamp::Future`] and recorded as a zero queue time, because the request certainly
//! did not wait a negative time and dropping it would hide fast requests. A stamp more
//! than `max_age` in the future is as implausible as one more than `max_age` in the
//! past, so both are [`Stamp::Invalid`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use super::peers::TrustedPeers;

/// 2000-01-01T00:00:00Z in seconds since the UNIX epoch: the earliest stamp accepted.
const Y2000_SECS: u64 = 946_684_800;

/// Parses a proxy stamp into the time since the UNIX epoch.
///
/// Accepts, with optional surrounding ASCII whitespace and an optional `t=` prefix:
/// seconds with a fraction (nginx `$msec`, `1700000000.123`) and integers in seconds,
/// milliseconds, microseconds or nanoseconds, the unit chosen by magnitude. A fraction
/// is a fraction of that unit; digits finer than a nanosecond are ignored.
///
/// Returns `None` for anything else: empty, signs, letters (so `NaN`, `inf` and
/// exponents), a stamp before 2000-01-01, or an integer part that overflows `u64`.
/// Never panics and never allocates, because it runs on every request.
pub fn parse_stamp(raw: &[u8]) -> Option<Duration> {
    // nginx's `$msec` as it arrives from nginx: no padding, no prefix.
    if let Some(stamp) = parse_msec(raw) {
        return Some(stamp);
    }
    let text = raw.trim_ascii();
    let text = text.strip_prefix(b"t=").unwrap_or(text);
    parse_msec(text).or_else(|| parse_any(text))
}

/// [`parse_stamp`] after the whitespace and the prefix, for every accepted shape.
fn parse_any(text: &[u8]) -> Option<Duration> {
    // One pass over the bytes, integers only: this runs on every request.
    let mut whole: u64 = 0;
    let mut whole_len = 0usize;
    // Eight digits at a time while they last (a `$msec` stamp's first eight).
    let mut rest = text;
    while let Some((eight, tail)) = rest.split_first_chunk::<8>() {
        let chunk = u64::from_le_bytes(*eight);
        if whole_len > 11 || !eight_digits(chunk) {
            break;
        }
        whole = whole * 100_000_000 + eight_digits_value(chunk);
        whole_len += 8;
        rest = tail;
    }
    let mut digits = rest.iter();
    let mut has_fraction = false;
    for &b in digits.by_ref() {
        if b == b'.' {
            has_fraction = true;
            break;
        }
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        // Up to 19 digits cannot overflow; only longer ones need the checks.
        whole = if whole_len < 19 {
            whole * 10 + u64::from(d)
        } else {
            whole.checked_mul(10)?.checked_add(u64::from(d))?
        };
        whole_len += 1;
    }
    if whole_len == 0 {
        return None;
    }
    let unit_ns = unit_ns(whole)?;

    let mut fraction_ns: u64 = 0;
    if has_fraction {
        let fraction = digits.as_slice();
        if fraction.is_empty() {
            return None;
        }
        let mut place = unit_ns;
        for &b in fraction {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            // Digits finer than a nanosecond are checked, then ignored.
            place /= 10;
            fraction_ns += u64::from(d) * place;
        }
    }

    if unit_ns == 1_000_000_000 {
        // Seconds (nginx's `$msec`): no division needed.
        return Some(Duration::new(whole, fraction_ns as u32));
    }
    // `unit_ns` divides a second, and the fraction stays below one unit, so `nanos`
    // stays below a second.
    let per_second = 1_000_000_000 / unit_ns;
    let secs = whole / per_second;
    let nanos = (whole % per_second) * unit_ns + fraction_ns;
    Some(Duration::new(secs, nanos as u32))
}

/// nginx's `$msec` as it is until the year 2286, `SSSSSSSSSS.mmm`: ten digits of
/// seconds (always after 2000, and too few for a finer unit) and three of
/// milliseconds, read as two overlapping eight-byte words without a loop: bytes 0–7,
/// then bytes 6–13 (`SSSS.mmm`) with the dot turned into a `0`, so that one digit check
/// covers the last seconds, the dot's place and the milliseconds. `None` for any other
/// shape, which [`parse_stamp`] then reads in general.
fn parse_msec(text: &[u8]) -> Option<Duration> {
    let text: &[u8; 14] = text.try_into().ok()?;
    let (head, _) = text.split_first_chunk::<8>()?;
    let (_, tail) = text.split_last_chunk::<8>()?;
    let head = u64::from_le_bytes(*head);
    let tail = u64::from_le_bytes(*tail);
    // Byte 10 of the text is byte 4 of `tail`.
    const DOT_AT: u32 = 32;
    if (tail >> DOT_AT) & 0xFF != u64::from(b'.') {
        return None;
    }
    let tail = tail + (u64::from(b'0' - b'.') << DOT_AT);
    if !eight_digits(head) || !eight_digits(tail) {
        return None;
    }
    // `tail` spells SSSS0mmm: its last four digits are the milliseconds, the two
    // before them the last two digits of the seconds.
    let tail = eight_digits_value(tail);
    let secs = eight_digits_value(head) * 100 + (tail / 10_000) % 100;
    let millis = tail % 10_000;
    if secs < Y2000_SECS {
        return None;
    }
    Some(Duration::new(secs, (millis * 1_000_000) as u32))
}

/// Whether all eight bytes of `chunk` are ASCII digits.
fn eight_digits(chunk: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    (chunk & HIGH) | ((chunk.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4)
        == 0x3333_3333_3333_3333
}

/// The number eight ASCII digits spell, the first in the lowest byte (a little-endian
/// load), in three multiplications (Lemire's method).
fn eight_digits_value(chunk: u64) -> u64 {
    let v = chunk.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let low = (v & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32));
    let high = ((v >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32));
    low.wrapping_add(high) >> 32
}

/// Nanoseconds per unit of a stamp whose integer part is `whole`, or `None` before 2000.
fn unit_ns(whole: u64) -> Option<u64> {
    const NS: u64 = Y2000_SECS * 1_000_000_000;
    const US: u64 = Y2000_SECS * 1_000_000;
    const MS: u64 = Y2000_SECS * 1_000;
    match whole {
        w if w >= NS => Some(1),
        w if w >= US => Some(1_000),
        w if w >= MS => Some(1_000_000),
        w if w >= Y2000_SECS => Some(1_000_000_000),
        _ => None,
    }
}

/// What one request's queue header told us; every request gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A trusted, plausible stamp: holds the `queue_time` (dispatch − stamp).
    Ok(Duration),
    /// A trusted stamp after dispatch, by at most `max_age` (clock skew): recorded as
    /// a zero `queue_time`, counted apart so that skew is visible.
    Future,
    /// No queue header on the request, or no `--queue-header` configured.
    Missing,
    /// Unparseable, before 2000, or further than `max_age` from now in either direction.
    Invalid,
    /// A header from a peer outside `--queue-header-trusted-from`: a client could forge
    /// it, so it is not parsed at all.
    Untrusted,
}

impl Stamp {
    /// The `queue_time` to record and to show the app (`environ["rwsgi.queue_time"]`),
    /// or `None` when the request has no usable stamp.
    pub fn queue_time(&self) -> Option<Duration> {
        match *self {
            Stamp::Ok(queue_time) => Some(queue_time),
            Stamp::Future => Some(Duration::ZERO),
            Stamp::Missing | Stamp::Invalid | Stamp::Untrusted => None,
        }
    }
}

/// Headers up to which [`last_value`] walks rather than hashes.
const SCAN_MAX: usize = 16;

/// The last value of header `name`. Up to [`SCAN_MAX`] headers, found by walking
/// them: cheaper than the map's hash lookup, which hashes the name on every request,
/// since a header name that differs compares in a few instructions (its length, or
/// its standard-header tag).
pub fn last_value<'a>(
    headers: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> Option<&'a http::HeaderValue> {
    if headers.len() > SCAN_MAX {
        return headers.get_all(name).iter().next_back();
    }
    headers
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .last()
}

/// Classifies the queue header `raw` of a request dispatched at `now`.
///
/// `raw` is the header value (`None` when absent), `trusted_peer` whether the TCP peer
/// is in the trusted set, `max_age` the `--queue-max-age` plausibility window.
pub fn classify(
    raw: Option<&[u8]>,
    trusted_peer: bool,
    now: SystemTime,
    max_age: Duration,
) -> Stamp {
    classify_at(
        raw,
        trusted_peer,
        now.duration_since(UNIX_EPOCH).ok(),
        max_age,
    )
}

/// [`classify`] with `now` as time since the Unix epoch (`None`: the wall clock is
/// before 1970 and cannot judge any stamp).
pub fn classify_at(
    raw: Option<&[u8]>,
    trusted_peer: bool,
    now: Option<Duration>,
    max_age: Duration,
) -> Stamp {
    let Some(raw) = raw else {
        return Stamp::Missing;
    };
    if !trusted_peer {
        return Stamp::Untrusted;
    }
    let Some(stamp) = parse_stamp(raw) else {
        return Stamp::Invalid;
    };
    let Some(now) = now else {
        return Stamp::Invalid;
    };
    match now.checked_sub(stamp) {
        Some(queue_time) if queue_time <= max_age => Stamp::Ok(queue_time),
        Some(_) => Stamp::Invalid,
        None if stamp - now <= max_age => Stamp::Future,
        None => Stamp::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64, nanos: u32) -> Option<Duration> {
        Some(Duration::new(s, nanos))
    }

    #[test]
    fn accepts_nginx_msec() {
        assert_eq!(
            parse_stamp(b"1700000000.123"),
            secs(1_700_000_000, 123_000_000)
        );
        assert_eq!(
            parse_stamp(b"1700000000.5"),
            secs(1_700_000_000, 500_000_000)
        );
        assert_eq!(
            parse_stamp(b"1700000000.123456789"),
            secs(1_700_000_000, 123_456_789)
        );
        // Digits finer than a nanosecond are dropped, not rounded into the next unit.
        assert_eq!(
            parse_stamp(b"1700000000.9999999999"),
            secs(1_700_000_000, 999_999_999)
        );
    }

    #[test]
    fn accepts_every_integer_unit() {
        assert_eq!(parse_stamp(b"1700000000"), secs(1_700_000_000, 0));
        assert_eq!(
            parse_stamp(b"1700000000123"),
            secs(1_700_000_000, 123_000_000)
        );
        assert_eq!(
            parse_stamp(b"1700000000123456"),
            secs(1_700_000_000, 123_456_000)
        );
        assert_eq!(
            parse_stamp(b"1700000000123456789"),
            secs(1_700_000_000, 123_456_789)
        );
    }

    #[test]
    fn unit_cut_offs_are_2000_01_01_in_each_unit() {
        assert_eq!(parse_stamp(b"946684800"), secs(Y2000_SECS, 0));
        assert_eq!(parse_stamp(b"946684800000"), secs(Y2000_SECS, 0));
        assert_eq!(parse_stamp(b"946684800000000"), secs(Y2000_SECS, 0));
        assert_eq!(parse_stamp(b"946684800000000000"), secs(Y2000_SECS, 0));
        // Just under a cut-off is the coarser unit, far in the future but accepted here;
        // classify() is what rejects implausible dates.
        assert_eq!(parse_stamp(b"946684799999"), secs(946_684_799_999, 0));
    }

    #[test]
    fn accepts_prefix_fraction_and_whitespace() {
        let want = secs(1_700_000_000, 250_000_000);
        assert_eq!(parse_stamp(b"t=1700000000250000"), want);
        assert_eq!(parse_stamp(b"t=1700000000.25"), want);
        assert_eq!(parse_stamp(b"  t=1700000000.25 \t"), want);
        assert_eq!(parse_stamp(b"\t1700000000250\r\n"), want);
        // A fraction is a fraction of the unit the magnitude chose.
        assert_eq!(
            parse_stamp(b"1700000000250.5"),
            secs(1_700_000_000, 250_500_000)
        );
        assert_eq!(parse_stamp(b"0001700000000"), secs(1_700_000_000, 0));
    }

    #[test]
    fn rejects_bad_input() {
        let bad: &[&[u8]] = &[
            b"",
            b"   ",
            b"t=",
            b"abc",
            b"1700000000abc",
            b"0x6553f100",
            b"-1700000000",
            b"+1700000000",
            b"NaN",
            b"nan",
            b"inf",
            b"-inf",
            b"Infinity",
            b"1.7e9",
            b"1700000000.",
            b".5",
            b"1700000000.1.2",
            b"1700000000.-1",
            b"1700000000 .5",
            b"1 700 000 000",
            b"t =1700000000",
            b"T=1700000000",
            b"t=t=1700000000",
            b"946684799",
            b"946684799.999",
            b"0",
            b"123",
            b"18446744073709551616",
            b"99999999999999999999999999",
            b"\xff\xfe1700000000",
            "1700000000\u{a0}".as_bytes(),
        ];
        for input in bad {
            assert_eq!(
                parse_stamp(input),
                None,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn largest_nanosecond_stamp_does_not_overflow() {
        let max = u64::MAX;
        let text = max.to_string();
        assert_eq!(
            parse_stamp(text.as_bytes()),
            Some(Duration::from_nanos(max))
        );
    }

    #[test]
    fn eight_digits_at_a_time() {
        for text in [*b"00000000", *b"12345678", *b"99999999", *b"17641210"] {
            let chunk = u64::from_le_bytes(text);
            assert!(eight_digits(chunk));
            let want: u64 = std::str::from_utf8(&text).unwrap().parse().unwrap();
            assert_eq!(eight_digits_value(chunk), want);
        }
        for text in [
            *b"1234567.",
            *b"/2345678",
            *b"1234567:",
            *b"12\xff45678",
            *b" 1234567",
        ] {
            assert!(!eight_digits(u64::from_le_bytes(text)));
        }
    }

    #[test]
    fn last_value_is_the_last_of_that_name_walked_or_hashed() {
        let name = http::HeaderName::from_static("x-requesttime");
        for filler in [2usize, 40] {
            let mut h = http::HeaderMap::new();
            h.append(name.clone(), "1".parse().unwrap());
            for i in 0..filler {
                h.append(
                    http::HeaderName::from_bytes(format!("x-f{i}").as_bytes()).unwrap(),
                    "x".parse().unwrap(),
                );
            }
            h.append(name.clone(), "2".parse().unwrap());
            assert_eq!(last_value(&h, &name).map(|v| v.as_bytes()), Some(&b"2"[..]));
            assert_eq!(
                last_value(&h, &http::HeaderName::from_static("x-other")),
                None
            );
        }
    }

    const MAX_AGE: Duration = Duration::from_secs(3600);

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn classify_ok_is_now_minus_stamp() {
        let now = at(1_700_000_000, 500);
        assert_eq!(
            classify(Some(b"1700000000.123"), true, now, MAX_AGE),
            Stamp::Ok(Duration::from_millis(377))
        );
        assert_eq!(
            classify(Some(b"1700000000500"), true, now, MAX_AGE),
            Stamp::Ok(Duration::ZERO)
        );
        assert_eq!(
            classify(Some(b"1699996400.5"), true, now, MAX_AGE),
            Stamp::Ok(MAX_AGE),
            "exactly max_age old is still accepted"
        );
    }

    #[test]
    fn classify_future_is_recorded_as_zero() {
        let now = at(1_700_000_000, 0);
        let stamp = classify(Some(b"1700000000.250"), true, now, MAX_AGE);
        assert_eq!(stamp, Stamp::Future);
        assert_eq!(stamp.queue_time(), Some(Duration::ZERO));
        assert_eq!(
            classify(Some(b"1700003601"), true, now, MAX_AGE),
            Stamp::Invalid,
            "more than max_age ahead is not clock skew"
        );
    }

    #[test]
    fn classify_too_old_is_invalid() {
        let now = at(1_700_000_000, 0);
        let stamp = classify(Some(b"1699996399.999"), true, now, MAX_AGE);
        assert_eq!(stamp, Stamp::Invalid);
        assert_eq!(stamp.queue_time(), None);
    }

    #[test]
    fn classify_missing_untrusted_and_garbage() {
        let now = at(1_700_000_000, 0);
        assert_eq!(classify(None, true, now, MAX_AGE), Stamp::Missing);
        assert_eq!(classify(None, false, now, MAX_AGE), Stamp::Missing);
        // Untrusted wins over parsing: a forged stamp is never looked at.
        assert_eq!(
            classify(Some(b"1700000000"), false, now, MAX_AGE),
            Stamp::Untrusted
        );
        assert_eq!(
            classify(Some(b"junk"), false, now, MAX_AGE),
            Stamp::Untrusted
        );
        assert_eq!(classify(Some(b"junk"), true, now, MAX_AGE), Stamp::Invalid);
        assert_eq!(classify(Some(b""), true, now, MAX_AGE), Stamp::Invalid);
        assert_eq!(
            classify(
                Some(b"1700000000"),
                true,
                UNIX_EPOCH - Duration::from_secs(1),
                MAX_AGE
            ),
            Stamp::Invalid
        );
        for stamp in [Stamp::Missing, Stamp::Invalid, Stamp::Untrusted] {
            assert_eq!(stamp.queue_time(), None);
        }
    }

    /// Renders `nanos` since the epoch in `unit` (0 s, 1 ms, 2 µs, 3 ns), and returns the
    /// text with the precision that unit keeps.
    fn render(nanos: u64, unit: u8, prefix: bool, fraction: bool) -> (String, Duration) {
        let (per_unit, digits) = match unit {
            0 => (1_000_000_000, 9),
            1 => (1_000_000, 6),
            2 => (1_000, 3),
            _ => (1, 0),
        };
        let whole = nanos / per_unit;
        let rest = nanos % per_unit;
        let mut text = if prefix {
            "t=".to_string()
        } else {
            String::new()
        };
        text.push_str(&whole.to_string());
        let kept = if fraction && digits > 0 {
            text.push_str(&format!(".{rest:0digits$}"));
            nanos
        } else {
            whole * per_unit
        };
        (text, Duration::from_nanos(kept))
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..48)) {
            let _ = parse_stamp(&raw);
        }

        #[test]
        fn never_panics_on_stamp_like_text(raw in "[ t=0-9.\\-+eE]{0,40}") {
            if let Some(d) = parse_stamp(raw.as_bytes()) {
                prop_assert!(d >= Duration::from_secs(Y2000_SECS));
            }
        }

        #[test]
        fn valid_stamps_round_trip(
            // 2000-01-01 up to 2100-01-01 in nanoseconds.
            nanos in Y2000_SECS * 1_000_000_000..4_102_444_800u64 * 1_000_000_000,
            unit in 0u8..4,
            prefix in any::<bool>(),
            fraction in any::<bool>(),
            pad in "[ \t]{0,3}",
        ) {
            let (text, want) = render(nanos, unit, prefix, fraction);
            let padded = format!("{pad}{text}{pad}");
            prop_assert_eq!(parse_stamp(padded.as_bytes()), Some(want), "{}", padded);
        }

        #[test]
        fn the_msec_fast_path_agrees_with_the_general_one(raw in "[0-9]{8}[0-9a.]{2}[.5][0-9 ]{3}") {
            let fast = parse_msec(raw.as_bytes());
            if fast.is_some() {
                prop_assert_eq!(fast, parse_any(raw.as_bytes()), "{}", raw);
            }
        }

        #[test]
        fn the_msec_fast_path_reads_every_msec_and_only_those(
            raw in prop_oneof![
                "[0-9]{10}\\.[0-9]{3}",
                "[0-9./:]{14}",
                proptest::collection::vec(any::<u8>(), 14)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ],
        ) {
            let general = parse_any(raw.as_bytes());
            let msec = raw.len() == 14 && raw.as_bytes()[10] == b'.';
            prop_assert_eq!(parse_msec(raw.as_bytes()), general.filter(|_| msec), "{}", raw);
        }

        #[test]
        fn classify_never_panics(
            raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
            trusted in any::<bool>(),
            now_secs in 0u64..u64::MAX / 4,
            max_age in 0u64..u64::MAX / 4,
        ) {
            let now = UNIX_EPOCH + Duration::from_secs(now_secs);
            let _ = classify(raw.as_deref(), trusted, now, Duration::from_secs(max_age));
        }
    }
}
