//! Latency percentiles over a finished run (nearest-rank on the sorted sample).

use std::time::Duration;

/// Sorted latency samples of a run.
#[derive(Debug, Clone, Default)]
pub struct LatencySummary {
    sorted: Vec<Duration>,
}

impl LatencySummary {
    pub fn new(mut samples: Vec<Duration>) -> LatencySummary {
        samples.sort_unstable();
        LatencySummary { sorted: samples }
    }

    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// Nearest-rank percentile `p` in `[0, 100]`, in milliseconds; `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        assert!((0.0..=100.0).contains(&p), "percentile out of range");
        if self.sorted.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted.len()) - 1;
        Some(self.sorted[index].as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s = LatencySummary::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.percentile_ms(50.0), Some(50.0));
        assert_eq!(s.percentile_ms(99.0), Some(99.0));
        assert_eq!(s.percentile_ms(100.0), Some(100.0));
        assert_eq!(s.percentile_ms(0.0), Some(1.0));
        assert_eq!(LatencySummary::default().percentile_ms(50.0), None);
    }
}
