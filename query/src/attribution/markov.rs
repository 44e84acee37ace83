//! Markov-chain attribution, computed exactly.
//!
//! Paths become an order-k chain: the state after a touch is the tuple of the last k channels
//! (fewer at the start of a path), with START before the first touch and the absorbing states
//! CONV (a converting path ends) and NULL (a non-converting path ends). Transition
//! probabilities are the observed transition counts, normalised per state. The conversion
//! probability is the probability of absorption in CONV from START, solved as the linear system
//! `(I − Q) x = r` (Q: transient-to-transient probabilities, r: transient-to-CONV), not
//! simulated, so the result is the same on every run. The removal effect of a channel is
//! `1 − P(conv with every transition into a state holding the channel sent to NULL) / P(conv)`,
//! and a channel's share of the attributed conversions is its removal effect over the sum of
//! all removal effects.
//!
//! Cost: one dense solve per channel plus one, each cubic in the number of states (channels for
//! order 1; observed k-tuples for order k), which bounds the useful order to small k.

use super::Path;
use std::collections::HashMap;

/// States of one chain at most (a dense solve is cubic in them).
pub const MARKOV_STATES_MAX: usize = 4_096;

/// Removal effect of each channel id `0..channels` (0 for channels on no path), and the
/// conversion probability of the chain. Paths without channels are ignored.
pub fn removal_effects(paths: &[Path], channels: usize, order: usize) -> Result<(Vec<f64>, f64), String> {
    assert!(order >= 1, "markov order is at least 1");
    let chain = Chain::build(paths, order)?;
    let base = chain.conversion_probability(None);
    let mut effects = vec![0.0; channels];
    if base <= 0.0 {
        return Ok((effects, base));
    }
    let mut seen = vec![false; channels];
    for path in paths {
        for &c in &path.channels {
            assert!((c as usize) < channels, "channel id {c} out of range");
            seen[c as usize] = true;
        }
    }
    for (c, effect) in effects.iter_mut().enumerate() {
        if seen[c] {
            *effect = (1.0 - chain.conversion_probability(Some(c as u32)) / base).max(0.0);
        }
    }
    Ok((effects, base))
}

/// `total` split over channels in proportion to `effects` (all zero when they sum to zero).
pub fn split(effects: &[f64], total: f64) -> Vec<f64> {
    let sum: f64 = effects.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; effects.len()];
    }
    effects.iter().map(|e| total * e / sum).collect()
}

/// Transient states (index 0 is START) and the observed transition counts.
struct Chain {
    /// The channel tuple of each transient state (START: empty).
    states: Vec<Vec<u32>>,
    /// Per transient state: counts to other transient states, to CONV, to NULL.
    to_state: Vec<HashMap<usize, f64, ahash::RandomState>>,
    to_conv: Vec<f64>,
    to_null: Vec<f64>,
}

impl Chain {
    fn build(paths: &[Path], order: usize) -> Result<Chain, String> {
        let mut chain = Chain { states: vec![Vec::new()], to_state: vec![HashMap::default()], to_conv: vec![0.0], to_null: vec![0.0] };
        let mut index: HashMap<Vec<u32>, usize, ahash::RandomState> = HashMap::default();
        for path in paths.iter().filter(|p| !p.channels.is_empty()) {
            let mut from = 0usize;
            for end in 1..=path.channels.len() {
                let history = &path.channels[end.saturating_sub(order)..end];
                let to = match index.get(history) {
                    Some(&s) => s,
                    None => {
                        if chain.states.len() >= MARKOV_STATES_MAX {
                            return Err(format!("the order-{order} chain has over {MARKOV_STATES_MAX} states; use a lower markov_order"));
                        }
                        chain.states.push(history.to_vec());
                        chain.to_state.push(HashMap::default());
                        chain.to_conv.push(0.0);
                        chain.to_null.push(0.0);
                        index.insert(history.to_vec(), chain.states.len() - 1);
                        chain.states.len() - 1
                    }
                };
                *chain.to_state[from].entry(to).or_insert(0.0) += 1.0;
                from = to;
            }
            match path.converted {
                true => chain.to_conv[from] += 1.0,
                false => chain.to_null[from] += 1.0,
            }
        }
        Ok(chain)
    }

