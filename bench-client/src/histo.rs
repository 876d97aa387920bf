//! Latency histograms: recording, percentiles, the V2 serialization (base64, for JSON) and
//! the .hgrm percentile-distribution text.
//!
//! Owns: the one histogram configuration every run uses (microseconds, 1 µs .. 1 hour,
//! 3 significant digits), so that histograms from any thread, run or machine add exactly.
//! Must never: average percentiles (merge histograms, then read percentiles off the sum).

use std::io::{self, Write};

use anyhow::{Context, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// The highest trackable value: one hour in µs. Anything above is recorded as one hour.
pub const HIGHEST_US: u64 = 3_600_000_000;
pub const SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy the crate's rules (low >= 1, high >= 2*low, sigfig <= 5).
    Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Records a latency given in nanoseconds, as whole microseconds, clamped to the range.
pub fn record_ns(hist: &mut Histogram<u64>, latency_ns: u64) {
    hist.saturating_record(latency_ns / 1_000);
}

/// The percentiles every table shows, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub p99_99: u64,
    pub max: u64,
}

pub fn percentiles(hist: &Histogram<u64>) -> Percentiles {
    if hist.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: hist.len(),
        min: hist.min(),
        mean: hist.mean(),
        p50: hist.value_at_quantile(0.50),
        p90: hist.value_at_quantile(0.90),
        p99: hist.value_at_quantile(0.99),
        p99_9: hist.value_at_quantile(0.999),
        p99_99: hist.value_at_quantile(0.9999),
        max: hist.max(),
    }
}

/// A histogram as stored in the results JSON: percentiles for people, V2 bytes for tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredHistogram {
    pub unit: String,
    pub percentiles: Percentiles,
    /// HdrHistogram V2 serialization (uncompressed), base64.
    pub hdr_v2_base64: String,
}

impl StoredHistogram {
    pub fn from_histogram(hist: &Histogram<u64>) -> anyhow::Result<StoredHistogram> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(hist, &mut bytes)
            .map_err(|e| anyhow!("serializing histogram: {e:?}"))?;
        Ok(StoredHistogram {
            unit: "us".into(),
            percentiles: percentiles(hist),
            hdr_v2_base64: BASE64.encode(bytes),
        })
    }

    pub fn to_histogram(&self) -> anyhow::Result<Histogram<u64>> {
        let bytes = BASE64
            .decode(&self.hdr_v2_base64)
            .context("histogram is not base64")?;
        let stored: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow!("histogram does not deserialize: {e:?}"))?;
        // Re-home into the standard configuration so that any two stored histograms add.
        let mut hist = new_histogram();
        hist.add(&stored)
            .map_err(|e| anyhow!("histogram out of range: {e:?}"))?;
        Ok(hist)
    }
}

/// Writes HdrHistogram's percentile-distribution text (.hgrm), values in milliseconds as
/// wrk2 and the online HdrHistogram plotter expect.
pub fn write_hgrm(hist: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    const US_PER_MS: f64 = 1_000.0;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / US_PER_MS;
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if hist.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            hist.mean() / US_PER_MS,
            hist.stdev() / US_PER_MS,
            hist.max() as f64 / US_PER_MS,
        )
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        hist.distinct_values()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            record_ns(&mut h, us * 1_000 + 999);
        }
        record_ns(&mut h, u64::MAX); // clamps, never panics
        h
    }

    #[test]
    fn records_microseconds_and_clamps() {
        let h = sample();
        assert_eq!(h.len(), 10_001);
        assert_eq!(h.min(), 1);
        assert_eq!(
            h.highest_equivalent(h.max()),
            h.highest_equivalent(HIGHEST_US)
        );
        let p = percentiles(&h);
        assert!(h.equivalent(p.p50, 5_000), "{}", p.p50);
        assert!(h.equivalent(p.p99, 9_900), "{}", p.p99);
    }

    #[test]
    fn json_round_trip_gives_the_same_histogram() {
        let h = sample();
        let stored = StoredHistogram::from_histogram(&h).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        let parsed: StoredHistogram = serde_json::from_str(&json).unwrap();
        let back = parsed.to_histogram().unwrap();
        assert_eq!(back, h);
        assert_eq!(parsed.percentiles, percentiles(&h));
    }

    #[test]
    fn empty_histogram_round_trips_and_prints() {
        let h = new_histogram();
        let stored = StoredHistogram::from_histogram(&h).unwrap();
        assert_eq!(stored.to_histogram().unwrap().len(), 0);
        let mut text = Vec::new();
        write_hgrm(&h, &mut text).unwrap();
        assert!(String::from_utf8(text).unwrap().contains("Total count"));
    }

    #[test]
    fn merged_percentiles_come_from_the_sum() {
        let mut fast = new_histogram();
        let mut slow = new_histogram();
        for _ in 0..900 {
            record_ns(&mut fast, 100_000);
        }
        for _ in 0..100 {
            record_ns(&mut slow, 10_000_000);
        }
        fast.add(&slow).unwrap();
        let p = percentiles(&fast);
        assert!(fast.equivalent(p.p50, 100));
        assert!(fast.equivalent(p.p99, 10_000));
    }

    #[test]
    fn hgrm_has_a_line_per_step_and_ends_at_100_percent() {
        let mut text = Vec::new();
        write_hgrm(&sample(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let last_value_line = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(
            last_value_line.contains("1.000000000000"),
            "{last_value_line}"
        );
    }
}
