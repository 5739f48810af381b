//! A latency sketch with 1% relative accuracy (the DDSketch idea): values
//! fall into logarithmic buckets whose width is 2% of their value, so any
//! quantile read back is within 1% of the true one. Sketches of minutes add
//! up to the sketch of a day, and a value can be taken out again.

use std::collections::BTreeMap;

/// Relative accuracy of quantiles.
pub const ACCURACY: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + ACCURACY) / (1.0 - ACCURACY)
}

/// Counts per bucket; bucket `i` holds values in (γ^(i-1), γ^i]; bucket
/// `i32::MIN` holds zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    buckets: BTreeMap<i32, i64>,
}

impl Sketch {
    fn bucket(value: i64) -> i32 {
        if value <= 0 {
            return i32::MIN;
        }
        ((value as f64).ln() / gamma().ln()).ceil() as i32
    }

    /// The value a bucket stands for: within `ACCURACY` of all it holds.
    fn value(bucket: i32) -> f64 {
        if bucket == i32::MIN {
            return 0.0;
        }
        let g = gamma();
        2.0 * g.powi(bucket) / (g + 1.0)
    }

    pub fn add(&mut self, value: i64) {
        *self.buckets.entry(Self::bucket(value)).or_insert(0) += 1;
    }

    /// Takes out a value added before.
    pub fn remove(&mut self, value: i64) {
        let bucket = Self::bucket(value);
        if let Some(count) = self.buckets.get_mut(&bucket) {
            *count -= 1;
            if *count <= 0 {
                self.buckets.remove(&bucket);
            }
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (bucket, count) in &other.buckets {
            let slot = self.buckets.entry(*bucket).or_insert(0);
            *slot += count;
            if *slot <= 0 {
                self.buckets.remove(bucket);
            }
        }
    }

    pub fn count(&self) -> i64 {
        self.buckets.values().sum()
    }

    /// The nearest-rank quantile `q` (0–1): the value at rank ⌈q·n⌉.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (bucket, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(Self::value(*bucket));
            }
        }
        None
    }

    /// Little-endian (bucket, count) pairs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buckets.len() * 12);
        for (bucket, count) in &self.buckets {
            out.extend_from_slice(&bucket.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out
    }

    /// Reads what `to_bytes` wrote; a damaged tail is ignored.
    pub fn from_bytes(bytes: &[u8]) -> Sketch {
        let mut sketch = Sketch::default();
        for pair in bytes.chunks_exact(12) {
            let (b, c) = pair.split_at(4);
            let (Ok(b), Ok(c)) = (<[u8; 4]>::try_from(b), <[u8; 8]>::try_from(c)) else {
                continue;
            };
            sketch
                .buckets
                .insert(i32::from_le_bytes(b), i64::from_le_bytes(c));
        }
        sketch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &mut [i64], q: f64) -> f64 {
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1] as f64
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut values: Vec<i64> = (0..10_000).map(|i| (i * i) % 97_301 + 1).collect();
        let mut sketch = Sketch::default();
        for v in &values {
            sketch.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
            let want = exact(&mut values, q);
            let got = sketch.quantile(q).expect("values");
            assert!(
                (got - want).abs() <= want * ACCURACY + 1e-9,
                "q{q}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn sketches_merge_round_trip_and_forget() {
        let mut a = Sketch::default();
        let mut b = Sketch::default();
        for v in [0, 5, 50, 500] {
            a.add(v);
        }
        b.add(5000);
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!(all.count(), 5);
        assert_eq!(Sketch::from_bytes(&all.to_bytes()), all);
        all.remove(5000);
        assert_eq!(all, a);
        assert_eq!(Sketch::default().quantile(0.5), None);
        assert_eq!(a.quantile(0.0), Some(0.0));
    }
}
