//! Streaming histograms with exact counts. The range of each is fixed once,
//! from the values of the first records (all of them when they fit the
//! exact cap, see [`super::ReportParams::exact_cap`]): from the 0.5th to the
//! 99.5th percentile, so one outlier does not squash every bar into one;
//! values outside are counted in `below` and `above`, never dropped.

use serde::Serialize;

use crate::stats::quantile;

/// Bars per histogram.
pub const BINS: usize = 40;

/// One field's histogram (JSON: `{"field", "lo", "hi", "counts", "below",
/// "above", "missing", "count"}`). Bin `i` covers `[lo + i w, lo + (i+1) w)`
/// with `w = (hi - lo) / counts.len()`; the last bin includes `hi`. A value
/// `x` in range falls in bin `min(floor((x - lo) / (hi - lo) * bins), bins - 1)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub field: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    /// Values below `lo` / above `hi`.
    pub below: u64,
    pub above: u64,
    /// Records without this number (absent, or null for a NaN).
    pub missing: u64,
    /// Every record offered: the bins, `below`, `above` and `missing` together.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over the range the `sorted` values (NaNs left
    /// out) suggest: their 0.5th to 99.5th percentile, widened by one half
    /// on each side when that is a single value (or there are none).
    pub fn over(field: &str, sorted: &[f64], bins: usize) -> Histogram {
        let (lo, hi) = match (quantile(sorted, 0.005), quantile(sorted, 0.995)) {
            (Some(lo), Some(hi)) if hi > lo => (lo, hi),
            (Some(x), _) => (x - 0.5, x + 0.5),
            _ => (-0.5, 0.5),
        };
        Histogram {
            field: field.to_string(),
            lo,
            hi,
            counts: vec![0; bins.max(1)],
            below: 0,
            above: 0,
            missing: 0,
            count: 0,
        }
    }

    pub fn add(&mut self, x: f64) {
        self.count += 1;
        if x.is_nan() {
            self.missing += 1;
        } else if x < self.lo {
            self.below += 1;
        } else if x > self.hi {
            self.above += 1;
        } else {
            let bins = self.counts.len();
            let i = ((x - self.lo) / (self.hi - self.lo) * bins as f64).floor() as usize;
            self.counts[i.min(bins - 1)] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_value_once() {
        // 1..=1000: the range is [q(0.005), q(0.995)] = [5.995, 995.005].
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let mut h = Histogram::over("x", &values, 10);
        assert!((h.lo - 5.995).abs() < 1e-9 && (h.hi - 995.005).abs() < 1e-9);
        for &x in &values {
            h.add(x);
        }
        h.add(f64::NAN);
        assert_eq!((h.below, h.above, h.missing, h.count), (5, 5, 1, 1001));
        assert_eq!(h.counts.iter().sum::<u64>(), 990);
        // Bin width 98.901: bin 0 holds 6..=104.
        assert_eq!(h.counts[0], 99);
    }

    #[test]
    fn a_constant_gets_a_unit_range() {
        let mut h = Histogram::over("x", &[2.0, 2.0], 4);
        assert_eq!((h.lo, h.hi), (1.5, 2.5));
        h.add(2.0);
        assert_eq!(h.counts, vec![0, 0, 1, 0]);
        let h = Histogram::over("x", &[], 4);
        assert_eq!((h.lo, h.hi), (-0.5, 0.5));
    }
}
