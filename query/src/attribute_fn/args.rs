//! The arguments of `attribute(...)` and `attribute_channels(...)`: names, defaults, and their
//! conversion from SQL constants (intervals and timestamps also from strings).

use crate::attribution::rules::{Model, Windows, MICROS_PER_SECOND};
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

/// Microseconds in a day, and in a month (an interval's months count as 30 days, as
/// PostgreSQL's `extract(epoch ...)` counts them).
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
const DAYS_PER_MONTH: i64 = 30;
/// Markov orders accepted (the chain's states grow as channels^order).
pub const MARKOV_ORDER_MAX: usize = 4;
/// Conversion event types in one `conversion` argument at most.
pub const CONVERSION_TYPES_MAX: usize = 64;

/// Argument names of `attribute(...)`, in positional order; `attribute_channels` adds
/// [`MARKOV_ORDER`] at the end.
pub const ATTRIBUTE_ARGS: [&str; 9] =
    ["model", "conversion", "click_window", "view_window", "probabilistic_window", "half_life", "app", "since", "until"];
pub const MARKOV_ORDER: &str = "markov_order";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ModelChoice {
    Rule(Model),
    Markov { order: usize },
    Shapley,
}

/// Parsed arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub model: ModelChoice,
    pub model_name: String,
    pub conversion: Vec<String>,
    pub windows: Windows,
    pub probabilistic_window_us: i64,
    pub half_life_us: i64,
    pub app: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

impl Params {
    /// Parses positional arguments (`None`/NULL: the default) of `function`.
    pub fn parse(function: &str, args: &[Option<Expr>]) -> Result<Params> {
        let channels = function == super::ATTRIBUTE_CHANNELS;
        let names = arg_names(channels);
        if args.len() > names.len() {
            return Err(plan(format!("{function}() takes at most {} arguments, got {}", names.len(), args.len())));
        }
        let mut values: Vec<ScalarValue> = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            values.push(match args.get(i).cloned().flatten() {
                Some(expr) => constant(function, names[i], expr)?,
                None => ScalarValue::Null,
            });
        }
        let get = |name: &str| &values[names.iter().position(|n| *n == name).expect("known argument")];
        let model_name = text(function, "model", get("model"))?.unwrap_or_else(|| "last_touch".into());
        let half_life_us = interval_us(function, "half_life", get("half_life"))?.unwrap_or(7 * MICROS_PER_DAY);
        if half_life_us <= 0 {
            return Err(plan(format!("{function}(): half_life must be positive")));
        }
        let model = match (model_name.as_str(), channels) {
            ("markov", true) => {
                let order = match get(MARKOV_ORDER) {
                    ScalarValue::Null => 1,
                    v => integer(function, MARKOV_ORDER, v)?,
                };
                if !(1..=MARKOV_ORDER_MAX as i64).contains(&order) {
                    return Err(plan(format!("{function}(): markov_order must be between 1 and {MARKOV_ORDER_MAX}, got {order}")));
                }
                ModelChoice::Markov { order: order as usize }
            }
            ("shapley", true) => ModelChoice::Shapley,
            (name, _) => ModelChoice::Rule(Model::named(name, half_life_us).ok_or_else(|| {
                let models = match channels {
                    true => "first_touch, last_touch, linear, time_decay, position_based, markov or shapley",
                    false => "first_touch, last_touch, linear, time_decay or position_based",
                };
                plan(format!("{function}(): unknown model '{name}'; use {models}"))
            })?),
        };
        let conversion_text = text(function, "conversion", get("conversion"))?.unwrap_or_else(|| "install".into());
        let conversion: Vec<String> =
            conversion_text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if conversion.is_empty() || conversion.len() > CONVERSION_TYPES_MAX {
            return Err(plan(format!("{function}(): conversion names 1 to {CONVERSION_TYPES_MAX} event types, got '{conversion_text}'")));
        }
        let window = |name: &str, default: i64| -> Result<i64> {
            let us = interval_us(function, name, get(name))?.unwrap_or(default);
            match us < 0 {
                true => Err(plan(format!("{function}(): {name} must not be negative"))),
                false => Ok(us),
            }
        };
        let windows = Windows { click_us: window("click_window", 7 * MICROS_PER_DAY)?, view_us: window("view_window", MICROS_PER_DAY)? };
        let since_us = timestamp_us(function, "since", get("since"))?;
        let until_us = timestamp_us(function, "until", get("until"))?;
        if let (Some(since), Some(until)) = (since_us, until_us) {
            if since > until {
                return Err(plan(format!("{function}(): since must not be after until (conversions are those with since <= time < until)")));
            }
        }
        Ok(Params {
            model,
            model_name,
            conversion,
            windows,
            probabilistic_window_us: window("probabilistic_window", 0)?,
            half_life_us,
            app: text(function, "app", get("app"))?,
            since_us,
            until_us,
        })
    }

    /// Whether a conversion at `ts` is in scope.
    pub fn converts_at(&self, ts: i64) -> bool {
        self.since_us.is_none_or(|s| ts >= s) && self.until_us.is_none_or(|u| ts < u)
    }

    /// Whether a touchpoint at `ts` can belong to a non-converting path (markov, shapley).
    pub fn path_touch_at(&self, ts: i64) -> bool {
        let widest = self.windows.click_us.max(self.windows.view_us);
        self.since_us.is_none_or(|s| ts >= s.saturating_sub(widest)) && self.until_us.is_none_or(|u| ts < u)
    }
}

