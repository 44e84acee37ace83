//! Shapley-value attribution over channel sets.
//!
//! For each channel set T seen on some path, `r(T)` is the conversion rate of the paths whose
//! set of channels is exactly T (converting paths with that set over all paths with that set).
//! The coalition value of a set S is the sum of `r(T)` over the seen sets `T ⊆ S` (the
//! "simplified Shapley" characteristic function of Zhao et al., *Shapley Value Methods for
//! Attribution Modeling in Online Advertising*, 2018).
//!
//! Why not `v(S) = r(S)` alone: Shapley values always sum to v(all channels), and with `r(S)`
//! alone that is the rate of the paths holding *every* channel, which is 0 on almost any real
//! data (no journey touches all channels); the values then sum to 0, mix signs, and cannot be
//! scaled to the conversions. With the cumulative value the game is a sum of unanimity games
//! `r(T)·u_T`, whose Shapley values are known exactly: `φ_i = Σ_{T ∋ i} r(T) / |T|`. So the
//! values are exact for any number of channels (no sampling, no 2^n subsets), non-negative,
//! and sum to `Σ_T r(T)`.

use super::Path;
use std::collections::HashMap;

/// Shapley value of each channel id `0..channels` (0 for channels on no path).
pub fn values(paths: &[Path], channels: usize) -> Vec<f64> {
    // (converting, all) paths per exact channel set (sorted, distinct channel ids).
    let mut sets: HashMap<Vec<u32>, (u64, u64)> = HashMap::new();
    for path in paths.iter().filter(|p| !p.channels.is_empty()) {
        let mut set = path.channels.clone();
        set.sort_unstable();
        set.dedup();
        let entry = sets.entry(set).or_insert((0, 0));
        entry.0 += path.converted as u64;
        entry.1 += 1;
    }
    let mut phi = vec![0.0; channels];
    // A fixed order, so float sums come out the same on every run.
    let mut ordered: Vec<(&Vec<u32>, &(u64, u64))> = sets.iter().collect();
    ordered.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (set, &(converting, all)) in ordered {
        let share = converting as f64 / all as f64 / set.len() as f64;
        for &c in set {
            assert!((c as usize) < channels, "channel id {c} out of range");
            phi[c as usize] += share;
        }
    }
    phi
}

/// `total` split over channels in proportion to their values (all zero when they sum to 0).
pub fn scale(values: &[f64], total: f64) -> Vec<f64> {
    let sum: f64 = values.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; values.len()];
    }
    values.iter().map(|v| total * v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Shapley value by its definition, over every subset, for the cumulative game.
    fn by_definition(paths: &[Path], channels: usize) -> Vec<f64> {
        let n = channels;
        let rate = |mask: usize| -> f64 {
            let set: Vec<&Path> = paths.iter().filter(|p| p.channels.iter().fold(0, |m, &c| m | 1 << c) == mask).collect();
            if set.is_empty() { 0.0 } else { set.iter().filter(|p| p.converted).count() as f64 / set.len() as f64 }
        };
        let v = |s: usize| (1..1usize << n).filter(|t| t & !s == 0).map(rate).sum::<f64>();
        let fact = |k: usize| (1..=k).map(|x| x as f64).product::<f64>();
        (0..n)
            .map(|i| {
                (0..1usize << n)
                    .filter(|s| s & (1 << i) == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        fact(k) * fact(n - k - 1) / fact(n) * (v(s | 1 << i) - v(s))
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn two_channels_match_the_hand_computation() {
        // r({A}) = 1/2, r({B}) = 0, r({A,B}) = 1: φA = 1/2 + 1/2, φB = 0 + 1/2.
        let paths = [Path::new(&[0], true), Path::new(&[0], false), Path::new(&[1], false), Path::new(&[1, 0, 1], true)];
        let phi = values(&paths, 3);
        assert!((phi[0] - 1.0).abs() < 1e-12 && (phi[1] - 0.5).abs() < 1e-12 && phi[2] == 0.0, "{phi:?}");
        let shares = scale(&phi, 3.0);
        assert!((shares[0] - 2.0).abs() < 1e-12 && (shares[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn closed_form_equals_the_definition() {
        let paths: Vec<Path> = (0..80u32).map(|i| Path::new(&[i % 5, (i * 7) % 5, (i / 3) % 5], i % 3 == 0)).collect();
        let (fast, slow) = (values(&paths, 5), by_definition(&paths, 5));
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() < 1e-9, "{fast:?} vs {slow:?}");
        }
    }

    #[test]
    fn no_conversions_split_nothing() {
        let paths = [Path::new(&[0, 1], false)];
        assert_eq!(scale(&values(&paths, 2), 5.0), vec![0.0, 0.0]);
    }
}
