//! The touchpoint join: every (app_id, device_id) journey of the `events` table, gathered by a
//! merge over device-sorted runs, for the attribution functions.
//!
//! Why a merge and not a hash join: segments are sorted by (app_id, device_id, ts), so each
//! segment is already one run of journeys in key order. The memtable snapshot is sorted once
//! into one more run. A k-way merge over the runs' cursors yields each journey with its rows
//! from every run, holding one decoded block per run and one journey at a time: memory is
//! bounded by the block size and the largest journey, not by the table.
//!
//! Parallelism: the key space is cut into key ranges at the first keys of evenly spaced
//! blocks of the largest run ([`split_keys`]); each range is merged on its own, and a range's
//! cursors start at the first block whose app_id zone map can hold keys of the range.
//!
//! Only rows that matter to attribution are kept: touchpoints (event_type `click` or
//! `impression`) and conversions (event_type in the conversion list).

use crate::error::storage_error;
use datafusion::error::{DataFusionError, Result};
use lookback_common::{Batch, Column, ColumnValues, Schema, TextValues, Value};
use lookback_storage::segment::{BlockColumn, FingerprintIndex, Segment, TextDictionary};
use lookback_storage::TableSnapshot;
use std::cmp::Ordering;
use std::sync::Arc;

/// Row flags: a click, an impression, a conversion (a row may be a touchpoint and a conversion
/// when the conversion list names `click` or `impression`).
pub const FLAG_CLICK: u8 = 1;
pub const FLAG_IMPRESSION: u8 = 2;
pub const FLAG_CONVERSION: u8 = 4;

/// Key ranges a join is cut into at most (more ranges than threads even out skew).
pub const JOIN_RANGES_MAX: usize = 16;

/// Where the join's columns are in the table.
#[derive(Clone, Copy, Debug)]
pub struct JoinColumns {
    pub event_id: usize,
    pub app_id: usize,
    pub ts: usize,
    pub event_type: usize,
    pub device_id: usize,
    pub ip: usize,
    pub user_agent: usize,
    pub channel: usize,
    pub campaign: usize,
    pub revenue: usize,
}

impl JoinColumns {
    /// The columns in `schema`, which must be the events table's (by name and type).
    pub fn of(schema: &Schema) -> Result<JoinColumns> {
        let find = |name: &str| {
            schema.column_index(name).ok_or_else(|| {
                DataFusionError::Plan(format!("attribution reads table {}, which has no column {name}", schema.name))
            })
        };
        let columns = JoinColumns {
            event_id: find("event_id")?,
            app_id: find("app_id")?,
            ts: find("ts")?,
            event_type: find("event_type")?,
            device_id: find("device_id")?,
            ip: find("ip")?,
            user_agent: find("user_agent")?,
            channel: find("channel")?,
            campaign: find("campaign")?,
            revenue: find("revenue")?,
        };
        if schema.sort_key.get(..3) != Some(&[columns.app_id, columns.device_id, columns.ts][..]) {
            return Err(DataFusionError::Plan(format!("attribution needs {} sorted by (app_id, device_id, ts)", schema.name)));
        }
        Ok(columns)
    }

}

/// The entries a text column's codes point into.
#[derive(Clone)]
pub enum Dict<'s> {
    Segment(&'s TextDictionary),
    Owned(Arc<TextValues>),
}

impl Dict<'_> {
    /// Whether every entry is distinct (then codes compare like the text).
    fn distinct(&self) -> bool {
        match self {
            Dict::Segment(_) => true,
            // Owned text may repeat values (plain rows; block dictionaries are not checked).
            Dict::Owned(_) => false,
        }
    }

    /// Entries a code can point at (the distinct values, or the rows of plain text).
    fn len(&self) -> usize {
        match self {
            Dict::Segment(d) => d.len(),
            Dict::Owned(t) => t.entries(),
        }
    }

    fn entry(&self, code: u32) -> &[u8] {
        match self {
            Dict::Segment(d) => d.entry(code as usize),
            Dict::Owned(t) => match t.codes {
                Some(_) => t.entry_bytes(code as usize),
                None => t.get_bytes(code as usize),
            },
        }
    }
}

/// A text column of a chunk: a code per row (`NULL_CODE` for null) into `dict`.
pub struct TextColumn<'s> {
    codes: Vec<u32>,
    dict: Dict<'s>,
    /// Codes are equal exactly when the text is.
    distinct: bool,
}

const NULL_CODE: u32 = u32::MAX;

impl<'s> TextColumn<'s> {
    pub fn get(&self, row: usize) -> Option<&[u8]> {
        match self.codes[row] {
            NULL_CODE => None,
            code => Some(self.dict.entry(code)),
        }
    }

