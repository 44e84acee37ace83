//! A tiny, portable, seedable pseudo-random generator (SplitMix64) and a Zipf sampler.
//!
//! The load generator must regenerate byte-identical events for other systems (ClickHouse,
//! PostgreSQL) from `(seed, batch_index)`, today and after dependency upgrades. `rand`'s
//! `SmallRng` explicitly makes no such promise across versions or platforms, so the generator
//! uses this fixed algorithm instead: SplitMix64 (Steele, Lea, Flood 2014), whose output is
//! defined by the twelve lines below. It is not cryptographic and not meant to be.

/// Golden-ratio increment of SplitMix64.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: 64 bits of state, one output per step.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        finalize(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` by multiply-high; the bias (< n / 2^64) is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The SplitMix64 output function (also a good 64-bit mixer).
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent stream seed from a seed and a stream number (a batch index, a
/// device index, a purpose salt).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    finalize(seed ^ finalize(stream.wrapping_add(GOLDEN_GAMMA)))
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^exponent`, or to
/// explicit weights, in O(1) per sample with Vose's alias method (one table lookup, so a 200k
/// device pool costs no binary search per event).
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Per slot: keep the slot when the low 32 random bits are below the threshold
    /// (`u32::MAX` = always), else jump to the alias. One 8-byte entry, so one cache miss.
    table: Vec<AliasSlot>,
}

#[derive(Debug, Clone, Copy)]
struct AliasSlot {
    keep_threshold: u32,
    alias: u32,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        assert!(n > 0, "zipf over an empty set");
        let weights: Vec<f64> = (0..n)
            .map(|rank| 1.0 / ((rank + 1) as f64).powf(exponent))
            .collect();
        Zipf::weighted(&weights)
    }

    /// Weighted choice over explicit non-negative weights (not necessarily Zipf-shaped).
    pub fn weighted(weights: &[f64]) -> Zipf {
        assert!(!weights.is_empty(), "weighted choice over an empty set");
        assert!(weights.len() <= u32::MAX as usize, "too many weights");
        assert!(
            weights.iter().all(|w| *w >= 0.0),
            "weights must be non-negative"
        );
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        assert!(total > 0.0, "weights must not all be zero");
        let mut keep: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| keep[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            keep[l] -= 1.0 - keep[s];
            if keep[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Leftovers are 1.0 up to rounding.
        for i in small.into_iter().chain(large) {
            keep[i] = 1.0;
        }
        let table = keep
            .iter()
            .zip(alias)
            .map(|(&k, alias)| {
                let keep_threshold = if k >= 1.0 {
                    u32::MAX
                } else {
                    (k * 4_294_967_296.0) as u32
                };
                AliasSlot {
                    keep_threshold,
                    alias,
                }
            })
            .collect();
        Zipf { table }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// One random word: the high half picks the slot, the low half decides keep or alias.
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let r = rng.next_u64();
        let slot = (((r >> 32) * self.table.len() as u64) >> 32) as usize;
        let entry = self.table[slot];
        if entry.keep_threshold == u32::MAX || (r as u32) < entry.keep_threshold {
            slot
        } else {
            entry.alias as usize
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(10, 1.0);
        let mut r = SplitMix64::new(7);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[z.sample(&mut r)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[4] && counts[4] > counts[9]);
        // Rank 0 has weight 1 / H(10) = 34.1%.
        assert!((33_000..35_200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn weighted_matches_weights() {
        let z = Zipf::weighted(&[0.8, 0.15, 0.05, 0.0]);
        let mut r = SplitMix64::new(3);
        let mut counts = [0u32; 4];
        for _ in 0..100_000 {
            counts[z.sample(&mut r)] += 1;
        }
        assert_eq!(counts[3], 0);
        assert!((79_000..81_000).contains(&counts[0]), "{counts:?}");
        assert!((4_500..5_500).contains(&counts[2]), "{counts:?}");
    }
}
