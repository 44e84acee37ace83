//! Running one attribution: the device pass over every journey (in parallel key ranges), the
//! fingerprint pass for conversions the device pass left unmatched, and the channel models.
//!
//! Device pass: per journey, each in-scope conversion gets its device candidates
//! ([`rules::candidates`]); matched conversions are credited at once (rows go out as soon as a
//! batch fills), unmatched ones with an ip and user_agent wait for the fingerprint pass when
//! probabilistic matching is on, the rest are organic. Fingerprint pass: the waiting
//! conversions' (app_id, ip, user_agent) keys are looked up in each segment's fingerprint index
//! (and the memtable runs' own), only the blocks it names are read for touchpoints with those
//! keys, and each waiting conversion is matched within the capped windows. Markov and Shapley then solve over the converting paths and the
//! devices' remaining touchpoints.

use super::args::{ModelChoice, Params};
use super::output::{self, ChannelRow, OutputBuilder, BATCH_ROWS};
use crate::attribution::rules::{self, Touch, TouchKind};
use crate::attribution::{markov, shapley, Path, ORGANIC};
use crate::touchpoint_join::{
    conversion_keys, for_each_fingerprint_touch, for_each_journey, key_successor, runs, split_keys, Conversions, FingerprintProbe, Journey,
    JoinColumns, JoinSpec, Key, FLAG_CLICK, FLAG_CONVERSION, FLAG_IMPRESSION, JOIN_RANGES_MAX,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use lookback_storage::segment::{key_hash, value_hash};
use lookback_storage::TableSnapshot;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc::Sender;

/// What a run produces: rows of `attribute(...)`, or channel totals.
pub enum Mode {
    Rows { projection: Vec<usize> },
    Channels,
}

/// One conversion as the credit step needs it.
struct Conversion<'a> {
    app: &'a [u8],
    id: [u8; 16],
    ts: i64,
    ty: &'a [u8],
    device: Option<&'a [u8]>,
    revenue: f64,
}

impl Conversion<'_> {
    /// The output row of this conversion credited to `touch` (None: organic).
    fn row<'r>(&'r self, touch: Option<&'r TouchInfo<'r>>, match_type: &'static str, confidence: Option<f64>, credit: f64) -> output::Row<'r> {
        output::Row {
            app: self.app,
            conversion_id: self.id,
            conversion_time: self.ts,
            conversion_type: self.ty,
            device: self.device,
            touch: touch.map(|t| (t.id, t.ts, kind_name(t.kind))),
            channel: touch.map_or(Some(ORGANIC.as_bytes()), |t| t.channel),
            campaign: touch.and_then(|t| t.campaign),
            match_type,
            confidence,
            credit,
            revenue: credit * self.revenue,
        }
    }
}

/// One touchpoint as the credit step needs it.
struct TouchInfo<'a> {
    id: [u8; 16],
    ts: i64,
    kind: TouchKind,
    channel: Option<&'a [u8]>,
    campaign: Option<&'a [u8]>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Match {
    Device,
    Fingerprint,
}

/// A conversion waiting for the fingerprint pass (owned: its journey is gone by then).
struct Pending {
    app: Vec<u8>,
    id: [u8; 16],
    ts: i64,
    ty: Vec<u8>,
    device: Option<Vec<u8>>,
    revenue: f64,
    ip: Vec<u8>,
    user_agent: Vec<u8>,
}

/// A touchpoint found by the fingerprint pass.
struct FingerprintTouch {
    touch: Touch,
    channel: Option<Vec<u8>>,
    campaign: Option<Vec<u8>>,
}

/// A device's touchpoints that are candidates of no conversion (a non-converting path), with
/// their ids while fingerprint matches may still take some of them.
struct Remaining {
    channels: Vec<u32>,
    ids: Vec<[u8; 16]>,
}

/// Channel ids of one range (interned channel text; None is the NULL channel).
#[derive(Default)]
struct Channels {
    /// Ids of non-NULL channels, looked up by the text without copying it.
    ids: HashMap<Vec<u8>, u32, ahash::RandomState>,
    null: Option<u32>,
    names: Vec<Option<Vec<u8>>>,
}