    fn from_block(column: BlockColumn<'s>) -> Result<TextColumn<'s>> {
        match column {
            BlockColumn::Codes { mut codes, validity, dictionary } => {
                if let Some(bits) = validity {
                    for (row, code) in codes.iter_mut().enumerate() {
                        if bits[row / 8] >> (row % 8) & 1 == 0 {
                            *code = NULL_CODE;
                        }
                    }
                }
                Ok(TextColumn { codes, dict: Dict::Segment(dictionary), distinct: true })
            }
            BlockColumn::Values(column) => TextColumn::from_column(column),
        }
    }

    fn from_column(column: Column) -> Result<TextColumn<'s>> {
        let Column { values: ColumnValues::Text(text), validity } = column else {
            return Err(DataFusionError::Internal("attribution: a text column is not text".into()));
        };
        let mut codes: Vec<u32> = match &text.codes {
            Some(codes) => codes.clone(),
            None => (0..text.len() as u32).collect(),
        };
        if let Some(valid) = validity {
            codes.iter_mut().zip(valid).filter(|(_, v)| !*v).for_each(|(c, _)| *c = NULL_CODE);
        }
        let dict = Dict::Owned(Arc::new(text));
        Ok(TextColumn { codes, distinct: dict.distinct(), dict })
    }
}

/// The join's columns of one block of one run, rows in key order.
pub struct Chunk<'s> {
    rows: usize,
    pub app: TextColumn<'s>,
    pub device: TextColumn<'s>,
    pub ts: Vec<i64>,
    pub event_type: TextColumn<'s>,
    pub id: Vec<[u8; 16]>,
    channel: Option<TextColumn<'s>>,
    campaign: Option<TextColumn<'s>>,
    revenue: Option<Vec<Option<f64>>>,
    pub ip: Option<TextColumn<'s>>,
    pub user_agent: Option<TextColumn<'s>>,
    /// Row flags ([`FLAG_CLICK`], ...), 0 for rows attribution ignores.
    pub flags: Vec<u8>,
    /// A memtable run's fingerprint index (one "block" per row), built on the first
    /// fingerprint pass that reads the run and kept with it.
    fingerprints: std::sync::OnceLock<FingerprintIndex>,
}

/// Which event types are conversions.
pub struct Conversions(pub Vec<String>);

impl<'s> Chunk<'s> {
    fn new(columns: Vec<BlockColumnOrColumn<'s>>, spec: &JoinSpec) -> Result<Chunk<'s>> {
        let mut it = columns.into_iter();
        let mut next = || it.next().ok_or_else(|| DataFusionError::Internal("attribution: a column is missing".into()));
        let app = next()?.text()?;
        let device = next()?.text()?;
        let ts = next()?.timestamps()?;
        let event_type = next()?.text()?;
        let id = next()?.uuids()?;
        let channel = if spec.channel { Some(next()?.text()?) } else { None };
        let campaign = if spec.campaign { Some(next()?.text()?) } else { None };
        let revenue = if spec.revenue { Some(next()?.floats()?) } else { None };
        let (ip, user_agent) = match spec.fingerprints {
            true => (Some(next()?.text()?), Some(next()?.text()?)),
            false => (None, None),
        };
        let rows = ts.len();
        let flags = row_flags(&event_type, &spec.conversions);
        let fingerprints = std::sync::OnceLock::new();
        Ok(Chunk { rows, app, device, ts, event_type, id, channel, campaign, revenue, ip, user_agent, flags, fingerprints })
    }

    pub fn channel(&self, row: usize) -> Option<&[u8]> {
        self.channel.as_ref().and_then(|c| c.get(row))
    }

    pub fn campaign(&self, row: usize) -> Option<&[u8]> {
        self.campaign.as_ref().and_then(|c| c.get(row))
    }

    pub fn revenue(&self, row: usize) -> Option<f64> {
        self.revenue.as_ref().and_then(|r| r[row])
    }

    fn key(&self, row: usize) -> KeyRef<'_> {
        KeyRef { app: self.app.get(row).unwrap_or_default(), device: self.device.get(row) }
    }

    fn same_key(&self, a: usize, b: usize) -> bool {
        let same = |c: &TextColumn<'_>| c.codes[a] == c.codes[b] || (!c.distinct && c.get(a) == c.get(b));
        same(&self.app) && same(&self.device)
    }
}

/// Flags of each row from its event_type, computed once per dictionary entry.
fn row_flags(event_type: &TextColumn<'_>, conversions: &Conversions) -> Vec<u8> {
    const UNKNOWN: u8 = u8::MAX;
    let mut memo: Vec<u8> = vec![UNKNOWN; event_type.dict.len()];
    let flags_of = |code: u32| {
        let ty = event_type.dict.entry(code);
        let mut flags = match ty {
            b"click" => FLAG_CLICK,
            b"impression" => FLAG_IMPRESSION,
            _ => 0,
        };
        if conversions.0.iter().any(|c| c.as_bytes() == ty) {
            flags |= FLAG_CONVERSION;
        }
        flags
    };
    event_type
        .codes
        .iter()
        .map(|&code| match memo.get_mut(code as usize) {
            None => 0, // NULL_CODE
            Some(f) => {
                if *f == UNKNOWN {
                    *f = flags_of(code);
                }
                *f
            }
        })
        .collect()
}