    /// P(absorption in CONV from START), with the states holding `removed` sent to NULL.
    fn conversion_probability(&self, removed: Option<u32>) -> f64 {
        let n = self.states.len();
        let dead = |s: usize| removed.is_some_and(|c| self.states[s].contains(&c));
        // Rows of (I − Q | r), in row-major order with n + 1 columns.
        let mut m = vec![0.0; n * (n + 1)];
        for s in 0..n {
            m[s * (n + 1) + s] = 1.0;
            let out: f64 = self.to_state[s].values().sum::<f64>() + self.to_conv[s] + self.to_null[s];
            if dead(s) || out == 0.0 {
                continue; // absorbed in NULL (removed), or never left (only START without paths)
            }
            for (&to, &count) in &self.to_state[s] {
                if !dead(to) {
                    m[s * (n + 1) + to] -= count / out;
                }
            }
            m[s * (n + 1) + n] = self.to_conv[s] / out;
        }
        solve(&mut m, n)[0]
    }
}

/// Solves the n × n system held with its right-hand side as rows of n + 1 columns, by Gaussian
/// elimination with partial pivoting. The matrix `I − Q` of an absorbing chain is non-singular.
fn solve(m: &mut [f64], n: usize) -> Vec<f64> {
    let w = n + 1;
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a * w + col].abs().total_cmp(&m[b * w + col].abs())).unwrap_or(col);
        if pivot != col {
            for k in 0..w {
                m.swap(col * w + k, pivot * w + k);
            }
        }
        let p = m[col * w + col];
        assert!(p.abs() > 1e-300, "I − Q of an absorbing chain is not singular");
        for row in col + 1..n {
            let factor = m[row * w + col] / p;
            if factor != 0.0 {
                for k in col..w {
                    m[row * w + k] -= factor * m[col * w + k];
                }
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row * w + k] * x[k]).sum();
        x[row] = (m[row * w + n] - tail) / m[row * w + row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_effects_of_a_small_chain_are_exact() {
        // Channels 0 = A, 1 = B. Paths: A→B conv, A null, B conv.
        // START→A 2/3, START→B 1/3; A→B 1/2, A→NULL 1/2; B→CONV 1.
        // P = 2/3 · 1/2 + 1/3 = 2/3. Without A: 1/3 (effect 1/2). Without B: 0 (effect 1).
        let paths = [Path::new(&[0, 1], true), Path::new(&[0], false), Path::new(&[1], true)];
        let (effects, p) = removal_effects(&paths, 3, 1).unwrap();
        assert!((p - 2.0 / 3.0).abs() < 1e-12, "{p}");
        assert!((effects[0] - 0.5).abs() < 1e-12 && (effects[1] - 1.0).abs() < 1e-12 && effects[2] == 0.0, "{effects:?}");
        let shares = split(&effects, 3.0);
        assert!((shares[0] - 1.0).abs() < 1e-12 && (shares[1] - 2.0).abs() < 1e-12, "{shares:?}");
    }

    #[test]
    fn loops_and_higher_orders_solve() {
        // A self-loop does not change absorption: A→A→CONV, A→NULL gives P = 1/2.
        let paths = [Path::new(&[0, 0], true), Path::new(&[0], false)];
        let (effects, p) = removal_effects(&paths, 1, 1).unwrap();
        assert!((p - 0.5).abs() < 1e-12 && (effects[0] - 1.0).abs() < 1e-12);
        // Order 2 keeps (A, B) apart from (B, B): the same answer for paths it can tell apart.
        let paths = [Path::new(&[0, 1, 1], true), Path::new(&[1, 1], false), Path::new(&[0, 1], false)];
        let (_, p2) = removal_effects(&paths, 2, 2).unwrap();
        // States: A, AB, BB, B. START→A 2/3 → AB; AB→BB 1/2, AB→NULL 1/2; BB→CONV 1/2, NULL 1/2.
        // START→B 1/3 → BB. P = 2/3 · 1/2 · 1/2 + 1/3 · 1/2 = 1/3.
        assert!((p2 - 1.0 / 3.0).abs() < 1e-12, "{p2}");
        assert_eq!(removal_effects(&[Path::new(&[0], false)], 1, 1).unwrap(), (vec![0.0], 0.0));
    }
}
