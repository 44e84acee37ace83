//! `date_trunc` with a fast path for Lookback's timestamps.
//!
//! Why: every Lookback timestamp is UTC microseconds typed `Timestamp(µs, "UTC")` (so clients
//! see `timestamptz`), and DataFusion's `date_trunc` takes its arithmetic fast path only for
//! time-zone-less values: for a zoned value it truncates one value at a time through the
//! time-zone database. A dashboard's `date_trunc('day', ts)` over 10 M events took a second
//! (docs/benchmarks.md). In UTC a second, minute, hour, day and week all have one fixed length,
//! so those truncations are integer arithmetic here; every other call (other units, zones,
//! types, scalars) goes to DataFusion's own implementation, which this wraps.

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use std::sync::Arc;

pub(crate) const SECOND_US: i64 = 1_000_000;
pub(crate) const DAY_US: i64 = 86_400 * SECOND_US;

/// DataFusion's `date_trunc`, with UTC microsecond arrays truncated by arithmetic.
#[derive(Debug)]
pub struct DateTrunc {
    inner: Arc<dyn ScalarUDFImpl>,
}

impl PartialEq for DateTrunc {
    fn eq(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name()
    }
}

impl Eq for DateTrunc {}

impl std::hash::Hash for DateTrunc {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
    }
}

/// The `date_trunc` to register in place of DataFusion's.
pub fn date_trunc() -> ScalarUDF {
    let inner = datafusion::functions::datetime::date_trunc().inner().clone();
    ScalarUDF::new_from_impl(DateTrunc { inner })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Fixed(i64),
    Week,
}

pub(crate) const MINUTE_US: i64 = 60 * SECOND_US;
pub(crate) const HOUR_US: i64 = 3_600 * SECOND_US;
pub(crate) const WEEK_US: i64 = 7 * DAY_US;

/// The step between consecutive values `date_trunc(granularity, ts)` gives for UTC
/// timestamps when that step is fixed (second to week; weeks are aligned to Mondays), in
/// microseconds: truncated values differ by whole multiples of it.
pub fn fixed_step_us(granularity: &str) -> Option<i64> {
    match unit(granularity)? {
        Unit::Fixed(len) => Some(len),
        Unit::Week => Some(WEEK_US),
    }
}

fn unit(granularity: &str) -> Option<Unit> {
    Some(match granularity.to_ascii_lowercase().as_str() {
        "second" => Unit::Fixed(SECOND_US),
        "minute" => Unit::Fixed(MINUTE_US),
        "hour" => Unit::Fixed(HOUR_US),
        "day" => Unit::Fixed(DAY_US),
        "week" => Unit::Week,
        _ => return None,
    })
}

/// `micros` truncated to the start of its `unit` (weeks start on Monday, as in PostgreSQL).
fn truncate(micros: i64, unit: Unit) -> i64 {
    match unit {
        Unit::Fixed(len) => micros - micros.rem_euclid(len),
        Unit::Week => {
            let day = micros.div_euclid(DAY_US);
            // 1970-01-01 was a Thursday: day + 3 is 0 on Mondays, modulo 7.
            (day - (day + 3).rem_euclid(7)) * DAY_US
        }
    }
}

fn is_utc(tz: &Option<Arc<str>>) -> bool {
    tz.as_deref().is_some_and(|tz| matches!(tz, "UTC" | "+00:00" | "Z" | "utc"))
}

/// The fast path, when it applies: a UTC microsecond array and a fixed-length unit.
fn fast(args: &[ColumnarValue]) -> Option<ColumnarValue> {
    let [ColumnarValue::Scalar(granularity), ColumnarValue::Array(values)] = args else { return None };
    let granularity = match granularity {
        ScalarValue::Utf8(Some(g)) | ScalarValue::Utf8View(Some(g)) | ScalarValue::LargeUtf8(Some(g)) => g,
        _ => return None,
    };
    let unit = unit(granularity)?;
    let DataType::Timestamp(TimeUnit::Microsecond, tz) = values.data_type() else { return None };
    if !is_utc(tz) {
        return None;
    }
    let values = values.as_primitive::<TimestampMicrosecondType>();
    // One loop per unit, so each divides by a constant (a multiply) rather than a runtime
    // divisor (a hardware division per row).
    let truncated: PrimitiveArray<TimestampMicrosecondType> = match unit {
        Unit::Fixed(SECOND_US) => values.unary(|v| truncate(v, Unit::Fixed(SECOND_US))),
        Unit::Fixed(MINUTE_US) => values.unary(|v| truncate(v, Unit::Fixed(MINUTE_US))),
        Unit::Fixed(HOUR_US) => values.unary(|v| truncate(v, Unit::Fixed(HOUR_US))),
        Unit::Fixed(DAY_US) => values.unary(|v| truncate(v, Unit::Fixed(DAY_US))),
        other => values.unary(|v| truncate(v, other)),
    };
    Some(ColumnarValue::Array(Arc::new(truncated.with_timezone_opt(tz.clone()))))
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match fast(&args.args) {
            Some(result) => Ok(result),
            None => self.inner.invoke_with_args(args),
        }
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> Result<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    fn run(udf: &ScalarUDF, granularity: &str, values: &TimestampMicrosecondArray) -> TimestampMicrosecondArray {
        let args = vec![ColumnarValue::Scalar(ScalarValue::Utf8(Some(granularity.into()))), ColumnarValue::Array(Arc::new(values.clone()))];
        let arg_fields = vec![Arc::new(Field::new("g", DataType::Utf8, false)), Arc::new(Field::new("ts", values.data_type().clone(), true))];
        let return_field = Arc::new(Field::new("r", values.data_type().clone(), true));
        let args = ScalarFunctionArgs { args, arg_fields, number_rows: values.len(), return_field, config_options: Arc::new(ConfigOptions::new()) };
        match udf.invoke_with_args(args).unwrap() {
            ColumnarValue::Array(a) => a.as_primitive::<TimestampMicrosecondType>().clone(),
            ColumnarValue::Scalar(s) => panic!("scalar {s:?}"),
        }
    }

    /// The fast path agrees with DataFusion's own date_trunc on every unit it takes over,
    /// around the epoch, across years and with nulls.
    #[test]
    fn agrees_with_datafusion() {
        let values: Vec<Option<i64>> = (-40i64..40)
            .map(|i| Some(i * 7_777_777_777_777 + i * i * 13))
            .chain([None, Some(0), Some(-1), Some(1_793_491_200_000_000), Some(1_767_323_045_678_901)])
            .collect();
        let utc = TimestampMicrosecondArray::from(values).with_timezone("UTC");
        let ours = date_trunc();
        let theirs = datafusion::functions::datetime::date_trunc();
        for g in ["second", "minute", "hour", "day", "week", "DAY", "month", "year"] {
            assert_eq!(run(&ours, g, &utc), run(&theirs, g, &utc), "{g}");
        }
        assert!(fast(&[ColumnarValue::Scalar(ScalarValue::Utf8(Some("month".into()))), ColumnarValue::Array(Arc::new(utc.clone()))]).is_none());
        let berlin = utc.clone().with_timezone("Europe/Berlin");
        assert!(fast(&[ColumnarValue::Scalar(ScalarValue::Utf8(Some("day".into()))), ColumnarValue::Array(Arc::new(berlin))]).is_none());
    }
}