impl Channels {
    fn id(&mut self, channel: Option<&[u8]>) -> u32 {
        let known = match channel {
            Some(text) => self.ids.get(text).copied(),
            None => self.null,
        };
        if let Some(id) = known {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(channel.map(<[u8]>::to_vec));
        match channel {
            Some(text) => drop(self.ids.insert(text.to_vec(), id)),
            None => self.null = Some(id),
        }
        id
    }
}

/// The state of one key range (or of the fingerprint pass).
struct RangeState<'p> {
    params: &'p Params,
    out: Option<OutputBuilder>,
    /// Rule models in channel mode: (credit, revenue) per channel id of `channels`.
    sums: Vec<(f64, f64)>,
    organic: (f64, f64),
    attributed: (f64, f64),
    channels: Channels,
    converting: Vec<Path>,
    remaining: Vec<Remaining>,
    pending: Vec<Pending>,
    /// Touch ids credited by fingerprint matches (they leave the remaining paths).
    fingerprint_used: HashSet<[u8; 16]>,
    /// Per-journey scratch, kept to reuse its allocations.
    lists: TouchLists,
}

/// A journey's touchpoints by kind (index 0 clicks, 1 impressions; `TouchKind as usize`),
/// each in (ts, event_id) order, with their rows in the journey and whether a conversion used
/// them (markov and shapley only).
#[derive(Default)]
struct TouchLists {
    touches: [Vec<Touch>; 2],
    rows: [Vec<usize>; 2],
    used: [Vec<bool>; 2],
}

impl TouchLists {
    fn clear(&mut self) {
        for k in 0..2 {
            self.touches[k].clear();
            self.rows[k].clear();
            self.used[k].clear();
        }
    }

    fn push(&mut self, touch: Touch, row: usize) {
        let k = touch.kind as usize;
        self.touches[k].push(touch);
        self.rows[k].push(row);
    }
}