/// The argument names of one of the two functions, in positional order.
pub fn arg_names(channels: bool) -> Vec<&'static str> {
    let mut names = ATTRIBUTE_ARGS.to_vec();
    if channels {
        names.push(MARKOV_ORDER);
    }
    names
}

fn plan(message: String) -> DataFusionError {
    crate::SqlError::invalid_parameter(message)
}

/// `expr` folded to a constant (casts, `now()`, arithmetic), or an error naming the argument.
fn constant(function: &str, name: &str, expr: Expr) -> Result<ScalarValue> {
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_current_time().build());
    match simplifier.simplify(expr)? {
        Expr::Literal(value, _) => Ok(value),
        other => Err(plan(format!("{function}(): argument {name} must be a constant, got {other}"))),
    }
}

fn text(function: &str, name: &str, value: &ScalarValue) -> Result<Option<String>> {
    match value {
        ScalarValue::Null => Ok(None),
        ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => Ok(v.clone()),
        other => Err(plan(format!("{function}(): argument {name} must be text, got {}", other.data_type()))),
    }
}

fn integer(function: &str, name: &str, value: &ScalarValue) -> Result<i64> {
    match value.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(v))) => Ok(v),
        _ => Err(plan(format!("{function}(): argument {name} must be an integer, got {value}"))),
    }
}

/// An interval (or interval text such as `'7 days'`) in microseconds; None for NULL.
fn interval_us(function: &str, name: &str, value: &ScalarValue) -> Result<Option<i64>> {
    if value.is_null() {
        return Ok(None);
    }
    let wrong = || plan(format!("{function}(): argument {name} must be an interval such as '7 days', got {value}"));
    let cast = value.cast_to(&DataType::Interval(IntervalUnit::MonthDayNano)).map_err(|_| wrong())?;
    let ScalarValue::IntervalMonthDayNano(Some(v)) = cast else { return Err(wrong()) };
    // Checked: '1000000 years' is a valid interval but past i64 microseconds.
    let days = i64::from(v.months) * DAYS_PER_MONTH + i64::from(v.days);
    let us = days.checked_mul(MICROS_PER_DAY).and_then(|us| us.checked_add(v.nanoseconds / 1_000));
    us.map(Some).ok_or_else(|| plan(format!("{function}(): argument {name} is out of range, got {value}")))
}

