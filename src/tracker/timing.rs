//! One timing metric (`queue_time`, `server_wait` or `app_time`) over one interval.
//!
//! An HDR histogram answers percentiles within 1% and merges exactly across workers.
//! Beside it, [`Timing`] keeps what a histogram can only approximate, exactly: the sum
//! (so the mean is exact), the min and max, and the Prometheus bucket counts (so a
//! sample at exactly 100 ms is `le="0.1"`, not one bin over).

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::report::{MetricReport, PROMETHEUS_BUCKETS};

/// Histogram unit: microseconds, because proxies stamp in ms at best and µs is the
/// coarsest unit that still resolves a fast `server_wait`.
const NS_PER_UNIT: u64 = 1_000;
/// Largest value the histogram tells apart (one day, in µs); larger samples are clamped
/// into the top bin, their exact value still reaches `max` and `sum`.
pub(crate) const HIGHEST_US: u64 = 24 * 3600 * 1_000_000;
/// Two significant digits: bins are at most 1/256 of their value wide, so percentiles
/// are within 0.4%, in about 31 KiB per histogram.
pub(crate) const SIGFIG: u8 = 2;
/// Number of finite Prometheus buckets.
pub(crate) const BUCKETS: usize = PROMETHEUS_BUCKETS.len();

/// [`PROMETHEUS_BUCKETS`] in nanoseconds, rounded: the bucket search on the request
/// path compares integers.
const BOUNDS_NS: [u64; BUCKETS] = {
    let mut ns = [0u64; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        ns[i] = (PROMETHEUS_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};
/// CloudWatch takes at most 150 distinct values per datum.
pub const MAX_DISTRIBUTION: usize = 150;

/// One sample, prepared outside the recorder's lock so that the lock covers only adds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Exact value, saturated at ~584 years.
    ns: u64,
    /// Index of the first Prometheus bound ≥ the value; `BUCKETS` means only `+Inf`.
    bucket: u32,
    /// The histogram bin of the value (see [`Bins`]).
    bin: u32,
}

impl Sample {
    /// Converts, bucket-searches and bins `value`: the work that needs no lock.
    pub(crate) fn new(value: Duration) -> Sample {
        // In u64 (saturating at ~584 years): `as_nanos` would go through u128.
        let ns = value
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(value.subsec_nanos()));
        Sample {
            ns,
            bucket: BOUNDS_NS.partition_point(|&bound| bound < ns) as u32,
            bin: bin_for(ns / NS_PER_UNIT),
        }
    }
}

/// `hdrhistogram`'s layout for [`Timing`]'s bounds (lowest 1, [`HIGHEST_US`],
/// [`SIGFIG`]): 2·10^SIGFIG values at unit resolution need 256 sub-buckets, the upper
/// half of each power-of-two bucket is stored, the first bucket whole.
const SUB_BUCKET_MAGNITUDE: u32 = 8;
const SUB_BUCKET_HALF: u64 = 1 << (SUB_BUCKET_MAGNITUDE - 1);
/// Bins per histogram: (power-of-two buckets to cover [`HIGHEST_US`] + 1) × half.
const BINS: usize = {
    let mut buckets = 1;
    let mut untrackable = 1u64 << SUB_BUCKET_MAGNITUDE;
    while untrackable <= HIGHEST_US {
        untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * SUB_BUCKET_HALF as usize
};

/// The bin of a value in µs, as `Histogram::saturating_record` picks it: past the last
/// bin, the bin of [`HIGHEST_US`].
fn bin_for(us: u64) -> u32 {
    let bin = |us: u64| {
        let bucket =
            64 - SUB_BUCKET_MAGNITUDE - (us | ((1 << SUB_BUCKET_MAGNITUDE) - 1)).leading_zeros();
        ((u64::from(bucket) + 1) * SUB_BUCKET_HALF + (us >> bucket) - SUB_BUCKET_HALF) as usize
    };
    let i = bin(us);
    (if i < BINS { i } else { bin(HIGHEST_US) }) as u32
}

/// The lowest value (µs) of bin `i`.
fn bin_value(i: usize) -> u64 {
    let (bucket, sub) = ((i as u64) / SUB_BUCKET_HALF, (i as u64) % SUB_BUCKET_HALF);
    match bucket {
        0 => sub,
        b => (sub + SUB_BUCKET_HALF) << (b - 1),
    }
}

/// One histogram's bin counts as the recorder keeps them on the request path: an
/// increment per sample, where `Histogram::saturating_record` would also check its
/// range and keep its own min, max and total (about 60 instructions per sample, and a
/// request records two or three). The bins are the histogram's own,
/// so [`Bins::fold_into`] is exact (tested against `hdrhistogram`).
pub(crate) struct Bins {
    counts: Box<[u64]>,
}

impl fmt::Debug for Bins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.counts.iter().filter(|&&n| n > 0).count();
        f.debug_struct("Bins").field("used", &used).finish()
    }
}