impl<'p> RangeState<'p> {
    fn new(params: &'p Params, mode: &Mode) -> Result<RangeState<'p>> {
        Ok(RangeState {
            params,
            out: match mode {
                Mode::Rows { projection } => Some(OutputBuilder::new(projection)?),
                Mode::Channels => None,
            },
            sums: Vec::new(),
            organic: (0.0, 0.0),
            attributed: (0.0, 0.0),
            channels: Channels::default(),
            converting: Vec::new(),
            remaining: Vec::new(),
            pending: Vec::new(),
            fingerprint_used: HashSet::new(),
            lists: TouchLists::default(),
        })
    }

    fn paths_wanted(&self) -> bool {
        matches!(self.params.model, ModelChoice::Markov { .. } | ModelChoice::Shapley)
    }

    /// Attributes every in-scope conversion of `journey` by device, and keeps its remaining
    /// touchpoints as a path.
    fn journey(&mut self, journey: &Journey<'_>) {
        let Some(key) = journey.key() else { return };
        let mut lists = std::mem::take(&mut self.lists);
        lists.clear();
        for (i, row) in journey.rows.iter().enumerate() {
            let kind = match row.flags & (FLAG_CLICK | FLAG_IMPRESSION) {
                FLAG_CLICK => TouchKind::Click,
                FLAG_IMPRESSION => TouchKind::Impression,
                _ => continue,
            };
            lists.push(Touch { ts: row.ts, id: row.id, kind }, i);
        }
        if self.paths_wanted() {
            lists.used[0].resize(lists.touches[0].len(), false);
            lists.used[1].resize(lists.touches[1].len(), false);
        }
        for row in journey.rows.iter().filter(|r| r.flags & FLAG_CONVERSION != 0 && self.params.converts_at(r.ts)) {
            let (chunk, at) = journey.chunk(row);
            let conversion = Conversion {
                app: key.app,
                id: row.id,
                ts: row.ts,
                ty: chunk.event_type.get(at).unwrap_or_default(),
                device: key.device,
                revenue: chunk.revenue(at).unwrap_or(0.0),
            };
            let (kind, found) = match key.device {
                Some(_) => rules::candidate_range(&lists.touches[0], &lists.touches[1], row.ts, self.params.windows),
                None => (TouchKind::Click, 0..0),
            };
            if !found.is_empty() {
                let k = kind as usize;
                let path: Vec<TouchInfo<'_>> = found
                    .clone()
                    .map(|t| {
                        let (tc, tr) = journey.chunk(&journey.rows[lists.rows[k][t]]);
                        let touch = &lists.touches[k][t];
                        TouchInfo { id: touch.id, ts: touch.ts, kind, channel: tc.channel(tr), campaign: tc.campaign(tr) }
                    })
                    .collect();
                if let Some(used) = lists.used[k].get_mut(found) {
                    used.fill(true);
                }
                self.credit(&conversion, &path, Match::Device);
                continue;
            }
            let fingerprint = match (&chunk.ip, &chunk.user_agent) {
                (Some(ip), Some(ua)) if self.params.probabilistic_window_us > 0 => ip.get(at).zip(ua.get(at)),
                _ => None,
            };
            match fingerprint {
                Some((ip, ua)) => self.pending.push(Pending {
                    app: key.app.to_vec(),
                    id: row.id,
                    ts: row.ts,
                    ty: conversion.ty.to_vec(),
                    device: key.device.map(<[u8]>::to_vec),
                    revenue: conversion.revenue,
                    ip: ip.to_vec(),
                    user_agent: ua.to_vec(),
                }),
                None => self.organic(&conversion),
            }
        }
        if self.paths_wanted() && key.device.is_some() {
            // The touches not used, in (ts, event_id) order: walk the journey's rows and
            // take each touch from its kind's list in turn.
            let mut remaining = Remaining { channels: Vec::new(), ids: Vec::new() };
            let mut next = [0usize; 2];
            for row in &journey.rows {
                let k = match row.flags & (FLAG_CLICK | FLAG_IMPRESSION) {
                    FLAG_CLICK => 0,
                    FLAG_IMPRESSION => 1,
                    _ => continue,
                };
                let t = next[k];
                next[k] += 1;
                if !lists.used[k][t] && self.params.path_touch_at(row.ts) {
                    let (tc, tr) = journey.chunk(row);
                    remaining.channels.push(self.channels.id(tc.channel(tr)));
                    if self.params.probabilistic_window_us > 0 {
                        remaining.ids.push(row.id);
                    }
                }
            }
            if !remaining.channels.is_empty() {
                self.remaining.push(remaining);
            }
        }
        self.lists = lists;
    }

    /// Credits `path` (candidates in path order, at least one) for `conversion`.
    fn credit(&mut self, conversion: &Conversion<'_>, path: &[TouchInfo<'_>], how: Match) {
        self.attributed.0 += 1.0;
        self.attributed.1 += conversion.revenue;
        let model = match self.params.model {
            ModelChoice::Rule(model) => model,
            ModelChoice::Markov { .. } | ModelChoice::Shapley => {
                let channels: Vec<u32> = path.iter().map(|t| self.channels.id(t.channel)).collect();
                self.converting.push(Path { channels, converted: true });
                return;
            }
        };
        let ts: Vec<i64> = path.iter().map(|t| t.ts).collect();
        for (i, credit) in rules::credits(model, conversion.ts, &ts) {
            let touch = &path[i];
            let revenue = credit * conversion.revenue;
            match self.out.as_mut() {
                Some(out) => {
                    let confidence = match how {
                        Match::Device => 1.0,
                        Match::Fingerprint => {
                            rules::fingerprint_confidence(conversion.ts - touch.ts, self.params.probabilistic_window_us)
                        }
                    };
                    let match_type = match how {
                        Match::Device => "device",
                        Match::Fingerprint => "fingerprint",
                    };
                    out.push(&conversion.row(Some(touch), match_type, Some(confidence), credit));
                }
                None => {
                    let id = self.channels.id(touch.channel) as usize;
                    if self.sums.len() <= id {
                        self.sums.resize(id + 1, (0.0, 0.0));
                    }
                    let sum = &mut self.sums[id];
                    sum.0 += credit;
                    sum.1 += revenue;
                }
            }
        }
    }

    fn organic(&mut self, conversion: &Conversion<'_>) {
        self.organic.0 += 1.0;
        self.organic.1 += conversion.revenue;
        if let Some(out) = self.out.as_mut() {
            out.push(&conversion.row(None, ORGANIC, None, 1.0));
        }
    }

    /// Sends the rows built so far when a batch is full (or `all`).
    fn flush(&mut self, emit: Emit<'_>, all: bool) -> Result<()> {
        let Some(out) = self.out.as_mut() else { return Ok(()) };
        if out.rows() >= BATCH_ROWS || (all && out.rows() > 0) {
            emit(out.finish()?)?;
        }
        Ok(())
    }
}

fn kind_name(kind: TouchKind) -> &'static str {
    match kind {
        TouchKind::Click => "click",
        TouchKind::Impression => "impression",
    }
}

/// Threads one attribution uses at most.
pub const ATTRIBUTION_THREADS_MAX: usize = 2;

/// Where a run's output batches go: a channel to the query's stream, or a list. An error
/// stops the run (the query was cancelled).
pub type Emit<'e> = &'e (dyn Fn(RecordBatch) -> Result<()> + Sync);

