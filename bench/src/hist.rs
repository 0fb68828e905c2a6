//! The latency histogram (round trips and handshakes).

use std::time::Duration;

/// A log-linear histogram of nanoseconds: exact below 256, then 128
/// buckets per power of two (each at most 1/128 of its value wide, so a
/// quantile reported at the bucket's middle is within 0.4%).
#[derive(Clone)]
pub(crate) struct Hist {
    counts: Vec<u64>,
    pub(crate) total: u64,
    min: u64,
    pub(crate) max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Hist {
    pub(crate) fn new() -> Self {
        Hist {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (e - SUB_BITS)) as usize & (SUB - 1);
        ((e - SUB_BITS + 1) as usize) << SUB_BITS | sub
    }

    /// Lowest value of bucket `i` and its width.
    fn bucket(i: usize) -> (u64, u64) {
        let b = i >> SUB_BITS;
        let s = (i & (SUB - 1)) as u64;
        if b == 0 {
            (s, 1)
        } else {
            ((SUB as u64 + s) << (b - 1), 1 << (b - 1))
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    pub(crate) fn clear(&mut self) {
        if self.total > 0 {
            self.counts.fill(0);
        }
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
    }

    pub(crate) fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// The value at quantile `q` (0..=1), in ns.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                return (low + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub(crate) fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / self.total as u128) as u64
        }
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Hist;

    #[test]
    fn histogram_buckets_are_contiguous_and_precise() {
        let mut prev = 0;
        for v in (0..5000u64).chain((12..63).map(|e| (1u64 << e) + 12345)) {
            let i = Hist::index(v);
            assert!(i >= prev, "index goes back at {v}");
            prev = i;
            let (low, width) = Hist::bucket(i);
            assert!(
                low <= v && v < low + width,
                "{v} not in bucket {i} [{low}, +{width})"
            );
            assert!(width == 1 || width * 128 <= low, "bucket {i} too wide");
        }
        assert!(Hist::index(u64::MAX) < Hist::new().counts.len());
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.01, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut g = Hist::new();
        g.merge(&h);
        assert_eq!(g.quantile(0.5), h.quantile(0.5));
    }
}
