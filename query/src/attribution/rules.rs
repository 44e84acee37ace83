//! Matching a conversion to its candidate touchpoints, and the rule-based credit models.
//!
//! Rules (docs/attribution.md has them with examples): a touchpoint is a candidate of a
//! conversion at time `t` when it is a click with `t − click_window ≤ ts ≤ t` or an impression
//! with `t − view_window ≤ ts ≤ t` (both ends inclusive); if any candidate is a click, the
//! impressions are dropped (click beats impression); the path is the candidates in
//! (ts, event_id) order. Fingerprint matching uses the same rule with both windows capped at
//! the probabilistic window. Credits: first/last touch give 1 to one touch; linear 1/n each;
//! time decay weights `2^(−(t − ts)/half_life)`, normalised; position based gives 1 for one
//! touch, 0.5 each for two, else 0.4 to the first and last and 0.2 split over the middle.

use std::ops::Range;

/// Microseconds in a second (timestamps and windows are microseconds).
pub const MICROS_PER_SECOND: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchKind {
    /// Discriminants index per-kind lists (`kind as usize`).
    Click = 0,
    Impression = 1,
}

/// A touchpoint as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Touch {
    /// UTC microseconds.
    pub ts: i64,
    /// Event id (16 bytes; byte order is the order of its canonical text).
    pub id: [u8; 16],
    pub kind: TouchKind,
}

/// The lookback windows, in microseconds (each at least 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub click_us: i64,
    pub view_us: i64,
}

impl Windows {
    /// Both windows capped at `cap_us` (the probabilistic window of fingerprint matching).
    pub fn capped(self, cap_us: i64) -> Windows {
        Windows { click_us: self.click_us.min(cap_us), view_us: self.view_us.min(cap_us) }
    }

    fn of(&self, kind: TouchKind) -> i64 {
        match kind {
            TouchKind::Click => self.click_us,
            TouchKind::Impression => self.view_us,
        }
    }

    fn admits(&self, touch: &Touch, conversion_ts: i64) -> bool {
        touch.ts <= conversion_ts && touch.ts >= conversion_ts.saturating_sub(self.of(touch.kind))
    }
}

/// Candidates of a conversion at `conversion_ts` among `touches` (sorted by (ts, id)): their
/// indices in path order, click beats impression applied. Empty when nothing matches.
pub fn candidates(touches: &[Touch], conversion_ts: i64, windows: Windows) -> Vec<usize> {
    debug_assert!(touches.windows(2).all(|w| (w[0].ts, w[0].id) <= (w[1].ts, w[1].id)), "touches sorted by (ts, id)");
    assert!(windows.click_us >= 0 && windows.view_us >= 0, "windows are not negative");
    let widest = windows.click_us.max(windows.view_us);
    let start = touches.partition_point(|t| t.ts < conversion_ts.saturating_sub(widest));
    let end = touches.partition_point(|t| t.ts <= conversion_ts);
    let mut found: Vec<usize> = (start..end).filter(|&i| windows.admits(&touches[i], conversion_ts)).collect();
    if found.iter().any(|&i| touches[i].kind == TouchKind::Click) {
        found.retain(|&i| touches[i].kind == TouchKind::Click);
    }
    found
}

/// [`candidates`] over touches kept as two lists, `clicks` and `impressions` (each sorted by
/// (ts, id)): the clicks in the click window if there are any, else the impressions in the view
/// window, as the kind and the index range into that list (in path order). Two binary searches
/// per list, so a conversion costs O(log n + path) however long its journey is.
pub fn candidate_range(clicks: &[Touch], impressions: &[Touch], conversion_ts: i64, windows: Windows) -> (TouchKind, Range<usize>) {
    assert!(windows.click_us >= 0 && windows.view_us >= 0, "windows are not negative");
    let range = |list: &[Touch], window_us: i64| {
        let from = conversion_ts.saturating_sub(window_us);
        list.partition_point(|p| p.ts < from)..list.partition_point(|p| p.ts <= conversion_ts)
    };
    let found = range(clicks, windows.click_us);
    match found.is_empty() {
        false => (TouchKind::Click, found),
        true => (TouchKind::Impression, range(impressions, windows.view_us)),
    }
}