enum BlockColumnOrColumn<'s> {
    Block(BlockColumn<'s>),
    Column(Column),
}

impl<'s> BlockColumnOrColumn<'s> {
    fn text(self) -> Result<TextColumn<'s>> {
        match self {
            BlockColumnOrColumn::Block(b) => TextColumn::from_block(b),
            BlockColumnOrColumn::Column(c) => TextColumn::from_column(c),
        }
    }

    fn column(self) -> Column {
        match self {
            BlockColumnOrColumn::Block(b) => b.into_column(),
            BlockColumnOrColumn::Column(c) => c,
        }
    }

    fn timestamps(self) -> Result<Vec<i64>> {
        match self.column().values {
            ColumnValues::Timestamp(v) => Ok(v),
            _ => Err(DataFusionError::Internal("attribution: ts is not a timestamp".into())),
        }
    }

    fn uuids(self) -> Result<Vec<[u8; 16]>> {
        match self.column().values {
            ColumnValues::Uuid(v) => Ok(v),
            _ => Err(DataFusionError::Internal("attribution: event_id is not a uuid".into())),
        }
    }

    fn floats(self) -> Result<Vec<Option<f64>>> {
        let column = self.column();
        let ColumnValues::Float64(v) = column.values else {
            return Err(DataFusionError::Internal("attribution: revenue is not a double".into()));
        };
        Ok(match column.validity {
            Some(valid) => v.into_iter().zip(valid).map(|(x, ok)| ok.then_some(x)).collect(),
            None => v.into_iter().map(Some).collect(),
        })
    }
}

/// A journey key: app_id and device_id (None for null).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRef<'a> {
    pub app: &'a [u8],
    pub device: Option<&'a [u8]>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub app: Vec<u8>,
    pub device: Option<Vec<u8>>,
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef { app: &self.app, device: self.device.as_deref() }
    }
}

/// One sorted run: a segment, or the memtable snapshot sorted into one chunk.
pub enum Run<'s> {
    Segment(&'s Segment),
    Memory(Arc<Chunk<'s>>),
}

/// What a join reads.
pub struct JoinSpec {
    pub columns: JoinColumns,
    pub conversions: Conversions,
    /// Read ip and user_agent (probabilistic matching).
    pub fingerprints: bool,
    /// Read channel, campaign, revenue (a query that needs none of them skips decoding them).
    pub channel: bool,
    pub campaign: bool,
    pub revenue: bool,
    /// Only this app_id.
    pub app: Option<Vec<u8>>,
    /// Only rows with `from <= ts <= to`. For point lookups only (ranges of one key): a
    /// cursor seeks to `(lower, from)` and ends at the first row past `to`.
    pub ts_window: Option<(i64, i64)>,
}

impl JoinSpec {
    /// The columns read, in [`Chunk::new`]'s order.
    fn read_list(&self) -> Vec<usize> {
        let c = &self.columns;
        let mut list = vec![c.app_id, c.device_id, c.ts, c.event_type, c.event_id];
        let optional = [(self.channel, c.channel), (self.campaign, c.campaign), (self.revenue, c.revenue)];
        list.extend(optional.iter().filter(|(read, _)| *read).map(|(_, column)| *column));
        if self.fingerprints {
            list.extend([c.ip, c.user_agent]);
        }
        list
    }
}

/// The runs of `snapshot`: each segment, and the memtable's sorted runs
/// ([`crate::memtable_runs`]: cached across queries, so a busy memtable is not sorted again
/// for every query).
pub fn runs<'s>(snapshot: &'s TableSnapshot, spec: &JoinSpec) -> Result<Vec<Run<'s>>> {
    let mut runs: Vec<Run<'s>> = snapshot.segments.iter().map(|s| Run::Segment(s.as_ref())).collect();
    for chunk in crate::memtable_runs::sorted_runs(snapshot, spec)? {
        runs.push(Run::Memory(chunk));
    }
    Ok(runs)
}

/// `batches` (memtable batches of `schema`) as one sorted chunk of only the columns the join
/// reads (the read list starts with the sort key, app_id, device_id, ts), so a busy memtable
/// costs a sort of its keys and a gather of a few columns, not of whole rows.
pub(crate) fn memtable_run(schema: &Schema, batches: &[Arc<Batch>], spec: &JoinSpec) -> Result<Chunk<'static>> {
    let read = spec.read_list();
    let defs = read.iter().map(|&c| schema.columns[c].clone()).collect();
    let internal = |e: String| DataFusionError::Internal(format!("attribution: memtable columns: {e}"));
    let projected = Schema::new(&schema.name, defs, vec![0, 1, 2], Vec::new()).map_err(|e| internal(e.to_string()))?;
    let columns = read
        .iter()
        .map(|&c| Column::concat(schema.columns[c].ty, &batches.iter().map(|b| b.column(c)).collect::<Vec<&Column>>()))
        .collect();
    let all = Batch::try_new(&projected, columns).map_err(internal)?;
    let sorted = lookback_storage::sort::sort_batch(&projected, &all);
    let columns = sorted.into_columns().into_iter().map(BlockColumnOrColumn::Column).collect();
    Chunk::new(columns, spec)
}