/// Emits into a channel from a blocking thread.
pub fn channel_emit(tx: &Sender<Result<RecordBatch>>) -> impl Fn(RecordBatch) -> Result<()> + Sync + '_ {
    |batch| tx.blocking_send(Ok(batch)).map_err(|_| DataFusionError::Execution("attribution: the query was cancelled".into()))
}

/// What a run reads, decided before it starts.
pub struct Prepared {
    spec: JoinSpec,
    /// The journeys of a point lookup (a narrow time range of a rule model), in key order.
    points: Option<Vec<Key>>,
}

impl Prepared {
    /// Whether the run looks up at most [`crate::touchpoint_join::POINT_LOOKUPS_MAX`] journeys
    /// (bounded work) instead of merging whole key ranges.
    pub fn is_point_lookup(&self) -> bool {
        self.points.is_some()
    }
}

/// Decides what a run of `params` over `snapshot` reads: the columns, and for a narrow time
/// range of a rule model the journeys of its conversions (point lookups). Anything wider, and
/// Markov and Shapley (which need every device's remaining touchpoints), merge whole key ranges.
pub fn prepare(snapshot: &TableSnapshot, params: &Params, mode: &Mode) -> Result<Prepared> {
    let wants = |column: usize| match mode {
        Mode::Rows { projection } => projection.contains(&column),
        Mode::Channels => true,
    };
    let mut spec = JoinSpec {
        columns: JoinColumns::of(&snapshot.schema)?,
        conversions: Conversions(params.conversion.clone()),
        fingerprints: params.probabilistic_window_us > 0,
        channel: wants(output::CHANNEL),
        campaign: wants(output::CAMPAIGN),
        revenue: wants(output::REVENUE),
        app: params.app.as_ref().map(|a| a.as_bytes().to_vec()),
        ts_window: None,
    };
    let points = match (params.model, params.since_us, params.until_us) {
        (ModelChoice::Rule(_), Some(since), Some(until)) => conversion_keys(snapshot, &spec, since, until)?,
        _ => None,
    };
    if let (Some(_), Some(since), Some(until)) = (&points, params.since_us, params.until_us) {
        // A rule model needs of each journey only its conversions in [since, until) and their
        // candidates, at most the widest window earlier: long journeys are read in that part.
        let widest = params.windows.click_us.max(params.windows.view_us);
        spec.ts_window = Some((since.saturating_sub(widest), until.saturating_sub(1)));
    }
    Ok(Prepared { spec, points })
}

/// Runs an attribution over `snapshot` as `prepared` says, emitting `attribute(...)` rows (or
/// the channel rows).
pub fn run(snapshot: &TableSnapshot, params: &Params, mode: &Mode, prepared: Prepared, threads: usize, emit: Emit<'_>) -> Result<()> {
    let Prepared { spec, points } = prepared;
    let runs = runs(snapshot, &spec)?;
    let bounds: Vec<(Option<Key>, Option<Key>)> = match points {
        Some(keys) => keys.into_iter().map(|k| (Some(key_successor(&k)), Some(k))).map(|(u, l)| (l, u)).collect(),
        None => {
            let keys = split_keys(&runs, &spec, JOIN_RANGES_MAX)?;
            (0..=keys.len()).map(|i| (i.checked_sub(1).map(|j| keys[j].clone()), keys.get(i).cloned())).collect()
        }
    };
    let ranges: Vec<(Option<&Key>, Option<&Key>)> = bounds.iter().map(|(l, u)| (l.as_ref(), u.as_ref())).collect();
    let next = AtomicUsize::new(0);
    let states: Mutex<Vec<(usize, RangeState<'_>)>> = Mutex::new(Vec::new());
    // Takes ranges in turn until none is left; each range's state is kept with its index.
    let work = || -> Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(lower, upper)) = ranges.get(i) else { return Ok(()) };
            let mut state = RangeState::new(params, mode)?;
            for_each_journey(&runs, &spec, lower, upper, |journey| {
                state.journey(journey);
                state.flush(emit, false)
            })?;
            state.flush(emit, true)?;
            states.lock().map_err(|_| DataFusionError::Internal("attribution: a worker panicked".into()))?.push((i, state));
        }
    };
    let threads = threads.clamp(1, ATTRIBUTION_THREADS_MAX).min(ranges.len());
    match threads {
        // One range (a point lookup) or one thread: on this thread, without spawning one.
        0 | 1 => work()?,
        _ => {
            let results: Vec<Result<()>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads).map(|_| scope.spawn(&work)).collect();
                workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(DataFusionError::Internal("attribution worker panicked".into())))).collect()
            });
            results.into_iter().collect::<Result<Vec<()>>>()?;
        }
    }
    let mut states = states.into_inner().map_err(|_| DataFusionError::Internal("attribution: a worker panicked".into()))?;
    // Combine in key order, not in the order threads finished: float sums and channel
    // numbering then come out the same on every run.
    states.sort_by_key(|(i, _)| *i);
    let mut states: Vec<RangeState<'_>> = states.into_iter().map(|(_, s)| s).collect();
    let mut last = RangeState::new(params, mode)?;
    let pending: Vec<Pending> = states.iter_mut().flat_map(|s| std::mem::take(&mut s.pending)).collect();
    if !pending.is_empty() {
        fingerprint_pass(&runs, &spec, pending, &mut last)?;
        last.flush(emit, true)?;
    }
    states.push(last);
    if let Mode::Channels = mode {
        let rows = channel_rows(params, states)?;
        emit(super::output::channel_batch(&rows)?)?;
    }
    Ok(())
}

