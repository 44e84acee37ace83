//! `window_funnel(window, ts, cond1, ..., condN)`: how far a user got through an ordered chain
//! of steps within a time window, ClickHouse's `windowFunnel` (default mode) as a DataFusion
//! aggregate.
//!
//! Why: funnels ("install, then open, then purchase within a day: how many users reached each
//! step") are the second question after attribution, and the usual SQL for them (a self-join per
//! step) is quadratic and hard to get right. ClickHouse's `windowFunnel` is the well-known
//! answer; teams moving dashboards over expect its numbers, so this matches it, rule for rule.
//!
//! # Arguments
//! - `window`: a constant. An `INTERVAL` (days, hours, ... down to microseconds; months and
//!   years are refused: their length varies) or, as in ClickHouse, an integer count of seconds.
//!   It must not be negative. Checked while planning (and again when the accumulator is made).
//! - `ts`: a timestamp of any unit and time zone (coerced to microseconds, Lookback's unit; the
//!   instant is what counts, not the zone), or a date (its midnight).
//! - `cond1` ... `condN`: booleans, 1 to [`WINDOW_FUNNEL_CONDITIONS_MAX`] of them.
//!
//! Returns an `Int64` (Postgres has no unsigned byte; ClickHouse returns `UInt8`), never NULL:
//! 0 when no row satisfies `cond1`.
//!
//! # The rule (ClickHouse's default mode, exactly)
//! 1. A row is an *event* when `ts` is not NULL and at least one condition is TRUE. A NULL
//!    condition counts as not met (as in `WHERE`). Other rows are dropped: in the default mode
//!    they cannot change the answer.
//! 2. Events are taken in `ts` order. All events at one `ts` form one instant, at which every
//!    condition any of them satisfies holds; within an instant the conditions are taken in
//!    order `cond1`, `cond2`, ... (ClickHouse sorts `(ts, condition index)` pairs, so the order
//!    of rows with equal timestamps never matters).
//! 3. Walking them, keep for each step k the start time `start[k]` of a chain reaching step k
//!    (the latest such start; later is never worse). At an instant `t`:
//!    - `cond1` holds: `start[1] = t` (a new chain starts);
//!    - `cond_k` holds, k > 1, `start[k-1]` is set and `t - start[k-1] <= window` (inclusive,
//!      as ClickHouse's `<=`): `start[k] = start[k-1]`.
//! 4. The answer is the largest k with `start[k]` set (stopping early once k = N).
//!
//! Equivalently: the largest k such that there are events e1, ..., ek where ei satisfies
//! `cond_i`, `ts(e1) <= ts(e2) <= ... <= ts(ek)` and `ts(ek) - ts(e1) <= window`. So one row may
//! fill several steps: a row satisfying `cond1` and `cond2` alone gives 2, and two rows with the
//! same `ts` chain in condition order whichever comes first in the table (ClickHouse's
//! `strict_once`, `strict_order`, `strict_increase` and `strict_deduplication` modes, which
//! forbid some of this, are not implemented).
//!
//! Known difference from ClickHouse: since 22.10 ClickHouse skips a whole row when any argument
//! is NULL (so one NULL condition hides the row's other, TRUE ones: ClickHouse issue #47968);
//! here only a NULL `ts` drops a row, and a NULL condition is just not met. Windows are in
//! microseconds, not in the timestamp's own unit.
//!
//! # State
//! Each group keeps its events as `(ts_us, conditions bitmask)` (bit i: `cond{i+1}` holds),
//! 16 bytes each, and sorts them once, when the result is asked for. The partial-aggregation
//! state is two lists of equal length, the timestamps (`Int64`, microseconds) and the masks
//! (`UInt32`); `merge_batch` appends them. Memory is what DataFusion's pool is told through
//! [`Accumulator::size`], and a group may hold at most [`WINDOW_FUNNEL_GROUP_EVENTS_MAX`]
//! events (ClickHouse's own bound on this state).
//!
//! Not here: a `GroupsAccumulator` (DataFusion adapts the per-group accumulator), the
//! registration in a session (the caller registers [`window_funnel_udaf`]).

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, UInt32Array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema, TimeUnit, TimestampMicrosecondType, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{plan_err, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::{format_state_name, AggregateOrderSensitivity};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, Signature, Volatility};
use datafusion::physical_expr::PhysicalExpr;
use std::sync::Arc;