/// Keys that cut the key space into at most `ranges` ranges: the first keys of evenly spaced
/// blocks of the largest run, distinct and increasing.
pub fn split_keys(runs: &[Run<'_>], spec: &JoinSpec, ranges: usize) -> Result<Vec<Key>> {
    let largest = runs.iter().max_by_key(|r| run_rows(r));
    let mut keys: Vec<Key> = match largest {
        Some(Run::Segment(segment)) if ranges > 1 && spec.app.is_none() => {
            let blocks = segment.block_count();
            let mut keys = Vec::new();
            for i in 1..ranges {
                let block = i * blocks / ranges;
                if block == 0 || block >= blocks {
                    continue;
                }
                let read = segment
                    .read_block_coded(block, &[spec.columns.app_id, spec.columns.device_id])
                    .map_err(|e| DataFusionError::from(storage_error(e.into())))?;
                let mut it = read.into_iter();
                let (Some(app), Some(device)) = (it.next(), it.next()) else { continue };
                let (app, device) = (TextColumn::from_block(app)?, TextColumn::from_block(device)?);
                keys.push(Key { app: app.get(0).unwrap_or_default().to_vec(), device: device.get(0).map(<[u8]>::to_vec) });
            }
            keys
        }
        _ => Vec::new(),
    };
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn run_rows(run: &Run<'_>) -> u64 {
    match run {
        Run::Segment(s) => s.rows(),
        Run::Memory(c) => c.rows as u64,
    }
}

/// A journey's row: where it is (pinned chunk, row) and what the rules need of it.
#[derive(Clone, Copy, Debug)]
pub struct JourneyRow {
    pub ts: i64,
    pub id: [u8; 16],
    pub flags: u8,
    pin: u32,
    row: u32,
}

/// One (app_id, device_id) journey: its touchpoint and conversion rows from every run, in
/// (ts, event_id) order.
pub struct Journey<'s> {
    pins: Vec<Arc<Chunk<'s>>>,
    pub rows: Vec<JourneyRow>,
}

impl<'s> Journey<'s> {
    pub fn chunk(&self, row: &JourneyRow) -> (&Chunk<'s>, usize) {
        (&self.pins[row.pin as usize], row.row as usize)
    }

    pub fn key(&self) -> Option<KeyRef<'_>> {
        self.rows.first().map(|r| {
            let (chunk, row) = self.chunk(r);
            chunk.key(row)
        })
    }
}

/// A cursor over one run, from a range's lower key.
struct Cursor<'s, 'r> {
    run: &'r Run<'s>,
    next_block: usize,
    chunk: Option<Arc<Chunk<'s>>>,
    pos: usize,
}

impl<'s, 'r> Cursor<'s, 'r> {
    fn start(run: &'r Run<'s>, lower: Option<&Key>, upper: Option<&Key>, spec: &JoinSpec) -> Result<Cursor<'s, 'r>> {
        let mut cursor = Cursor { run, next_block: 0, chunk: None, pos: 0 };
        let floor = spec.ts_window.map(|(from, _)| from);
        if let (Run::Segment(segment), Some(lower)) = (run, lower) {
            let below = |b: usize| block_below(segment, b, spec, lower) || floor.is_some_and(|f| block_of_key_below(segment, b, spec, lower, f));
            cursor.next_block = first_not(0..segment.block_count(), below);
            // Nothing of the range in this run (a point lookup of a device it lacks): no read.
            let past = cursor.next_block >= segment.block_count()
                || upper.is_some_and(|u| block_at_or_above(segment, cursor.next_block, spec, u));
            if past {
                cursor.next_block = segment.block_count();
                return Ok(cursor);
            }
        }
        cursor.load(spec)?;
        if let Some(lower) = lower {
            while let Some(chunk) = cursor.chunk.clone() {
                // Rows are in key order: binary search.
                let below = |r: usize| {
                    let key = chunk.key(r);
                    key < lower.as_ref() || (key == lower.as_ref() && floor.is_some_and(|f| chunk.ts[r] < f))
                };
                let skip = first_not(cursor.pos..chunk.rows, below);
                cursor.pos = skip;
                if skip < chunk.rows {
                    break;
                }
                cursor.load(spec)?;
            }
        }
        Ok(cursor)
    }

