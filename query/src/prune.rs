//! Skipping segment blocks by their zone maps.
//!
//! Why: dashboards filter on time (`ts >= now() - interval '7 days'`) and tenant
//! (`app_id = '...'`), and segments are sorted by `(app_id, device_id, ts)`, so most blocks of a
//! large table cannot hold a matching row; their min/max (per block and column, in the footer)
//! say so without reading them. Filters are pushed down as *inexact*: DataFusion still
//! evaluates every filter on the rows a scan returns, so pruning only ever skips blocks that
//! provably hold no match, and a filter it does not understand simply prunes nothing.
//!
//! Understood: conjunctions (`AND`) of `column <op> literal` (either side), `<op>` one of
//! `= < <= > >=`, and `column BETWEEN a AND b`, on int64, float64, timestamp and text columns.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use lookback_common::{ColumnType, Schema, Value};
use lookback_storage::segment::ZoneMap;
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Op {
    fn of(op: Operator) -> Option<Op> {
        Some(match op {
            Operator::Eq => Op::Eq,
            Operator::Lt => Op::Lt,
            Operator::LtEq => Op::LtEq,
            Operator::Gt => Op::Gt,
            Operator::GtEq => Op::GtEq,
            _ => return None,
        })
    }

    /// `a op b` as `b flipped a`.
    fn flipped(self) -> Op {
        match self {
            Op::Eq => Op::Eq,
            Op::Lt => Op::Gt,
            Op::LtEq => Op::GtEq,
            Op::Gt => Op::Lt,
            Op::GtEq => Op::LtEq,
        }
    }
}

/// `column op value`, for a schema column.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub column: usize,
    op: Op,
    value: Value,
}

/// The bounds implied by `filters` (each a conjunct DataFusion pushed down).
pub fn bounds(filters: &[Expr], schema: &Schema) -> Vec<Bound> {
    let mut out = Vec::new();
    filters.iter().for_each(|f| collect(f, schema, &mut out));
    out
}

fn collect(expr: &Expr, schema: &Schema, out: &mut Vec<Bound>) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            collect(left, schema, out);
            collect(right, schema, out);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let Some(op) = Op::of(*op) else { return };
            if let Some(b) = bound(left, op, right, schema) {
                out.push(b);
            } else if let Some(b) = bound(right, op.flipped(), left, schema) {
                out.push(b);
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            out.extend(bound(expr, Op::GtEq, low, schema));
            out.extend(bound(expr, Op::LtEq, high, schema));
        }
        _ => {}
    }
}

fn bound(column: &Expr, op: Op, literal: &Expr, schema: &Schema) -> Option<Bound> {
    let (Expr::Column(c), Expr::Literal(scalar, _)) = (column, literal) else { return None };
    let index = schema.columns.iter().position(|d| d.name == c.name)?;
    let value = value_of(scalar, schema.columns[index].ty)?;
    Some(Bound { column: index, op, value })
}

