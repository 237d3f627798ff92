//! The worker → master wire form of a [`Snapshot`].
//!
//! Compact and self-checking: a magic and version, then every field as an LEB128
//! varint, and each histogram as its recorded bins only (value delta, count), so an
//! idle worker sends about a hundred bytes and a busy one a few KiB.
//!
//! Why not hdrhistogram's V2 format: its 7.6 deserializer trusts the input. A 44-byte
//! header claiming a 4 GiB payload makes it allocate and zero 4 GiB before failing, and
//! a 9-byte varint decoding to `i64::MIN` panics on negation in debug builds. Decoding
//! here is bounded by the input's length and the histogram's fixed bin count.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::report::{LogLines, StampCounts};
use super::snapshot::Snapshot;
use super::timing::Timing;

/// Identifies the format; the last byte is the version, bumped on any change.
const MAGIC: &[u8; 5] = b"RWSS\x03";

impl Snapshot {
    /// Serializes for the master. Infallible and deterministic.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        let s = &self.stamps;
        let header = [
            u64::from(self.workers),
            self.shed,
            self.client_timeouts,
            s.ok,
            s.missing,
            s.invalid,
            s.future,
            s.untrusted,
            self.log_lines.critical,
            self.log_lines.error,
            self.log_lines.warning,
            self.log_lines.exception,
        ];
        for n in header.into_iter().chain(self.status_classes) {
            put(&mut out, n.into());
        }
        for d in [self.busy, self.capacity] {
            put(&mut out, d.as_nanos());
        }
        for timing in [&self.queue_time, &self.server_wait, &self.app_time] {
            encode_timing(&mut out, timing);
        }
        let codes = self.status_codes.nonzero();
        put(&mut out, codes.len() as u128);
        for (code, n) in codes {
            put(&mut out, code.into());
            put(&mut out, n.into());
        }
        out
    }

    /// Reads what [`Snapshot::encode`] wrote. Any other input, truncated, padded or
    /// corrupted, is an `Err` naming what was wrong; it never panics and allocates no
    /// more than one snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut r = Reader { bytes };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let workers = r.u32("workers")?;
        let shed = r.u64("shed")?;
        let client_timeouts = r.u64("client_timeouts")?;
        let stamps = StampCounts {
            ok: r.u64("stamps.ok")?,
            missing: r.u64("stamps.missing")?,
            invalid: r.u64("stamps.invalid")?,
            future: r.u64("stamps.future")?,
            untrusted: r.u64("stamps.untrusted")?,
        };
        let log_lines = LogLines {
            critical: r.u64("log_lines.critical")?,
            error: r.u64("log_lines.error")?,
            warning: r.u64("log_lines.warning")?,
            exception: r.u64("log_lines.exception")?,
        };
        let mut status_classes = [0; 5];
        for class in &mut status_classes {
            *class = r.u64("status_classes")?;
        }
        let busy = r.duration("busy")?;
        let capacity = r.duration("capacity")?;
        let queue_time = decode_timing(&mut r, "queue_time")?;
        let server_wait = decode_timing(&mut r, "server_wait")?;
        let app_time = decode_timing(&mut r, "app_time")?;
        let mut status_codes = super::status::StatusCodes::default();
        let distinct = r.u64("status_codes")?;
        if distinct > 500 {
            return Err(field(
                "status_codes",
                format!("{distinct} codes, more than HTTP has"),
            ));
        }
        for _ in 0..distinct {
            let code = u16::try_from(r.u64("status_codes")?)
                .map_err(|_| field("status_codes", "code out of range".into()))?;
            let n = r.u64("status_codes")?;
            if !status_codes.add_n(code, n) {
                return Err(field("status_codes", format!("code {code} out of range")));
            }
        }
        if !r.bytes.is_empty() {
            return Err(DecodeError::Trailing(r.bytes.len()));
        }
        Ok(Snapshot {
            queue_time,
            server_wait,
            app_time,
            stamps,
            shed,
            client_timeouts,
            status_classes,
            status_codes,
            busy,
            capacity,
            workers,
            log_lines,
        })
    }
}