/// Confidence of a fingerprint match of a touch `age_us` before the conversion.
pub fn fingerprint_confidence(age_us: i64, probabilistic_window_us: i64) -> f64 {
    assert!(probabilistic_window_us > 0, "fingerprint matching needs a probabilistic window");
    1.0 - age_us as f64 / probabilistic_window_us as f64
}

/// A rule-based credit model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Model {
    FirstTouch,
    LastTouch,
    Linear,
    /// Weights halve every `half_life_us` (> 0) of age.
    TimeDecay { half_life_us: i64 },
    PositionBased,
}

impl Model {
    /// The model named `name` (`first_touch`, `last_touch`, `linear`, `time_decay`,
    /// `position_based`), or `None` for another name.
    pub fn named(name: &str, half_life_us: i64) -> Option<Model> {
        Some(match name {
            "first_touch" => Model::FirstTouch,
            "last_touch" => Model::LastTouch,
            "linear" => Model::Linear,
            "time_decay" => Model::TimeDecay { half_life_us },
            "position_based" => Model::PositionBased,
            _ => return None,
        })
    }
}

/// Credits of a path whose touches happened at `path_ts` (in path order, at least one) for a
/// conversion at `conversion_ts`: (position in the path, credit). First and last touch give one
/// entry; the other models one per touch, summing to 1.
pub fn credits(model: Model, conversion_ts: i64, path_ts: &[i64]) -> Vec<(usize, f64)> {
    let n = path_ts.len();
    assert!(n > 0, "a path has at least one touch");
    match model {
        Model::FirstTouch => vec![(0, 1.0)],
        Model::LastTouch => vec![(n - 1, 1.0)],
        Model::Linear => (0..n).map(|i| (i, 1.0 / n as f64)).collect(),
        Model::TimeDecay { half_life_us } => time_decay(conversion_ts, path_ts, half_life_us),
        Model::PositionBased => position_based(n),
    }
}

/// Normalised `2^(−age/half_life)`, computed relative to the youngest touch so that old paths
/// do not underflow to 0/0.
fn time_decay(conversion_ts: i64, path_ts: &[i64], half_life_us: i64) -> Vec<(usize, f64)> {
    assert!(half_life_us > 0, "time decay needs a positive half life");
    let exponents: Vec<f64> = path_ts.iter().map(|&ts| -((conversion_ts - ts) as f64) / half_life_us as f64).collect();
    let top = exponents.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = exponents.iter().map(|e| (e - top).exp2()).collect();
    let total: f64 = weights.iter().sum();
    weights.iter().enumerate().map(|(i, w)| (i, w / total)).collect()
}