/// A literal as a value of a column of type `ty`, when it converts exactly.
fn value_of(scalar: &ScalarValue, ty: ColumnType) -> Option<Value> {
    let int = match scalar {
        ScalarValue::Int64(Some(v)) => Some(*v),
        ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
        ScalarValue::Int16(Some(v)) => Some(i64::from(*v)),
        ScalarValue::Int8(Some(v)) => Some(i64::from(*v)),
        _ => None,
    };
    match (ty, scalar) {
        (ColumnType::Int64, _) => int.map(Value::Int64),
        (ColumnType::Float64, ScalarValue::Float64(Some(v))) => Some(Value::Float64(*v)),
        (ColumnType::Float64, _) => int.filter(|i| i.unsigned_abs() < 1 << 53).map(|i| Value::Float64(i as f64)),
        (ColumnType::Timestamp, ScalarValue::TimestampMicrosecond(Some(v), _)) => Some(Value::Timestamp(*v)),
        (ColumnType::Timestamp, ScalarValue::TimestampMillisecond(Some(v), _)) => v.checked_mul(1_000).map(Value::Timestamp),
        (ColumnType::Timestamp, ScalarValue::TimestampSecond(Some(v), _)) => v.checked_mul(1_000_000).map(Value::Timestamp),
        (ColumnType::Timestamp, ScalarValue::TimestampNanosecond(Some(v), _)) if v % 1_000 == 0 => Some(Value::Timestamp(v / 1_000)),
        (ColumnType::Text, ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => {
            Some(Value::Text(s.clone()))
        }
        _ => None,
    }
}

/// False only when the zone maps prove no row of the block satisfies every bound.
pub fn may_match<'a>(bounds: &[Bound], zone: impl Fn(usize) -> &'a ZoneMap) -> bool {
    bounds.iter().all(|b| {
        let z = zone(b.column);
        let vs = |bound: &Option<Value>| bound.as_ref().and_then(|m| ZoneMap::compare(m, &b.value));
        let (min, max) = (vs(&z.min), vs(&z.max));
        let excluded = match b.op {
            Op::Eq => min == Some(Ordering::Greater) || max == Some(Ordering::Less),
            Op::Lt => matches!(min, Some(Ordering::Greater | Ordering::Equal)),
            Op::LtEq => min == Some(Ordering::Greater),
            Op::Gt => matches!(max, Some(Ordering::Less | Ordering::Equal)),
            Op::GtEq => max == Some(Ordering::Less),
        };
        !excluded
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn zone(min: i64, max: i64) -> ZoneMap {
        ZoneMap { null_count: 0, min: Some(Value::Int64(min)), max: Some(Value::Int64(max)) }
    }

    fn schema() -> Schema {
        let mut s = Schema::events();
        s.columns.push(lookback_common::ColumnDef { name: "n".into(), ty: ColumnType::Int64, nullable: true });
        s
    }

    #[test]
    fn comparisons_prune_exactly_the_blocks_outside_the_range() {
        let schema = schema();
        let n = schema.columns.len() - 1;
        let cases = [
            (col("n").eq(lit(5i64)), [true, false, false]),
            (col("n").lt(lit(10i64)), [true, false, false]),
            (col("n").lt_eq(lit(10i64)), [true, true, false]),
            (lit(10i64).gt(col("n")), [true, false, false]),
            (col("n").gt(lit(20i64)), [false, false, true]),
            (col("n").gt_eq(lit(20i64)), [false, true, true]),
            (col("n").between(lit(11i64), lit(12i64)), [false, true, false]),
            (col("n").between(lit(31i64), lit(40i64)), [false, false, false]),
            (col("n").gt(lit(1i64)).and(col("n").lt(lit(15i64))), [true, true, false]),
            (col("n").not_eq(lit(5i64)), [true, true, true]),
        ];
        // Blocks: [0, 9], [10, 20], [20, 30].
        let blocks = [zone(0, 9), zone(10, 20), zone(20, 30)];
        for (filter, expected) in cases {
            let b = bounds(&[filter.clone()], &schema);
            assert!(b.iter().all(|b| b.column == n));
            let got: Vec<bool> = blocks.iter().map(|z| may_match(&b, |_| z)).collect();
            assert_eq!(got, expected, "{filter}");
        }
    }

    #[test]
    fn unknown_bounds_and_expressions_prune_nothing() {
        let schema = schema();
        let none = ZoneMap { null_count: 3, min: None, max: None };
        let b = bounds(&[col("n").eq(lit(5i64))], &schema);
        assert!(may_match(&b, |_| &none));
        assert!(bounds(&[col("n").eq(col("revenue"))], &schema).is_empty());
        assert!(bounds(&[col("nope").eq(lit(1i64))], &schema).is_empty());
        // A literal of another type (text against int64) is not converted.
        assert!(bounds(&[col("n").eq(lit("5"))], &schema).is_empty());
    }

    #[test]
    fn text_and_timestamp_bounds() {
        let schema = schema();
        let b = bounds(&[col("app_id").eq(lit("com.b"))], &schema);
        let text = |a: &str, z: &str| ZoneMap { null_count: 0, min: Some(Value::Text(a.into())), max: Some(Value::Text(z.into())) };
        let (ac, cd) = (text("com.a", "com.c"), text("com.c", "com.d"));
        assert!(may_match(&b, |_| &ac));
        assert!(!may_match(&b, |_| &cd));
        let ts = lit(ScalarValue::TimestampMicrosecond(Some(1_000), Some("UTC".into())));
        let b = bounds(&[col("ts").gt_eq(ts)], &schema);
        let time = |a: i64, z: i64| ZoneMap { null_count: 0, min: Some(Value::Timestamp(a)), max: Some(Value::Timestamp(z)) };
        let (before, touching) = (time(0, 999), time(0, 1_000));
        assert!(!may_match(&b, |_| &before));
        assert!(may_match(&b, |_| &touching));
    }
}