    /// Moves to the next block (or to the end), dropping the current chunk.
    fn load(&mut self, spec: &JoinSpec) -> Result<()> {
        self.chunk = None;
        self.pos = 0;
        match self.run {
            Run::Memory(chunk) => {
                if self.next_block == 0 {
                    self.chunk = Some(chunk.clone());
                }
                self.next_block = 1;
            }
            Run::Segment(segment) => {
                if self.next_block < segment.block_count() {
                    let read = segment
                        .read_block_coded(self.next_block, &spec.read_list())
                        .map_err(|e| DataFusionError::from(storage_error(e.into())))?;
                    let read = read.into_iter().map(BlockColumnOrColumn::Block).collect();
                    self.chunk = Some(Arc::new(Chunk::new(read, spec)?));
                    self.next_block += 1;
                }
            }
        }
        if self.chunk.as_ref().is_some_and(|c| c.rows == 0) {
            return self.load(spec);
        }
        Ok(())
    }

    fn key_ref(&self) -> Option<KeyRef<'_>> {
        self.chunk.as_ref().map(|c| c.key(self.pos))
    }

    /// Appends this run's rows of the journey at the cursor to `journey` and moves past them.
    fn take_journey(&mut self, journey: &mut Journey<'s>, spec: &JoinSpec) -> Result<()> {
        let Some(first) = self.chunk.clone() else { return Ok(()) };
        let first_row = self.pos;
        loop {
            let Some(chunk) = self.chunk.clone() else { return Ok(()) };
            let pin = journey.pins.len() as u32;
            let mut end = self.pos;
            if Arc::ptr_eq(&first, &chunk) && chunk.app.distinct && chunk.device.distinct {
                // Codes of distinct-entry dictionaries: equal codes, equal text.
                let (app, device) = (chunk.app.codes[first_row], chunk.device.codes[first_row]);
                let (apps, devices) = (&chunk.app.codes[..chunk.rows], &chunk.device.codes[..chunk.rows]);
                while end < chunk.rows && apps[end] == app && devices[end] == device {
                    end += 1;
                }
            } else {
                while end < chunk.rows && same_journey(&first, first_row, &chunk, end) {
                    end += 1;
                }
            }
            // A point lookup's window ends the cursor at its first row past `to`.
            let past = spec.ts_window.and_then(|(_, to)| (self.pos..end).find(|&r| chunk.ts[r] > to));
            let end = past.unwrap_or(end);
            let flagged = (self.pos..end).filter(|&r| chunk.flags[r] != 0);
            let mut any = false;
            for row in flagged {
                any = true;
                journey.rows.push(JourneyRow { ts: chunk.ts[row], id: chunk.id[row], flags: chunk.flags[row], pin, row: row as u32 });
            }
            if any {
                journey.pins.push(chunk.clone());
            }
            self.pos = end;
            if past.is_some() {
                self.chunk = None;
                self.next_block = usize::MAX;
                return Ok(());
            }
            if end < chunk.rows {
                return Ok(());
            }
            self.load(spec)?;
        }
    }
}