/// The most conditions (funnel steps) one call may have: one bit each in a `u32` mask, and
/// ClickHouse's own limit.
pub const WINDOW_FUNNEL_CONDITIONS_MAX: usize = 32;

/// The most events one group may hold (16 bytes each: 1.6 GB), ClickHouse's bound on this
/// state. A group past it fails the query rather than the process.
pub const WINDOW_FUNNEL_GROUP_EVENTS_MAX: usize = 100_000_000;

/// The registered name; [`WINDOW_FUNNEL_ALIASES`] are the other names it answers to.
pub const WINDOW_FUNNEL_NAME: &str = "window_funnel";

/// ClickHouse's name: unquoted SQL identifiers are lower-cased, so `windowFunnel(...)` looks up
/// `windowfunnel`; `"windowFunnel"(...)` (quoted) looks up the exact spelling.
const WINDOW_FUNNEL_ALIASES: [&str; 2] = ["windowfunnel", "windowFunnel"];

const MICROS_PER_SECOND: i128 = 1_000_000;
const MICROS_PER_DAY: i128 = 86_400 * MICROS_PER_SECOND;
const NANOS_PER_MICRO: i128 = 1_000;
const MICROS_PER_MILLI: i128 = 1_000;

/// The `window_funnel` aggregate, to register in a session.
pub fn window_funnel_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(WindowFunnel::new())
}

/// One event of a group: a row with a timestamp and at least one condition met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunnelEvent {
    pub ts_us: i64,
    /// Bit i set: condition i + 1 holds for this row.
    pub conditions: u32,
}

/// The funnel level of `events` (sorted by `ts_us`) for `conditions` steps (1 to
/// [`WINDOW_FUNNEL_CONDITIONS_MAX`]) within `window_us`: the rule in the module docs.
pub fn funnel_level(events: &[FunnelEvent], conditions: usize, window_us: u64) -> usize {
    assert!((1..=WINDOW_FUNNEL_CONDITIONS_MAX).contains(&conditions), "window_funnel takes 1 to 32 conditions");
    debug_assert!(events.is_sorted_by_key(|e| e.ts_us), "funnel events are sorted by ts");
    let steps_mask = steps_mask(conditions);
    // starts[k]: the start of the latest-starting chain that reached step k + 1.
    let mut starts: [Option<i64>; WINDOW_FUNNEL_CONDITIONS_MAX] = [None; WINDOW_FUNNEL_CONDITIONS_MAX];
    let mut next = 0;
    while next < events.len() {
        // One instant: every event at this ts, their conditions together.
        let ts_us = events[next].ts_us;
        let mut held = 0u32;
        while next < events.len() && events[next].ts_us == ts_us {
            held |= events[next].conditions;
            next += 1;
        }
        held &= steps_mask;
        // Conditions in ascending order, so a step met at this instant can extend a chain whose
        // previous step was met at this same instant.
        while held != 0 {
            let step = held.trailing_zeros() as usize;
            held &= held - 1;
            if step == 0 {
                starts[0] = Some(ts_us);
            } else if let Some(start_us) = starts[step - 1] {
                if ts_us.abs_diff(start_us) <= window_us {
                    starts[step] = Some(start_us);
                    if step + 1 == conditions {
                        return conditions;
                    }
                }
            }
        }
    }
    starts.iter().rposition(Option::is_some).map_or(0, |step| step + 1)
}

/// The mask with one bit for each of `conditions` steps.
fn steps_mask(conditions: usize) -> u32 {
    match conditions {
        WINDOW_FUNNEL_CONDITIONS_MAX => u32::MAX,
        n => (1u32 << n) - 1,
    }
}