/// Matches the waiting conversions by (app_id, ip, user_agent) within the capped windows.
fn fingerprint_pass(runs: &[crate::touchpoint_join::Run<'_>], spec: &JoinSpec, pending: Vec<Pending>, state: &mut RangeState<'_>) -> Result<()> {
    let params = state.params;
    let capped = params.windows.capped(params.probabilistic_window_us);
    let widest = capped.click_us.max(capped.view_us);
    type FingerprintKey = (Vec<u8>, Vec<u8>, Vec<u8>);
    let mut index: HashMap<FingerprintKey, Vec<FingerprintTouch>> = HashMap::new();
    let mut hashes: HashSet<u32> = HashSet::new();
    for p in &pending {
        index.entry((p.app.clone(), p.ip.clone(), p.user_agent.clone())).or_default();
        hashes.insert(key_hash(value_hash(&p.app), value_hash(&p.ip), value_hash(&p.user_agent)));
    }
    let earliest = pending.iter().map(|p| p.ts.saturating_sub(widest)).min().unwrap_or(i64::MIN);
    let latest = pending.iter().map(|p| p.ts).max().unwrap_or(i64::MAX);
    let all = JoinSpec { conversions: Conversions(Vec::new()), app: spec.app.clone(), ts_window: None, ..*spec };
    let probe = FingerprintProbe { hashes: &hashes, earliest, latest };
    let mut key: FingerprintKey = Default::default();
    for_each_fingerprint_touch(runs, &all, &probe, |chunk, at| {
        let kind = match chunk.flags[at] & (FLAG_CLICK | FLAG_IMPRESSION) {
            FLAG_CLICK => TouchKind::Click,
            _ => TouchKind::Impression,
        };
        let values = (chunk.app.get(at), chunk.ip.as_ref().and_then(|c| c.get(at)), chunk.user_agent.as_ref().and_then(|c| c.get(at)));
        let (Some(app), Some(ip), Some(ua)) = values else { return Ok(()) };
        // Reuse one key's buffers: most rows probed are hash hits of the key they look for.
        for (buffer, value) in [(&mut key.0, app), (&mut key.1, ip), (&mut key.2, ua)] {
            buffer.clear();
            buffer.extend_from_slice(value);
        }
        if let Some(list) = index.get_mut(&key) {
            list.push(FingerprintTouch {
                touch: Touch { ts: chunk.ts[at], id: chunk.id[at], kind },
                channel: chunk.channel(at).map(<[u8]>::to_vec),
                campaign: chunk.campaign(at).map(<[u8]>::to_vec),
            });
        }
        Ok(())
    })?;
    for list in index.values_mut() {
        list.sort_unstable_by(|a, b| (a.touch.ts, a.touch.id).cmp(&(b.touch.ts, b.touch.id)));
    }
    for p in &pending {
        let conversion = Conversion { app: &p.app, id: p.id, ts: p.ts, ty: &p.ty, device: p.device.as_deref(), revenue: p.revenue };
        let list = &index[&(p.app.clone(), p.ip.clone(), p.user_agent.clone())];
        let (clicks, impressions): (Vec<&FingerprintTouch>, Vec<&FingerprintTouch>) =
            list.iter().partition(|t| t.touch.kind == TouchKind::Click);
        let touches = |l: &[&FingerprintTouch]| l.iter().map(|t| t.touch).collect::<Vec<Touch>>();
        let (kind, found) = rules::candidate_range(&touches(&clicks), &touches(&impressions), p.ts, capped);
        if found.is_empty() {
            state.organic(&conversion);
            continue;
        }
        let chosen = match kind {
            TouchKind::Click => &clicks[found],
            TouchKind::Impression => &impressions[found],
        };
        let path: Vec<TouchInfo<'_>> = chosen
            .iter()
            .map(|t| TouchInfo { id: t.touch.id, ts: t.touch.ts, kind: t.touch.kind, channel: t.channel.as_deref(), campaign: t.campaign.as_deref() })
            .collect();
        state.fingerprint_used.extend(path.iter().map(|t| t.id));
        state.credit(&conversion, &path, Match::Fingerprint);
    }
    Ok(())
}

/// The channel rows of `attribute_channels(...)`, from every range's state.
fn channel_rows(params: &Params, states: Vec<RangeState<'_>>) -> Result<Vec<ChannelRow>> {
    let organic = states.iter().fold((0.0, 0.0), |a, s| (a.0 + s.organic.0, a.1 + s.organic.1));
    let attributed = states.iter().fold((0.0, 0.0), |a, s| (a.0 + s.attributed.0, a.1 + s.attributed.1));
    let mut totals: HashMap<Option<Vec<u8>>, (f64, f64)> = HashMap::new();
    match params.model {
        ModelChoice::Rule(_) => {
            for state in &states {
                for (id, sum) in state.sums.iter().enumerate() {
                    let total = totals.entry(state.channels.names[id].clone()).or_insert((0.0, 0.0));
                    total.0 += sum.0;
                    total.1 += sum.1;
                }
            }
        }
        ModelChoice::Markov { .. } | ModelChoice::Shapley => {
            let (names, paths) = global_paths(states);
            let (shares, revenue) = match params.model {
                ModelChoice::Markov { order } => {
                    let (effects, _) = markov::removal_effects(&paths, names.len(), order).map_err(DataFusionError::Plan)?;
                    (markov::split(&effects, attributed.0), markov::split(&effects, attributed.1))
                }
                _ => {
                    let values = shapley::values(&paths, names.len());
                    (shapley::scale(&values, attributed.0), shapley::scale(&values, attributed.1))
                }
            };
            for (i, name) in names.into_iter().enumerate() {
                totals.insert(name, (shares[i], revenue[i]));
            }
        }
    }
    if organic.0 > 0.0 {
        let total = totals.entry(Some(ORGANIC.as_bytes().to_vec())).or_insert((0.0, 0.0));
        total.0 += organic.0;
        total.1 += organic.1;
    }
    let mut rows: Vec<ChannelRow> = totals.into_iter().map(|(channel, (conversions, revenue))| ChannelRow { channel, conversions, revenue }).collect();
    rows.sort_by(|a, b| match (&a.channel, &b.channel) {
        (Some(x), Some(y)) => x.cmp(y),
        (x, y) => y.is_none().cmp(&x.is_none()).reverse().then(std::cmp::Ordering::Equal),
    });
    Ok(rows)
}

/// Every range's converting and remaining paths over one channel numbering, the remaining
/// paths without the touchpoints fingerprint matches took.
fn global_paths(states: Vec<RangeState<'_>>) -> (Vec<Option<Vec<u8>>>, Vec<Path>) {
    let used: HashSet<[u8; 16]> = states.iter().flat_map(|s| s.fingerprint_used.iter().copied()).collect();
    let mut global = Channels::default();
    let mut paths = Vec::new();
    for state in states {
        let map: Vec<u32> = state.channels.names.iter().map(|n| global.id(n.as_deref())).collect();
        for path in state.converting {
            paths.push(Path { channels: path.channels.iter().map(|&c| map[c as usize]).collect(), converted: true });
        }
        for remaining in state.remaining {
            let channels: Vec<u32> = match remaining.ids.is_empty() {
                true => remaining.channels.iter().map(|&c| map[c as usize]).collect(),
                false => remaining
                    .channels
                    .iter()
                    .zip(&remaining.ids)
                    .filter(|(_, id)| !used.contains(*id))
                    .map(|(&c, _)| map[c as usize])
                    .collect(),
            };
            if !channels.is_empty() {
                paths.push(Path { channels, converted: false });
            }
        }
    }
    (global.names, paths)
}