/// The first index of `range` where `below` is false (`range.end` if none); `below` must be
/// true for a prefix of the range and false after it.
fn first_not(range: std::ops::Range<usize>, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

fn same_journey(a: &Chunk<'_>, ar: usize, b: &Chunk<'_>, br: usize) -> bool {
    if std::ptr::eq(a, b) {
        return a.same_key(ar, br);
    }
    a.key(ar) == b.key(br)
}

/// A text zone-map bound's bytes (None: no bound, e.g. too long to store).
fn zone_text(bound: &Option<Value>) -> Option<Vec<u8>> {
    match bound {
        Some(Value::Text(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// The app_id zone-map bounds (min, max) of `block`, when both are stored.
fn app_bounds(segment: &Segment, block: usize, spec: &JoinSpec) -> Option<(Vec<u8>, Vec<u8>)> {
    let app = segment.zone_map(block, spec.columns.app_id);
    zone_text(&app.min).zip(zone_text(&app.max))
}

/// Whether every row of `block` is at or above `upper`, from its zone maps (false when unsure).
fn block_at_or_above(segment: &Segment, block: usize, spec: &JoinSpec, upper: &Key) -> bool {
    let text = zone_text;
    let Some((app_min, app_max)) = app_bounds(segment, block, spec) else { return false };
    match app_min.as_slice().cmp(&upper.app) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal if app_min != app_max => false,
        Ordering::Equal => {
            let device = segment.zone_map(block, spec.columns.device_id);
            match (&upper.device, text(&device.min)) {
                // Null devices sort first: they are below any non-null upper bound.
                (Some(bound), Some(min)) => device.null_count == 0 && min >= *bound,
                (None, _) => true,
                (Some(_), None) => false,
            }
        }
    }
}

/// Whether every row of `block` is `lower`'s key with ts below `floor`, from its zone maps
/// (false when unsure): the blocks of a long journey a point lookup's window skips.
fn block_of_key_below(segment: &Segment, block: usize, spec: &JoinSpec, lower: &Key, floor: i64) -> bool {
    let Some(device) = &lower.device else { return false };
    let Some((app_min, app_max)) = app_bounds(segment, block, spec) else { return false };
    let devices = segment.zone_map(block, spec.columns.device_id);
    let only_key = app_min == lower.app
        && app_max == lower.app
        && devices.null_count == 0
        && zone_text(&devices.min).as_ref() == Some(device)
        && zone_text(&devices.max).as_ref() == Some(device);
    only_key && matches!(segment.zone_map(block, spec.columns.ts).max, Some(Value::Timestamp(max)) if max < floor)
}

/// Whether every row of `block` is below `lower`, from its zone maps (false when unsure).
fn block_below(segment: &Segment, block: usize, spec: &JoinSpec, lower: &Key) -> bool {
    let text = zone_text;
    let Some((app_min, app_max)) = app_bounds(segment, block, spec) else { return false };
    match app_max.as_slice().cmp(&lower.app) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal if app_min != app_max => false,
        Ordering::Equal => {
            let Some(lower_device) = &lower.device else { return false };
            let device = segment.zone_map(block, spec.columns.device_id);
            let rows = segment.block_rows(block) as u64;
            match text(&device.max) {
                Some(max) => max < *lower_device,
                None => device.null_count == rows,
            }
        }
    }
}

/// Visits every journey with a key in `[lower, upper)` (and in `spec.app` when set), in key
/// order, merging all runs.
pub fn for_each_journey<'s>(
    runs: &[Run<'s>],
    spec: &JoinSpec,
    lower: Option<&Key>,
    upper: Option<&Key>,
    mut visit: impl FnMut(&Journey<'s>) -> Result<()>,
) -> Result<()> {
    let app_lower = spec.app.as_ref().map(|app| Key { app: app.clone(), device: None });
    let lower = match (lower, app_lower.as_ref()) {
        (Some(l), Some(a)) => Some(l.max(a)),
        (l, a) => l.or(a),
    };
    let mut cursors: Vec<Cursor<'s, '_>> = runs.iter().map(|r| Cursor::start(r, lower, upper, spec)).collect::<Result<_>>()?;
    // Runs with nothing in the range (compaction writes segments of disjoint key ranges, so
    // most ranges lie in one segment) leave the merge at once.
    cursors.retain(|c| c.key_ref().is_some_and(|k| upper.is_none_or(|u| k < u.as_ref())));
    let mut journey = Journey { pins: Vec::new(), rows: Vec::new() };
    let mut takes = vec![false; cursors.len()];
    loop {
        let mut min: Option<KeyRef<'_>> = None;
        for key in cursors.iter().filter_map(Cursor::key_ref) {
            if min.is_none_or(|m| key < m) {
                min = Some(key);
            }
        }
        let Some(min) = min else { return Ok(()) };
        if upper.is_some_and(|u| min >= u.as_ref()) || spec.app.as_ref().is_some_and(|a| min.app != a.as_slice()) {
            return Ok(());
        }
        match cursors.len() {
            1 => takes[0] = true,
            _ => {
                for (take, cursor) in takes.iter_mut().zip(&cursors) {
                    *take = cursor.key_ref() == Some(min);
                }
            }
        }
        journey.pins.clear();
        journey.rows.clear();
        for (cursor, _) in cursors.iter_mut().zip(&takes).filter(|(_, t)| **t) {
            cursor.take_journey(&mut journey, spec)?;
        }
        if !journey.rows.is_empty() {
            sort_rows(&mut journey.rows);
            visit(&journey)?;
        }
    }
}

/// (ts, event_id) order; runs are sorted by ts only, so ties and multi-run journeys sort here.
fn sort_rows(rows: &mut [JourneyRow]) {
    if rows.windows(2).any(|w| (w[0].ts, w[0].id) > (w[1].ts, w[1].id)) {
        rows.sort_unstable_by(|a, b| (a.ts, a.id).cmp(&(b.ts, b.id)));
    }
}

/// Point lookups a narrow attribution takes at most before it merges whole key ranges instead.
pub const POINT_LOOKUPS_MAX: usize = 64;
/// Segment time indexes kept in memory at most (each is 12 bytes per conversion row).
const TIME_INDEXES_MAX: usize = 512;

/// A segment's rows of one event type as (ts, row), sorted: built on first use from the
/// event-type bitmap and the ts column, then kept (segments are immutable), so a query narrowed
/// to a time range finds its conversions with two binary searches.
type TimeIndex = Arc<Vec<(i64, u32)>>;

fn time_indexes() -> &'static std::sync::Mutex<std::collections::HashMap<(std::path::PathBuf, String), TimeIndex>> {
    static INDEXES: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<(std::path::PathBuf, String), TimeIndex>>> =
        std::sync::OnceLock::new();
    INDEXES.get_or_init(Default::default)
}

fn time_index(segment: &Segment, columns: &JoinColumns, event_type: &str) -> Result<TimeIndex> {
    let key = (segment.path().to_path_buf(), event_type.to_string());
    let poisoned = || DataFusionError::Internal("attribution: time index lock poisoned".into());
    if let Some(found) = time_indexes().lock().map_err(|_| poisoned())?.get(&key) {
        return Ok(found.clone());
    }
    let storage = |e: lookback_storage::StorageError| DataFusionError::from(storage_error(e.into()));
    let rows: Vec<u32> = match segment.bitmap(columns.event_type, event_type).map_err(storage)? {
        Some(bitmap) => bitmap.iter().collect(),
        None => return Err(DataFusionError::Internal("attribution: events segments index event_type".into())),
    };
    let mut index: Vec<(i64, u32)> = Vec::with_capacity(rows.len());
    let mut at = 0;
    for block in 0..segment.block_count() {
        let (first, count) = (segment.block_first_row(block), segment.block_rows(block) as u64);
        let end = rows[at..].partition_point(|&r| (r as u64) < first + count) + at;
        if end > at {
            let read = segment.read_block_coded(block, &[columns.ts]).map_err(storage)?;
            let ts = BlockColumnOrColumn::Block(read.into_iter().next().ok_or_else(|| DataFusionError::Internal("ts missing".into()))?)
                .timestamps()?;
            for &row in &rows[at..end] {
                let local = (row as u64 - first) as usize;
                let value = *ts.get(local).ok_or_else(|| DataFusionError::Internal("attribution: bitmap row past its block".into()))?;
                index.push((value, row));
            }
        }
        at = end;
    }
    index.sort_unstable();
    let index = Arc::new(index);
    let mut cache = time_indexes().lock().map_err(|_| poisoned())?;
    if cache.len() >= TIME_INDEXES_MAX {
        cache.clear();
    }
    cache.insert(key, index.clone());
    Ok(index)
}

/// The journey keys of the conversions with `since <= ts < until` (in `spec.app` when set),
/// sorted, when there are at most [`POINT_LOOKUPS_MAX`]; `None` when there are more.
pub fn conversion_keys(snapshot: &TableSnapshot, spec: &JoinSpec, since: i64, until: i64) -> Result<Option<Vec<Key>>> {
    let c = &spec.columns;
    let storage = |e: lookback_storage::StorageError| DataFusionError::from(storage_error(e.into()));
    let mut keys: Vec<Key> = Vec::new();
    let wanted = |key: &Key| spec.app.as_ref().is_none_or(|a| *a == key.app);
    for segment in &snapshot.segments {
        let mut rows: Vec<u32> = Vec::new();
        for ty in &spec.conversions.0 {
            let index = time_index(segment, c, ty)?;
            let from = index.partition_point(|&(ts, _)| ts < since);
            // An empty range (until <= since) selects nothing.
            let to = index.partition_point(|&(ts, _)| ts < until).max(from);
            rows.extend(index[from..to].iter().map(|&(_, row)| row));
            if rows.len() > POINT_LOOKUPS_MAX * 4 {
                return Ok(None);
            }
        }
        rows.sort_unstable();
        let first_rows: Vec<u64> = (0..segment.block_count()).map(|b| segment.block_first_row(b)).collect();
        let mut loaded: Option<(usize, TextColumn<'_>, TextColumn<'_>)> = None;
        for row in rows {
            let block = first_rows.partition_point(|&f| f <= row as u64).saturating_sub(1);
            if loaded.as_ref().is_none_or(|(b, _, _)| *b != block) {
                let read = segment.read_block_coded(block, &[c.app_id, c.device_id]).map_err(storage)?;
                let mut it = read.into_iter();
                let (Some(app), Some(device)) = (it.next(), it.next()) else {
                    return Err(DataFusionError::Internal("attribution: key columns missing".into()));
                };
                loaded = Some((block, TextColumn::from_block(app)?, TextColumn::from_block(device)?));
            }
            if let Some((_, app, device)) = &loaded {
                let local = (row as u64 - first_rows[block]) as usize;
                let key = Key { app: app.get(local).unwrap_or_default().to_vec(), device: device.get(local).map(<[u8]>::to_vec) };
                if wanted(&key) {
                    keys.push(key);
                }
            }
        }
    }
    for batch in &snapshot.memtable {
        let (ty, ts, app, device) = (batch.column(c.event_type), batch.column(c.ts), batch.column(c.app_id), batch.column(c.device_id));
        let ColumnValues::Timestamp(times) = &ts.values else {
            return Err(DataFusionError::Internal("attribution: ts is not a timestamp".into()));
        };
        for (row, &t) in times.iter().enumerate() {
            if t < since || t >= until || !ty.text(row).is_some_and(|v| spec.conversions.0.iter().any(|c| c == v)) {
                continue;
            }
            let key = Key { app: app.text(row).unwrap_or_default().as_bytes().to_vec(), device: device.text(row).map(|d| d.as_bytes().to_vec()) };
            if wanted(&key) {
                keys.push(key);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok((keys.len() <= POINT_LOOKUPS_MAX).then_some(keys))
}

/// The smallest key above `key` (an exclusive upper bound that admits only `key`).
pub fn key_successor(key: &Key) -> Key {
    match &key.device {
        None => Key { app: key.app.clone(), device: Some(Vec::new()) },
        Some(device) => {
            let mut next = device.clone();
            next.push(0);
            Key { app: key.app.clone(), device: Some(next) }
        }
    }
}

/// The touchpoints a fingerprint pass looks for: rows whose (app_id, ip, user_agent) hashes
/// ([`lookback_storage::segment::key_hash`]) are `hashes`, with `earliest <= ts <= latest`.
pub struct FingerprintProbe<'a> {
    pub hashes: &'a std::collections::HashSet<u32>,
    pub earliest: i64,
    pub latest: i64,
}

/// The fingerprint key hash of `row` of `chunk` (`None` when ip or user_agent is null).
fn row_key_hash(chunk: &Chunk<'_>, row: usize) -> Option<u32> {
    use lookback_storage::segment::{key_hash, value_hash};
    let ip = chunk.ip.as_ref()?.get(row)?;
    let ua = chunk.user_agent.as_ref()?.get(row)?;
    Some(key_hash(value_hash(chunk.app.get(row)?), value_hash(ip), value_hash(ua)))
}

/// Calls `visit(chunk, row)` for every touchpoint (click or impression) of `probe`. Segments
/// are read only in the blocks their fingerprint index names for the probed hashes (and whose
/// ts zone maps overlap the window); a segment without an index (format version 1) is read
/// in every such block. A memtable run is read in the rows its own fingerprint index names. `spec` must read ip and user_agent.
pub fn for_each_fingerprint_touch<'s>(
    runs: &[Run<'s>],
    spec: &JoinSpec,
    probe: &FingerprintProbe<'_>,
    mut visit: impl FnMut(&Chunk<'s>, usize) -> Result<()>,
) -> Result<()> {
    assert!(spec.fingerprints, "a fingerprint pass reads ip and user_agent");
    let scan_row = |chunk: &Chunk<'s>, row: usize, visit: &mut dyn FnMut(&Chunk<'s>, usize) -> Result<()>| -> Result<()> {
        let touch = chunk.flags[row] & (FLAG_CLICK | FLAG_IMPRESSION) != 0;
        if touch && chunk.ts[row] >= probe.earliest && chunk.ts[row] <= probe.latest && row_key_hash(chunk, row).is_some_and(|h| probe.hashes.contains(&h)) {
            visit(chunk, row)?;
        }
        Ok(())
    };
    for run in runs {
        match run {
            Run::Memory(chunk) => {
                let index = chunk.fingerprints.get_or_init(|| FingerprintIndex::build((0..chunk.rows).map(|r| row_key_hash(chunk, r)), 1));
                let mut rows: Vec<u32> = probe.hashes.iter().flat_map(|&h| index.blocks_of(h)).copied().collect();
                rows.sort_unstable();
                rows.dedup();
                for row in rows {
                    scan_row(chunk, row as usize, &mut visit)?;
                }
            }
            Run::Segment(segment) => {
                for block in fingerprint_blocks(segment, spec, probe)? {
                    let read = segment
                        .read_block_coded(block, &spec.read_list())
                        .map_err(|e| DataFusionError::from(storage_error(e.into())))?;
                    let chunk = Chunk::new(read.into_iter().map(BlockColumnOrColumn::Block).collect(), spec)?;
                    for row in 0..chunk.rows {
                        scan_row(&chunk, row, &mut visit)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The blocks of `segment` that may hold touchpoints of `probe`: named by its fingerprint
/// index (all blocks without one), within `spec.app`'s and the window's zone maps.
fn fingerprint_blocks(segment: &Segment, spec: &JoinSpec, probe: &FingerprintProbe<'_>) -> Result<Vec<usize>> {
    let c = &spec.columns;
    let index = segment.fingerprint_index().map_err(|e| DataFusionError::from(storage_error(e.into())))?;
    let indexed = segment.fingerprint_columns() == Some([c.app_id, c.ip, c.user_agent]);
    let mut blocks: Vec<usize> = match index.filter(|_| indexed) {
        Some(index) => probe.hashes.iter().flat_map(|&h| index.blocks_of(h)).map(|&b| b as usize).collect(),
        None => (0..segment.block_count()).collect(),
    };
    blocks.sort_unstable();
    blocks.dedup();
    let in_window = |block: usize| {
        let zone = segment.zone_map(block, c.ts);
        let below = matches!(zone.max, Some(Value::Timestamp(max)) if max < probe.earliest);
        let above = matches!(zone.min, Some(Value::Timestamp(min)) if min > probe.latest);
        !below && !above
    };
    let in_app = |block: usize| match (&spec.app, app_bounds(segment, block, spec)) {
        (Some(app), Some((min, max))) => min <= *app && *app <= max,
        _ => true,
    };
    blocks.retain(|&b| in_window(b) && in_app(b));
    Ok(blocks)
}