/// A timestamp (or timestamp text) in UTC microseconds; None for NULL.
fn timestamp_us(function: &str, name: &str, value: &ScalarValue) -> Result<Option<i64>> {
    if value.is_null() {
        return Ok(None);
    }
    let wrong = || plan(format!("{function}(): argument {name} must be a timestamp, got {value}"));
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    match value.cast_to(&target).map_err(|_| wrong())? {
        ScalarValue::TimestampMicrosecond(Some(v), _) => Ok(Some(v)),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::lit;

    fn parse(function: &str, args: Vec<Option<Expr>>) -> Result<Params> {
        Params::parse(function, &args)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = parse("attribute", vec![]).unwrap();
        assert_eq!(p.model, ModelChoice::Rule(Model::LastTouch));
        assert_eq!(p.conversion, vec!["install".to_string()]);
        assert_eq!(p.windows, Windows { click_us: 7 * MICROS_PER_DAY, view_us: MICROS_PER_DAY });
        assert_eq!((p.probabilistic_window_us, p.half_life_us), (0, 7 * MICROS_PER_DAY));
        assert_eq!((p.app, p.since_us, p.until_us), (None, None, None));
    }

    #[test]
    fn strings_become_intervals_and_timestamps() {
        let p = parse(
            "attribute_channels",
            vec![
                Some(lit("markov")),
                Some(lit(" install , purchase")),
                Some(lit("2 hours")),
                None,
                Some(lit("30 minutes")),
                None,
                Some(lit("app1")),
                Some(lit("2026-11-01 00:00:00")),
                None,
                Some(lit(2i64)),
            ],
        )
        .unwrap();
        assert_eq!(p.model, ModelChoice::Markov { order: 2 });
        assert_eq!(p.conversion, vec!["install".to_string(), "purchase".to_string()]);
        assert_eq!(p.windows.click_us, 2 * 3_600 * MICROS_PER_SECOND);
        assert_eq!(p.probabilistic_window_us, 1_800 * MICROS_PER_SECOND);
        assert_eq!(p.since_us, Some(1_793_491_200_000_000));
        assert_eq!(p.app.as_deref(), Some("app1"));
    }

    #[test]
    fn bad_arguments_are_plan_errors() {
        for (function, args, says) in [
            ("attribute", vec![Some(lit("markov"))], "unknown model 'markov'"),
            ("attribute", vec![Some(lit("nope"))], "unknown model"),
            ("attribute", vec![None, None, Some(lit("soon"))], "click_window must be an interval"),
            ("attribute", vec![None, None, Some(lit("-1 day"))], "must not be negative"),
            ("attribute", vec![None, Some(lit(" , "))], "conversion names"),
            ("attribute", vec![None, None, None, None, None, Some(lit("0 seconds"))], "half_life must be positive"),
            ("attribute", vec![None, None, None, None, None, None, None, Some(lit("yesterday-ish"))], "since must be a timestamp"),
            ("attribute_channels", vec![Some(lit("markov")), None, None, None, None, None, None, None, None, Some(lit(9i64))], "markov_order"),
            ("attribute", vec![None; 10], "at most 9 arguments"),
            // Regression (found by probing what the `sql` fuzz target's dictionary can build):
            // the conversion to microseconds overflowed (a panic in debug builds, a wrapped,
            // wrong window in release).
            ("attribute", vec![None, None, Some(lit("1000000 years"))], "click_window is out of range"),
            ("attribute", vec![None, None, None, None, Some(lit("-1000000 years"))], "probabilistic_window is out of range"),
            // Regression (found by the `sql` target under libFuzzer): since after until
            // panicked slicing the conversions' time index.
            (
                "attribute",
                vec![None, None, None, None, None, None, None, Some(lit("2027-10-03 00:00:00")), Some(lit("2026-10-08 00:00:00"))],
                "since must not be after until",
            ),
        ] {
            let err = parse(function, args).unwrap_err().to_string();
            assert!(err.contains(says), "{err} should say {says}");
        }
    }
}