/// The window a constant `value` gives, in microseconds: an interval without months, or an
/// integer count of seconds, not negative. Windows past `u64::MAX` µs cover every pair of
/// timestamps, so they saturate.
pub fn window_us(value: &ScalarValue) -> Result<u64> {
    let total_us: i128 = match value {
        ScalarValue::IntervalMonthDayNano(Some(interval)) => {
            if interval.months != 0 {
                return months_error(value);
            }
            // Floor division is exact for the comparison: a whole number of µs d satisfies
            // d <= floor(w_ns / 1000) exactly when d * 1000 <= w_ns.
            let total_ns = i128::from(interval.days) * MICROS_PER_DAY * NANOS_PER_MICRO + i128::from(interval.nanoseconds);
            total_ns.div_euclid(NANOS_PER_MICRO)
        }
        ScalarValue::IntervalDayTime(Some(interval)) => {
            i128::from(interval.days) * MICROS_PER_DAY + i128::from(interval.milliseconds) * MICROS_PER_MILLI
        }
        ScalarValue::IntervalYearMonth(Some(months)) => {
            if *months != 0 {
                return months_error(value);
            }
            0
        }
        ScalarValue::Int8(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::Int16(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::Int32(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::Int64(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::UInt8(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::UInt16(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::UInt32(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        ScalarValue::UInt64(Some(s)) => i128::from(*s) * MICROS_PER_SECOND,
        v if v.is_null() && window_type_ok(&v.data_type()) => return Err(crate::SqlError::invalid_parameter("window_funnel window must not be NULL")),
        v => {
            return plan_err!(
                "window_funnel window must be an interval or an integer number of seconds, got {}",
                v.data_type()
            )
        }
    };
    if total_us < 0 {
        return Err(crate::SqlError::invalid_parameter(format!("window_funnel window must not be negative, got {value}")));
    }
    Ok(u64::try_from(total_us).unwrap_or(u64::MAX))
}

fn months_error<T>(value: &ScalarValue) -> Result<T> {
    Err(crate::SqlError::invalid_parameter(format!("window_funnel window must not contain months or years (their length varies), got {value}; use days")))
}

fn window_type_ok(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Interval(_)) || data_type.is_integer()
}

/// The `window_funnel` aggregate function (see the module docs).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFunnel {
    signature: Signature,
    aliases: Vec<String>,
}

impl WindowFunnel {
    pub fn new() -> WindowFunnel {
        WindowFunnel {
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: WINDOW_FUNNEL_ALIASES.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl Default for WindowFunnel {
    fn default() -> Self {
        WindowFunnel::new()
    }
}

impl AggregateUDFImpl for WindowFunnel {
    fn name(&self) -> &str {
        WINDOW_FUNNEL_NAME
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Checks the argument types and coerces `ts` to microseconds (see the module docs).
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [window, ts, conditions @ ..] = arg_types else {
            return plan_err!(
                "window_funnel takes a window, a timestamp and 1 to {WINDOW_FUNNEL_CONDITIONS_MAX} conditions, got {} arguments",
                arg_types.len()
            );
        };
        check_conditions_count(conditions.len())?;
        if !window_type_ok(window) {
            return plan_err!("window_funnel window must be an interval or an integer number of seconds, got {window}");
        }
        let ts = match ts {
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            DataType::Date32 | DataType::Date64 | DataType::Null => DataType::Timestamp(TimeUnit::Microsecond, None),
            other => return plan_err!("window_funnel timestamp must be a timestamp, got {other}"),
        };
        let mut coerced = Vec::with_capacity(arg_types.len());
        coerced.push(window.clone());
        coerced.push(ts);
        for (index, condition) in conditions.iter().enumerate() {
            match condition {
                DataType::Boolean | DataType::Null => coerced.push(DataType::Boolean),
                other => return plan_err!("window_funnel condition {} must be boolean, got {other}", index + 1),
            }
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    /// Never NULL: no events is level 0.
    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let [window, _ts, conditions @ ..] = args.exprs else {
            return plan_err!("window_funnel takes a window, a timestamp and at least one condition");
        };
        check_conditions_count(conditions.len())?;
        let window_us = window_us(&constant(window)?)?;
        Ok(Box::new(WindowFunnelAccumulator::new(window_us, conditions.len())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format_state_name(args.name, "ts_us"), list_type(DataType::Int64), true)),
            Arc::new(Field::new(format_state_name(args.name, "conditions"), list_type(DataType::UInt32), true)),
        ])
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    /// Not a rewrite: checks the window while planning, so a bad one fails the query even when
    /// no accumulator is ever made (a GROUP BY over no rows).
    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(Box::new(|aggregate: AggregateFunction, _info: &SimplifyContext| {
            if let Some(window) = aggregate.params.args.first() {
                check_window_expr(window)?;
            }
            Ok(Expr::AggregateFunction(aggregate))
        }))
    }
}

fn check_conditions_count(conditions: usize) -> Result<()> {
    if conditions == 0 {
        return plan_err!("window_funnel needs at least one condition after the window and the timestamp");
    }
    if conditions > WINDOW_FUNNEL_CONDITIONS_MAX {
        return plan_err!("window_funnel takes at most {WINDOW_FUNNEL_CONDITIONS_MAX} conditions, got {conditions}");
    }
    Ok(())
}

/// A window that is a literal must be a valid one; one that reads a column is no constant.
/// Anything else (a placeholder not bound yet) is left to [`WindowFunnel::accumulator`].
fn check_window_expr(window: &Expr) -> Result<()> {
    match window {
        Expr::Literal(value, _) => window_us(value).map(|_| ()),
        other if !other.column_refs().is_empty() => {
            plan_err!("window_funnel window must be a constant, got {other}")
        }
        _ => Ok(()),
    }
}

/// The value of a constant physical expression, evaluated without input (a column fails).
fn constant(expr: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    let no_input = RecordBatch::new_empty(Arc::new(Schema::empty()));
    match expr.evaluate(&no_input) {
        Ok(ColumnarValue::Scalar(value)) => Ok(value),
        _ => plan_err!("window_funnel window must be a constant, got {expr}"),
    }
}

fn list_type(item: DataType) -> DataType {
    DataType::List(list_item_field(item))
}

fn list_item_field(item: DataType) -> FieldRef {
    Arc::new(Field::new_list_field(item, true))
}

/// One group's events (see the module docs).
#[derive(Debug)]
pub struct WindowFunnelAccumulator {
    window_us: u64,
    conditions: usize,
    events: Vec<FunnelEvent>,
    /// Whether `events` is sorted by `ts_us` (rows mostly arrive in time order).
    sorted: bool,
}

impl WindowFunnelAccumulator {
    pub fn new(window_us: u64, conditions: usize) -> WindowFunnelAccumulator {
        assert!((1..=WINDOW_FUNNEL_CONDITIONS_MAX).contains(&conditions), "window_funnel takes 1 to 32 conditions");
        WindowFunnelAccumulator { window_us, conditions, events: Vec::new(), sorted: true }
    }

    fn reserve(&mut self, additional: usize) -> Result<()> {
        if self.events.len().saturating_add(additional) > WINDOW_FUNNEL_GROUP_EVENTS_MAX {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "window_funnel: a group has more than {WINDOW_FUNNEL_GROUP_EVENTS_MAX} events"
            )));
        }
        self.events.reserve(additional);
        Ok(())
    }

    fn push(&mut self, event: FunnelEvent) {
        if let Some(last) = self.events.last() {
            self.sorted &= last.ts_us <= event.ts_us;
        }
        self.events.push(event);
    }
}

impl Accumulator for WindowFunnelAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [_window, ts, conditions @ ..] = values else {
            return Err(DataFusionError::Internal(format!("window_funnel got {} argument arrays", values.len())));
        };
        if conditions.len() != self.conditions {
            return Err(DataFusionError::Internal(format!(
                "window_funnel planned with {} conditions got {}",
                self.conditions,
                conditions.len()
            )));
        }
        let ts = ts.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| {
            DataFusionError::Internal(format!("window_funnel timestamp is {}, not coerced to microseconds", ts.data_type()))
        })?;
        // Per row, the conditions that are TRUE (not FALSE, not NULL).
        let mut masks = vec![0u32; ts.len()];
        for (index, condition) in conditions.iter().enumerate() {
            let condition = condition.as_boolean_opt().ok_or_else(|| {
                DataFusionError::Internal(format!("window_funnel condition {} is {}", index + 1, condition.data_type()))
            })?;
            if condition.len() != masks.len() {
                return Err(DataFusionError::Internal(format!("window_funnel condition {} has another length", index + 1)));
            }
            let true_rows = match condition.nulls() {
                Some(valid) => condition.values() & valid.inner(),
                None => condition.values().clone(),
            };
            for row in true_rows.set_indices() {
                masks[row] |= 1 << index;
            }
        }
        let events = masks.iter().enumerate().filter(|&(row, mask)| *mask != 0 && ts.is_valid(row));
        self.reserve(events.clone().count())?;
        for (row, &mask) in events {
            self.push(FunnelEvent { ts_us: ts.value(row), conditions: mask });
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if !self.sorted {
            self.events.sort_unstable_by_key(|e| e.ts_us);
            self.sorted = true;
        }
        let level = funnel_level(&self.events, self.conditions, self.window_us);
        // At most 32.
        Ok(ScalarValue::Int64(Some(level as i64)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.events.capacity() * size_of::<FunnelEvent>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let ts: Int64Array = self.events.iter().map(|e| e.ts_us).collect();
        let masks: UInt32Array = self.events.iter().map(|e| e.conditions).collect();
        Ok(vec![single_row_list(Arc::new(ts)), single_row_list(Arc::new(masks))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [ts, masks] = states else {
            return Err(DataFusionError::Internal(format!("window_funnel state has {} columns, not 2", states.len())));
        };
        let internal = |what: &str| DataFusionError::Internal(format!("window_funnel state: {what}"));
        let ts = ts.as_list_opt::<i32>().ok_or_else(|| internal("timestamps are not a list"))?;
        let masks = masks.as_list_opt::<i32>().ok_or_else(|| internal("masks are not a list"))?;
        let ts_values = ts.values().as_primitive_opt::<Int64Type>().ok_or_else(|| internal("timestamps are not Int64"))?;
        let mask_values = masks.values().as_primitive_opt::<UInt32Type>().ok_or_else(|| internal("masks are not UInt32"))?;
        if ts.len() != masks.len() || ts_values.null_count() > 0 || mask_values.null_count() > 0 {
            return Err(internal("timestamps and masks do not pair up"));
        }
        for row in 0..ts.len() {
            if ts.is_null(row) || masks.is_null(row) {
                continue;
            }
            let ts_range = list_range(ts.value_offsets(), row);
            let mask_range = list_range(masks.value_offsets(), row);
            let (Some(ts_row), Some(mask_row)) =
                (ts_values.values().get(ts_range), mask_values.values().get(mask_range))
            else {
                return Err(internal("list offsets out of bounds"));
            };
            if ts_row.len() != mask_row.len() {
                return Err(internal("a group's timestamps and masks differ in length"));
            }
            self.reserve(ts_row.len())?;
            for (&ts_us, &conditions) in ts_row.iter().zip(mask_row) {
                self.push(FunnelEvent { ts_us, conditions });
            }
        }
        Ok(())
    }
}

/// The value range of list row `row`, from its offsets.
fn list_range(offsets: &[i32], row: usize) -> std::ops::Range<usize> {
    let bound = |i: usize| offsets.get(i).map_or(0, |&o| usize::try_from(o).unwrap_or(0));
    bound(row)..bound(row + 1)
}

/// `values` as a one-row list scalar, its item field exactly as [`WindowFunnel::state_fields`]
/// declares it.
fn single_row_list(values: ArrayRef) -> ScalarValue {
    let field = list_item_field(values.data_type().clone());
    let offsets = OffsetBuffer::from_lengths([values.len()]);
    ScalarValue::List(Arc::new(ListArray::new(field, offsets, values, None)))
}