impl Bins {
    /// Empty bins (31 KiB, zeroed).
    pub(crate) fn new() -> Bins {
        Bins {
            counts: vec![0; BINS].into_boxed_slice(),
        }
    }

    /// Counts `sample` in its bin.
    pub(crate) fn count(&mut self, sample: &Sample) {
        if let Some(n) = self.counts.get_mut(sample.bin as usize) {
            *n = n.saturating_add(1);
        }
    }

    /// Adds the counts to `timing`'s histogram.
    pub(crate) fn fold_into(&self, timing: &mut Timing) {
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                timing.hist.saturating_record_n(bin_value(i), n);
            }
        }
    }
}

/// The samples of one timing metric in one interval, for one worker or merged.
#[derive(Clone, PartialEq)]
pub struct Timing {
    /// Distribution in µs, for percentiles and CloudWatch's value/count pairs.
    pub(crate) hist: Histogram<u64>,
    /// Exact sum in ns; u128 so that no count of samples can overflow it.
    pub(crate) sum_ns: u128,
    /// Exact smallest sample in ns, `u64::MAX` while empty so that `min()` merges.
    pub(crate) min_ns: u64,
    /// Exact largest sample in ns, 0 while empty.
    pub(crate) max_ns: u64,
    /// Samples per Prometheus bucket, not cumulative: `buckets[i]` counts values in
    /// `(PROMETHEUS_BUCKETS[i-1], PROMETHEUS_BUCKETS[i]]`. Values above the last bound
    /// are only in the total count.
    pub(crate) buckets: [u64; BUCKETS],
}

/// A summary: the histogram's own `Debug` prints every one of its ~4000 bins.
impl fmt::Debug for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timing")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .field("min", &self.min())
            .field("max", &self.max())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("bins", &self.hist.iter_recorded().count())
            .field("buckets", &self.buckets)
            .finish()
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new()
    }
}