fn encode_timing(out: &mut Vec<u8>, timing: &Timing) {
    put(out, timing.sum_ns);
    put(out, timing.min_ns.into());
    put(out, timing.max_ns.into());
    for n in timing.buckets {
        put(out, n.into());
    }
    let bins = timing.hist.iter_recorded().count();
    put(out, bins as u128);
    let mut previous = 0;
    for bin in timing.hist.iter_recorded() {
        // Each bin's highest equivalent value re-records into the same bin.
        let value = bin.value_iterated_to();
        put(out, (value - previous).into());
        put(out, bin.count_at_value().into());
        previous = value;
    }
}

fn decode_timing(r: &mut Reader<'_>, name: &'static str) -> Result<Timing, DecodeError> {
    let mut timing = Timing::new();
    timing.sum_ns = r.varint(name)?;
    timing.min_ns = r.u64(name)?;
    timing.max_ns = r.u64(name)?;
    for bucket in &mut timing.buckets {
        *bucket = r.u64(name)?;
    }
    let bins = r.u64(name)?;
    if bins > timing.hist.distinct_values() as u64 {
        return Err(field(
            name,
            format!("{bins} bins, more than the histogram has"),
        ));
    }
    let mut value = 0u64;
    for i in 0..bins {
        let delta = r.u64(name)?;
        if i > 0 && delta == 0 {
            return Err(field(name, "histogram values not ascending".into()));
        }
        value = value
            .checked_add(delta)
            .ok_or_else(|| field(name, "histogram value overflows".into()))?;
        let count = r.u64(name)?;
        if count == 0 {
            return Err(field(name, "empty histogram bin".into()));
        }
        timing
            .hist
            .record_n(value, count)
            .map_err(|_| field(name, format!("histogram value {value} out of range")))?;
    }
    check_timing(&timing, &timing.hist).map_err(|e| field(name, e.into()))?;
    Ok(timing)
}

/// Rejects a decoded metric whose exact fields contradict its histogram, which only
/// corruption produces and which would render nonsense (min above max, more samples in
/// the Prometheus buckets than in total).
fn check_timing(timing: &Timing, hist: &Histogram<u64>) -> Result<(), &'static str> {
    let bucketed = timing
        .buckets
        .iter()
        .try_fold(0u64, |acc, &n| acc.checked_add(n));
    if bucketed.is_none_or(|n| n > hist.len()) {
        return Err("bucket counts exceed the sample count");
    }
    let empty = hist.is_empty();
    if empty && (timing.sum_ns != 0 || timing.min_ns != u64::MAX || timing.max_ns != 0) {
        return Err("no samples but a sum, min or max");
    }
    if !empty && timing.min_ns > timing.max_ns {
        return Err("min above max");
    }
    Ok(())
}

/// Appends `n` as an unsigned LEB128 varint.
fn put(out: &mut Vec<u8>, mut n: u128) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Why bytes from a worker are not a snapshot. The master logs it and drops that
/// snapshot; it never panics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a snapshot of this format version.
    BadMagic,
    /// The input ended inside the snapshot.
    Truncated,
    /// Bytes left after a whole snapshot.
    Trailing(usize),
    /// `field` holds what the format cannot have (`problem` says what).
    Field {
        field: &'static str,
        problem: String,
    },
}

