//! Shapley-value attribution over channel sets.
//!
//! The characteristic function of a channel set S is the conversion rate of the paths whose set
//! of channels is exactly S (converting paths with that set over all paths with that set; 0 for
//! a set no path has). A channel's Shapley value is its average marginal contribution
//! `v(S ∪ {i}) − v(S)` over all orders of the observed channels. Up to
//! [`SHAPLEY_EXACT_CHANNELS_MAX`] channels it is computed exactly over all subsets; beyond, it
//! is estimated from [`SHAPLEY_PERMUTATIONS`] permutations drawn by a fixed-seed generator, so
//! the estimate is still the same on every run.

use super::Path;
use std::collections::HashMap;

/// Observed channels up to which values are exact (2^20 subsets).
pub const SHAPLEY_EXACT_CHANNELS_MAX: usize = 20;
/// Permutations sampled beyond that.
pub const SHAPLEY_PERMUTATIONS: usize = 4_096;

/// Shapley value of each channel id `0..channels` (0 for channels on no path).
pub fn values(paths: &[Path], channels: usize) -> Vec<f64> {
    let mut observed: Vec<u32> = paths.iter().flat_map(|p| p.channels.iter().copied()).collect();
    observed.sort_unstable();
    observed.dedup();
    let mut out = vec![0.0; channels];
    if observed.is_empty() {
        return out;
    }
    let position: HashMap<u32, usize> = observed.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    // (converting, all) paths per exact channel set, the set as sorted positions.
    let mut sets: HashMap<Vec<usize>, (f64, f64)> = HashMap::new();
    for path in paths.iter().filter(|p| !p.channels.is_empty()) {
        let mut set: Vec<usize> = path.channels.iter().map(|c| position[c]).collect();
        set.sort_unstable();
        set.dedup();
        let entry = sets.entry(set).or_insert((0.0, 0.0));
        entry.0 += path.converted as u8 as f64;
        entry.1 += 1.0;
    }
    let phi = match observed.len() <= SHAPLEY_EXACT_CHANNELS_MAX {
        true => exact(&sets, observed.len()),
        false => sampled(&sets, observed.len()),
    };
    for (i, &c) in observed.iter().enumerate() {
        assert!((c as usize) < channels, "channel id {c} out of range");
        out[c as usize] = phi[i];
    }
    out
}

/// `total` split over channels in proportion to their values (all zero when they sum to 0).
pub fn scale(values: &[f64], total: f64) -> Vec<f64> {
    let sum: f64 = values.iter().sum();
    if sum == 0.0 {
        return vec![0.0; values.len()];
    }
    values.iter().map(|v| total * v / sum).collect()
}

fn rate(&(converting, all): &(f64, f64)) -> f64 {
    converting / all
}

fn exact(sets: &HashMap<Vec<usize>, (f64, f64)>, n: usize) -> Vec<f64> {
    let mut v = vec![0.0; 1 << n];
    for (set, counts) in sets {
        let mask = set.iter().fold(0usize, |m, &i| m | (1 << i));
        v[mask] = rate(counts);
    }
    // weight[s] = s! (n − s − 1)! / n!, built as a product to stay in range.
    let weight: Vec<f64> = (0..n)
        .map(|s| {
            let mut w = 1.0 / n as f64;
            for k in 1..=s {
                w *= k as f64 / (n - k) as f64;
            }
            w
        })
        .collect();
    let mut phi = vec![0.0; n];
    for mask in 0..(1usize << n) {
        let size = mask.count_ones() as usize;
        for (i, p) in phi.iter_mut().enumerate() {
            if mask & (1 << i) == 0 {
                *p += weight[size] * (v[mask | (1 << i)] - v[mask]);
            }
        }
    }
    phi
}

fn sampled(sets: &HashMap<Vec<usize>, (f64, f64)>, n: usize) -> Vec<f64> {
    let value = |members: &[usize]| {
        let mut key = members.to_vec();
        key.sort_unstable();
        sets.get(&key).map_or(0.0, rate)
    };
    let mut rng = SplitMix64(0x6c6f_6f6b_6261_636b); // "lookback"
    let mut phi = vec![0.0; n];
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..SHAPLEY_PERMUTATIONS {
        for i in (1..n).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let mut before = 0.0;
        for k in 0..n {
            let after = value(&order[..=k]);
            phi[order[k]] += after - before;
            before = after;
        }
    }
    phi.iter().map(|p| p / SHAPLEY_PERMUTATIONS as f64).collect()
}

/// A small deterministic generator for the sampled estimate.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_channels_match_the_hand_computation() {
        // v({A}) = 1/2, v({B}) = 0, v({A,B}) = 1.
        // φA = 1/2 (v(A) − 0) + 1/2 (v(AB) − v(B)) = 1/4 + 1/2 = 3/4; φB = 1/2 · 0 + 1/2 · 1/2 = 1/4.
        let paths = [Path::new(&[0], true), Path::new(&[0], false), Path::new(&[1], false), Path::new(&[1, 0, 1], true)];
        let phi = values(&paths, 3);
        assert!((phi[0] - 0.75).abs() < 1e-12 && (phi[1] - 0.25).abs() < 1e-12 && phi[2] == 0.0, "{phi:?}");
        let shares = scale(&phi, 2.0);
        assert!((shares[0] - 1.5).abs() < 1e-12 && (shares[1] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn values_are_efficient_and_sampling_is_deterministic() {
        // Efficiency: the values sum to v(all observed) − v(∅) = v(all).
        let paths: Vec<Path> = (0..60u32).map(|i| Path::new(&[i % 5, (i * 7) % 5, (i / 3) % 5], i % 3 == 0)).collect();
        let phi = values(&paths, 5);
        let mut all: Vec<u32> = (0..5).collect();
        all.sort_unstable();
        let full: Vec<&Path> = paths.iter().filter(|p| {
            let mut s = p.channels.clone();
            s.sort_unstable();
            s.dedup();
            s == all
        }).collect();
        let v_all = if full.is_empty() { 0.0 } else { full.iter().filter(|p| p.converted).count() as f64 / full.len() as f64 };
        assert!((phi.iter().sum::<f64>() - v_all).abs() < 1e-9, "{phi:?} vs {v_all}");
        // Beyond the exact limit: the same numbers on every call.
        let many: Vec<Path> = (0..200u32).map(|i| Path::new(&[i % 23, (i * 5) % 23], i % 4 == 0)).collect();
        assert_eq!(values(&many, 23), values(&many, 23));
    }
}