impl Timing {
    /// An empty metric. Allocates the histogram's fixed bins once; recording never
    /// allocates, because the histogram does not auto-resize.
    pub fn new() -> Timing {
        Timing {
            hist: Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG)
                .expect("constant histogram bounds are valid"),
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            buckets: [0; BUCKETS],
        }
    }

    /// Records one sample. Constant time, no allocation.
    pub fn record(&mut self, value: Duration) {
        self.add(&Sample::new(value));
    }

    /// Records a prepared sample.
    pub(crate) fn add(&mut self, sample: &Sample) {
        self.hist.saturating_record(sample.ns / NS_PER_UNIT);
        self.add_exact(sample);
    }

    /// Records a prepared sample in all but the histogram, whose bin the caller counts
    /// in [`Bins`]: the part that runs under the recorder's lock.
    pub(crate) fn add_exact(&mut self, sample: &Sample) {
        self.sum_ns = self.sum_ns.saturating_add(u128::from(sample.ns));
        self.min_ns = self.min_ns.min(sample.ns);
        self.max_ns = self.max_ns.max(sample.ns);
        if let Some(bucket) = self.buckets.get_mut(sample.bucket as usize) {
            *bucket = bucket.saturating_add(1);
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Exact sum of all samples.
    pub fn sum(&self) -> Duration {
        duration_from_ns(self.sum_ns)
    }

    /// Exact smallest sample, `None` when empty.
    pub fn min(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_nanos(self.min_ns))
    }

    /// Exact largest sample, `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// Value at `quantile` (0..=1) within the histogram's 0.4%, clamped to the exact
    /// min and max so that no percentile lies outside the samples. `None` when empty.
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        let (min, max) = (self.min()?, self.max()?);
        let us = self.hist.value_at_quantile(quantile);
        // max/min rather than clamp: clamp panics on min > max, which only corrupt
        // input could produce, and rendering must not panic on it.
        Some(Duration::from_micros(us).max(min).min(max))
    }

    /// Adds `other`'s samples: exact, as if every sample had been recorded here.
    pub fn merge(&mut self, other: &Timing) {
        if self.hist.add(&other.hist).is_err() {
            // Unreachable while every Timing has the same bounds (decode checks them);
            // if it ever happens, re-record bin by bin rather than lose samples.
            for bin in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(bin.value_iterated_to(), bin.count_at_value());
            }
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// The sink-facing summary, in seconds.
    pub fn render(&self) -> MetricReport {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        let mut cumulative = 0;
        let buckets = PROMETHEUS_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(&bound, n)| {
                cumulative = u64::saturating_add(cumulative, n);
                (bound, cumulative)
            })
            .collect();
        MetricReport {
            count: self.count(),
            sum: self.sum_ns as f64 / 1e9,
            min: secs(self.min()),
            max: secs(self.max()),
            p50: secs(self.quantile(0.5)),
            p90: secs(self.quantile(0.9)),
            p99: secs(self.quantile(0.99)),
            distribution: self.distribution(),
            buckets,
        }
    }

    /// At most [`MAX_DISTRIBUTION`] `(seconds, count)` pairs, ascending, counts summing
    /// to `count()`.
    ///
    /// Each histogram bin is one pair. When there are more bins than fit, adjacent bins
    /// are grouped so that the widest group (largest over smallest value) is as narrow
    /// as possible, which bounds the relative error of every percentile a consumer
    /// computes; each group stands at its count-weighted mean, which keeps the sum.
    fn distribution(&self) -> Vec<(f64, u64)> {
        let (Some(min), Some(max)) = (self.min(), self.max()) else {
            return Vec::new();
        };
        let (min, max) = (min.as_secs_f64(), max.as_secs_f64());
        let bins: Vec<(f64, u64)> = self
            .hist
            .iter_recorded()
            .map(|bin| {
                let us = self.hist.median_equivalent(bin.value_iterated_to());
                let secs = (us as f64 / 1e6).max(min).min(max);
                (secs, bin.count_since_last_iteration())
            })
            .collect();
        if bins.len() <= MAX_DISTRIBUTION {
            return bins;
        }
        // Bisect the ratio on a log scale; the greedy grouping is optimal for a ratio.
        let (mut feasible, mut infeasible) = ((max / min.max(1e-9)).max(1.0) * 2.0, 1.0f64);
        for _ in 0..64 {
            let mid = (feasible * infeasible).sqrt();
            if groups(&bins, mid).count() <= MAX_DISTRIBUTION {
                feasible = mid;
            } else {
                infeasible = mid;
            }
        }
        groups(&bins, feasible)
            .map(|group| {
                let count = group
                    .iter()
                    .fold(0u64, |sum, &(_, n)| sum.saturating_add(n));
                let weighted: f64 = group.iter().map(|&(v, n)| v * n as f64).sum();
                let first = group.first().map_or(0.0, |&(v, _)| v);
                let last = group.last().map_or(0.0, |&(v, _)| v);
                ((weighted / count as f64).max(first).min(last), count)
            })
            .collect()
    }
}

/// Greedy runs of `bins` whose last value is at most `ratio` times the first. A run
/// starting at zero holds only zeros, which is right: zero is its own value.
fn groups(bins: &[(f64, u64)], ratio: f64) -> impl Iterator<Item = &[(f64, u64)]> {
    let mut rest = bins;
    std::iter::from_fn(move || {
        let &(start, _) = rest.first()?;
        let len = rest
            .iter()
            .take_while(|&&(v, _)| v <= start * ratio)
            .count()
            .max(1);
        let (group, tail) = rest.split_at(len);
        rest = tail;
        Some(group)
    })
}