fn field(field: &'static str, problem: String) -> DecodeError {
    DecodeError::Field { field, problem }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => f.write_str("not an rwsgi snapshot (bad magic or version)"),
            DecodeError::Truncated => f.write_str("truncated snapshot"),
            DecodeError::Trailing(n) => write!(f, "{n} unexpected trailing bytes"),
            DecodeError::Field { field, problem } => write!(f, "{field}: {problem}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over untrusted input; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn varint(&mut self, name: &'static str) -> Result<u128, DecodeError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = *self.take(1)?.first().ok_or(DecodeError::Truncated)?;
            let bits = u128::from(byte & 0x7f);
            if shift == 126 && bits > 0b11 {
                return Err(field(name, "number too large".into()));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(field(name, "number too long".into()))
    }

    fn u64(&mut self, name: &'static str) -> Result<u64, DecodeError> {
        u64::try_from(self.varint(name)?).map_err(|_| field(name, "number too large".into()))
    }

    fn u32(&mut self, name: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.varint(name)?).map_err(|_| field(name, "number too large".into()))
    }

    fn duration(&mut self, name: &'static str) -> Result<Duration, DecodeError> {
        let ns = self.varint(name)?;
        let secs = u64::try_from(ns / 1_000_000_000)
            .map_err(|_| field(name, "duration too large".into()))?;
        Ok(Duration::new(secs, (ns % 1_000_000_000) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::header::Stamp;
    use crate::tracker::recorder::Recorder;
    use proptest::prelude::*;

    /// A snapshot with every field non-trivial, including a value past the histogram's
    /// range and a zero.
    fn busy_snapshot() -> Snapshot {
        let r = Recorder::new(4);
        for i in 0..3000u64 {
            let stamp = match i % 5 {
                0 => Stamp::Missing,
                1 => Stamp::Future,
                2 => Stamp::Invalid,
                3 => Stamp::Untrusted,
                _ => Stamp::Ok(Duration::from_micros(i * i)),
            };
            if i % 97 == 0 {
                r.record_shed(Duration::from_micros(i), &stamp);
            } else {
                r.record_dispatch(&stamp, Duration::from_nanos(i * 12_345));
                r.record_finish(
                    Duration::from_micros(i * 331 % 400_000),
                    100 + (i % 5) as u16 * 100,
                );
            }
        }
        r.record_dispatch(&Stamp::Ok(Duration::from_secs(48 * 3600)), Duration::ZERO);
        let mut s = r.take();
        s.merge(&Recorder::new(1).take());
        s.log_lines = crate::tracker::LogLines {
            critical: 1,
            error: 0,
            warning: 300,
            exception: 7,
        };
        s
    }

    #[test]
    fn round_trip_is_exact() {
        for snapshot in [Snapshot::new(), Recorder::new(2).take(), busy_snapshot()] {
            let bytes = snapshot.encode();
            assert_eq!(Snapshot::decode(&bytes).unwrap(), snapshot);
        }
        let busy = busy_snapshot();
        assert!(
            busy.encode().len() < 8 * 1024,
            "{} bytes",
            busy.encode().len()
        );
        assert!(Snapshot::new().encode().len() < 128);
    }

    #[test]
    fn decoded_snapshot_merges_like_the_original() {
        let original = busy_snapshot();
        let mut a = original.clone();
        let mut b = original.clone();
        a.merge(&original);
        b.merge(&Snapshot::decode(&original.encode()).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let bytes = busy_snapshot().encode();
        for len in 0..bytes.len() {
            assert!(
                Snapshot::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Snapshot::decode(&longer).unwrap_err(),
            DecodeError::Trailing(1)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(Snapshot::decode(b"").is_err());
        assert_eq!(
            Snapshot::decode(b"hello world").unwrap_err(),
            DecodeError::BadMagic
        );
        let mut wrong_version = Snapshot::new().encode();
        wrong_version[4] = MAGIC[4] + 1;
        assert!(Snapshot::decode(&wrong_version).is_err());
        // The right magic followed by an endless varint.
        let mut endless = MAGIC.to_vec();
        endless.extend([0xff; 40]);
        assert!(Snapshot::decode(&endless)
            .unwrap_err()
            .to_string()
            .contains("workers"));
    }

    #[test]
    fn inconsistent_fields_are_rejected() {
        let mut s = Snapshot::new();
        s.app_time.min_ns = 5;
        assert!(Snapshot::decode(&s.encode())
            .unwrap_err()
            .to_string()
            .contains("app_time"));

        let mut s = busy_snapshot();
        s.queue_time.buckets[0] = u64::MAX;
        assert!(Snapshot::decode(&s.encode())
            .unwrap_err()
            .to_string()
            .contains("queue_time"));

        let mut s = busy_snapshot();
        std::mem::swap(&mut s.server_wait.min_ns, &mut s.server_wait.max_ns);
        assert!(Snapshot::decode(&s.encode())
            .unwrap_err()
            .to_string()
            .contains("min above max"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Snapshot::decode(&bytes);
        }

        #[test]
        fn corrupted_snapshots_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = busy_snapshot().encode();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(s) = Snapshot::decode(&bytes) {
                // Whatever survives must still be safe to merge, render and re-encode.
                let mut merged = busy_snapshot();
                merged.merge(&s);
                let _ = merged.render("h", std::time::SystemTime::UNIX_EPOCH, Duration::from_secs(1));
                prop_assert_eq!(Snapshot::decode(&s.encode()).map(|d| d == s), Ok(true));
            }
        }
    }
}