fn position_based(n: usize) -> Vec<(usize, f64)> {
    match n {
        1 => vec![(0, 1.0)],
        2 => vec![(0, 0.5), (1, 0.5)],
        _ => (0..n)
            .map(|i| {
                let credit = if i == 0 || i == n - 1 { 0.4 } else { 0.2 / (n - 2) as f64 };
                (i, credit)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400 * MICROS_PER_SECOND;

    fn touch(ts: i64, id: u8, kind: TouchKind) -> Touch {
        Touch { ts, id: [id; 16], kind }
    }

    #[test]
    fn windows_include_both_ends_and_clicks_beat_impressions() {
        let t = 100 * DAY;
        let w = Windows { click_us: 7 * DAY, view_us: DAY };
        let touches = [
            touch(t - 7 * DAY - 1, 1, TouchKind::Click), // just outside
            touch(t - 7 * DAY, 2, TouchKind::Click),     // on the boundary
            touch(t - DAY, 3, TouchKind::Impression),    // on the view boundary
            touch(t, 4, TouchKind::Click),               // at the conversion
            touch(t + 1, 5, TouchKind::Click),           // after
        ];
        assert_eq!(candidates(&touches, t, w), vec![1, 3]);
        // Without clicks in the window, the impression is the path.
        let views = [touch(t - DAY - 1, 1, TouchKind::Impression), touch(t - DAY, 2, TouchKind::Impression), touch(t - 2 * DAY, 3, TouchKind::Click)];
        let mut sorted = views.to_vec();
        sorted.sort_by_key(|t| (t.ts, t.id));
        let found: Vec<u8> = candidates(&sorted, t, Windows { click_us: DAY, view_us: DAY }).iter().map(|&i| sorted[i].id[0]).collect();
        assert_eq!(found, vec![2]);
        // Equal timestamps keep (ts, id) order; the cap shrinks both windows.
        let ties = [touch(t - 5, 1, TouchKind::Click), touch(t - 5, 2, TouchKind::Click)];
        assert_eq!(candidates(&ties, t, w), vec![0, 1]);
        assert_eq!(candidates(&ties, t, w.capped(4)), Vec::<usize>::new());
        assert_eq!(candidates(&[], t, w), Vec::<usize>::new());
    }

    #[test]
    fn credit_models_follow_the_rules() {
        let t = 10 * DAY;
        let path = [t - 3 * DAY, t - 2 * DAY, t - DAY, t];
        assert_eq!(credits(Model::FirstTouch, t, &path), vec![(0, 1.0)]);
        assert_eq!(credits(Model::LastTouch, t, &path), vec![(3, 1.0)]);
        assert_eq!(credits(Model::Linear, t, &path), vec![(0, 0.25), (1, 0.25), (2, 0.25), (3, 0.25)]);
        assert_eq!(credits(Model::PositionBased, t, &path), vec![(0, 0.4), (1, 0.1), (2, 0.1), (3, 0.4)]);
        assert_eq!(credits(Model::PositionBased, t, &path[..2]), vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(credits(Model::PositionBased, t, &path[..1]), vec![(0, 1.0)]);
        // Half life of a day: weights 1/8, 1/4, 1/2, 1 over 15/8.
        let decay = credits(Model::TimeDecay { half_life_us: DAY }, t, &path);
        let expected = [1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0, 8.0 / 15.0];
        for ((i, c), e) in decay.iter().zip(expected) {
            assert!((c - e).abs() < 1e-12, "touch {i}: {c} vs {e}");
        }
        // Very old paths do not underflow.
        let old = credits(Model::TimeDecay { half_life_us: 1 }, t, &[0, 1]);
        assert_eq!(old, vec![(0, 1.0 / 3.0), (1, 2.0 / 3.0)]);
        assert_eq!(Model::named("time_decay", 5), Some(Model::TimeDecay { half_life_us: 5 }));
        assert_eq!(Model::named("markov", 5), None);
        assert!((fingerprint_confidence(DAY / 4, DAY) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn candidate_range_equals_candidates() {
        let mut seed = 0x5eed_u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..500 {
            let mut touches: Vec<Touch> = (0..(next() % 12))
                .map(|_| Touch { ts: (next() % 20) as i64, id: [(next() % 4) as u8; 16], kind: if next() % 2 == 0 { TouchKind::Click } else { TouchKind::Impression } })
                .collect();
            touches.sort_by_key(|t| (t.ts, t.id));
            let t = (next() % 22) as i64;
            let w = Windows { click_us: (next() % 8) as i64, view_us: (next() % 8) as i64 };
            let (clicks, impressions): (Vec<Touch>, Vec<Touch>) = touches.iter().partition(|t| t.kind == TouchKind::Click);
            let (kind, range) = candidate_range(&clicks, &impressions, t, w);
            let list = if kind == TouchKind::Click { &clicks } else { &impressions };
            let expected: Vec<Touch> = candidates(&touches, t, w).iter().map(|&i| touches[i]).collect();
            assert_eq!(list[range].to_vec(), expected);
        }
    }
}