/// A u128 nanosecond total as a Duration, saturating past ~584 billion years.
fn duration_from_ns(ns: u128) -> Duration {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (ns % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn integer_bounds_match_the_published_ones() {
        for (ns, secs) in BOUNDS_NS.iter().zip(PROMETHEUS_BUCKETS) {
            assert_eq!(Duration::from_nanos(*ns).as_secs_f64(), *secs);
        }
        // A value on a bound is in that bound's bucket (`le`), one above is not.
        let on = Sample::new(ms(5));
        let above = Sample::new(ms(5) + Duration::from_nanos(1));
        assert_eq!(PROMETHEUS_BUCKETS[on.bucket as usize], 0.005);
        assert_eq!(above.bucket, on.bucket + 1);
    }

    #[test]
    fn ten_samples_render_exactly() {
        let mut t = Timing::new();
        for i in 0..10 {
            t.record(ms(i * 100));
        }
        let r = t.render();
        assert_eq!(r.count, 10);
        assert!((r.sum - 4.5).abs() < 1e-9, "{}", r.sum);
        assert_eq!(r.min, 0.0);
        assert_eq!(r.max, 0.9);
        assert!(r.p50 >= 0.4 && r.p50 <= 0.5 * 1.01, "{}", r.p50);
        assert!(
            (r.p50 - 0.4).abs() / 0.4 < 0.01,
            "p50 {} is the 5th of 10",
            r.p50
        );
        assert!((r.p90 - 0.8).abs() / 0.8 < 0.01, "{}", r.p90);
        assert_eq!(r.p99, 0.9, "clamped to the exact max");
        assert_eq!(r.distribution.len(), 10);
        assert_eq!(r.distribution.iter().map(|&(_, n)| n).sum::<u64>(), 10);
        for (i, &(v, n)) in r.distribution.iter().enumerate() {
            let want = i as f64 * 0.1;
            assert!((v - want).abs() <= want * 0.01, "{v} vs {want}");
            assert_eq!(n, 1);
        }
    }

    #[test]
    fn prometheus_buckets_are_exact_at_the_bounds() {
        let mut t = Timing::new();
        for value in [
            ms(1),
            ms(1) + Duration::from_nanos(1),
            ms(100),
            ms(101),
            ms(120_000),
        ] {
            t.record(value);
        }
        let r = t.render();
        assert_eq!(r.buckets.len(), PROMETHEUS_BUCKETS.len());
        let le = |bound: f64| r.buckets.iter().find(|&&(b, _)| b == bound).unwrap().1;
        assert_eq!(le(0.001), 1, "exactly 1 ms is le=0.001, 1 ms + 1 ns is not");
        assert_eq!(le(0.0025), 2);
        assert_eq!(le(0.1), 3);
        assert_eq!(le(0.25), 4);
        assert_eq!(le(60.0), 4, "two minutes is only in +Inf");
        assert_eq!(r.count, 5);
        assert!(r.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn empty_renders_zeros_and_all_bounds() {
        let r = Timing::new().render();
        assert_eq!(
            (r.count, r.sum, r.min, r.max, r.p99),
            (0, 0.0, 0.0, 0.0, 0.0)
        );
        assert!(r.distribution.is_empty());
        assert_eq!(r.buckets.len(), PROMETHEUS_BUCKETS.len());
        assert!(r.buckets.iter().all(|&(_, n)| n == 0));
    }

    #[test]
    fn distribution_of_many_distinct_values_fits_and_sums_to_count() {
        let mut t = Timing::new();
        for i in 0..10_000u64 {
            t.record(Duration::from_micros(i * 997 + 3));
        }
        t.record(Duration::ZERO);
        t.record(Duration::from_secs(3 * 3600));
        let r = t.render();
        assert!(
            r.distribution.len() <= MAX_DISTRIBUTION,
            "{}",
            r.distribution.len()
        );
        assert!(
            r.distribution.len() > MAX_DISTRIBUTION / 2,
            "{}",
            r.distribution.len()
        );
        assert_eq!(r.distribution.iter().map(|&(_, n)| n).sum::<u64>(), r.count);
        assert_eq!(r.count, 10_002);
        assert_eq!(r.distribution[0], (0.0, 1), "zero stays its own value");
        assert!(r.distribution.windows(2).all(|w| w[0].0 < w[1].0));
        let weighted: f64 = r.distribution.iter().map(|&(v, n)| v * n as f64).sum();
        assert!(
            (weighted - r.sum).abs() / r.sum < 0.01,
            "{weighted} vs {}",
            r.sum
        );
        assert_eq!(
            r.max,
            3.0 * 3600.0,
            "exact max beyond the histogram's range"
        );
        assert!(r.distribution.last().unwrap().0 <= r.max);
    }

    #[test]
    fn percentiles_stay_within_one_percent() {
        let mut t = Timing::new();
        let values: Vec<u64> = (1..=5000u64).map(|i| i * i * 37 % 9_000_001 + 1).collect();
        for &us in &values {
            t.record(Duration::from_micros(us));
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let exact = sorted[(q * sorted.len() as f64).ceil() as usize - 1] as f64;
            let got = t.quantile(q).unwrap().as_micros() as f64;
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn inconsistent_fields_render_without_panicking() {
        let mut t = Timing::new();
        t.record(ms(5));
        t.record(ms(7));
        (t.min_ns, t.max_ns) = (t.max_ns, t.min_ns);
        let r = t.render();
        assert_eq!(r.count, 2);
        assert_eq!(r.distribution.iter().map(|&(_, n)| n).sum::<u64>(), 2);
    }

    #[test]
    fn merge_adds_everything() {
        let (mut a, mut b, mut all) = (Timing::new(), Timing::new(), Timing::new());
        for i in 0..1000u64 {
            let v = Duration::from_micros(i * i + 7);
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(a.render(), all.render());
        a.merge(&Timing::new());
        assert_eq!(a, all, "merging an empty metric changes nothing");
    }

    #[test]
    fn bins_are_the_histograms_own() {
        let hist = Timing::new().hist;
        assert_eq!(BINS, hist.distinct_values());
        for i in 0..BINS {
            let low = bin_value(i);
            assert_eq!(bin_for(low) as usize, i, "bin {i} starts at {low} µs");
            assert_eq!(hist.lowest_equivalent(low), low, "bin {i}");
            if i + 1 < BINS {
                let high = bin_value(i + 1) - 1;
                assert_eq!(bin_for(high) as usize, i, "bin {i} ends at {high} µs");
                assert_eq!(hist.highest_equivalent(low), high, "bin {i}");
            }
        }
    }

    /// The same samples, recorded by `hdrhistogram` and counted in [`Bins`] then folded.
    fn both_ways(us: &[u64]) -> (Timing, Timing) {
        let (mut direct, mut folded) = (Timing::new(), Timing::new());
        let mut bins = Bins::new();
        for &us in us {
            let sample = Sample::new(Duration::from_micros(us));
            direct.add(&sample);
            folded.add_exact(&sample);
            bins.count(&sample);
        }
        bins.fold_into(&mut folded);
        (direct, folded)
    }

    fn recorded(t: &Timing) -> Vec<(u64, u64)> {
        t.hist
            .iter_recorded()
            .map(|b| (b.value_iterated_to(), b.count_at_value()))
            .collect()
    }

    #[test]
    fn folded_bins_equal_recording_at_the_edges() {
        let edges = [
            0,
            1,
            127,
            128,
            255,
            256,
            257,
            511,
            512,
            HIGHEST_US - 1,
            HIGHEST_US,
        ];
        let past = [HIGHEST_US + 1, HIGHEST_US * 2, u64::MAX / 1_000];
        let (direct, folded) = both_ways(&[&edges[..], &past[..]].concat());
        assert_eq!(recorded(&direct), recorded(&folded));
        assert_eq!(direct.count(), 14);
        assert_eq!(direct.render(), folded.render());
    }

    proptest::proptest! {
        #[test]
        fn folded_bins_equal_recording(
            samples in proptest::collection::vec((0u64..u64::MAX / 1_000, 0u32..64), 0..200),
        ) {
            // Every magnitude, not mostly huge values: a random value shifted down.
            let us: Vec<u64> = samples.iter().map(|&(v, shift)| v >> shift).collect();
            let (direct, folded) = both_ways(&us);
            proptest::prop_assert_eq!(recorded(&direct), recorded(&folded));
            proptest::prop_assert_eq!(direct.count(), folded.count());
            proptest::prop_assert_eq!(direct.render(), folded.render());
        }
    }
}
