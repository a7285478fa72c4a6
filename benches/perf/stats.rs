//! Percentiles of latency samples.

use serde::{Deserialize, Serialize};

/// Milliseconds: nearest-rank percentiles, the mean and the largest sample.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// From samples in nanoseconds.
    pub fn of_ns(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let rank = |p: f64| {
            let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[i.clamp(1, samples.len()) - 1])
        };
        Summary {
            n: samples.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: ms(samples[samples.len() - 1]),
            mean: samples.iter().map(|&s| ms(s)).sum::<f64>() / samples.len() as f64,
        }
    }
}

/// The median of a few numbers (runs of a repeated measurement).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
