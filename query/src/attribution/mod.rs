//! Attribution: which touchpoints (clicks, impressions) get credit for a conversion.
//!
//! This module holds the rules themselves, free of DataFusion, over plain slices: matching a
//! conversion to its candidate touchpoints ([`rules`]), the rule-based credit models
//! ([`rules::credits`]), and the channel-level data-driven models ([`markov`], [`shapley`]).
//! The SQL table functions `attribute(...)` and `attribute_channels(...)` and the touchpoint
//! join that feeds these rules from storage build on it. The semantics are the ones in
//! docs/attribution.md; every function here is deterministic (the same input gives the same
//! numbers on every run: no sampling, no hash-order dependence).

pub mod markov;
pub mod rules;
pub mod shapley;

/// Name of the pseudo-channel of conversions without a matching touchpoint.
pub const ORGANIC: &str = "organic";

/// One channel path: the channels of a journey's touchpoints in (ts, event_id) order, and
/// whether it ended in a conversion.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub channels: Vec<u32>,
    pub converted: bool,
}

impl Path {
    pub fn new(channels: &[u32], converted: bool) -> Path {
        Path { channels: channels.to_vec(), converted }
    }
}
