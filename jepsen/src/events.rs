//! The events the harness writes: random but reproducible from a seed, each with a unique
//! event id, and the JSON object `lookback dump` prints for each, which is what the checker
//! compares byte for byte.

use lookback_common::{batch::format_uuid, Batch, BatchBuilder, Schema, Value};
use rand::rngs::SmallRng;
use rand::Rng;

pub type Row = Vec<Value>;
pub type JsonRow = serde_json::Map<String, serde_json::Value>;

/// One `events` row for `producer`, with a random (unique) event id.
pub fn random_event(rng: &mut SmallRng, producer: u64) -> Row {
    let text = |s: String| Value::Text(s);
    let device = rng.gen_range(0..500);
    let kind = ["impression", "click", "install", "purchase"][rng.gen_range(0..4)];
    vec![
        Value::Uuid(rng.gen()),
        text(format!("app{}", producer % 3)),
        Value::Timestamp(1_793_491_200_000_000 + rng.gen_range(0..86_400_000_000i64)),
        text(kind.into()),
        text(format!("device-{device}")),
        if rng.gen_bool(0.3) {
            text(format!("user-{device}"))
        } else {
            Value::Null
        },
        text(format!("192.168.{}.{}", device / 250, device % 250)),
        text("Mozilla/5.0 (Linux; Android 14) ✓".into()),
        text("android".into()),
        if kind == "purchase" {
            Value::Null
        } else {
            text(format!("channel-{}", device % 7))
        },
        Value::Null,
        if kind == "purchase" {
            Value::Float64(rng.gen_range(0.5..100.0))
        } else {
            Value::Null
        },
        if kind == "purchase" {
            text("USD".into())
        } else {
            Value::Null
        },
        text(format!("{{\"n\":{}}}", rng.gen_range(0..1000))),
    ]
}

/// A batch of `events` rows. Panics on rows that do not fit the schema (a harness bug).
pub fn build(rows: &[Row]) -> Batch {
    let schema = Schema::events();
    let mut b = BatchBuilder::new(&schema, rows.len());
    for row in rows {
        b.push_row(row).expect("harness rows fit the events schema");
    }
    b.finish().expect("harness batch is valid")
}

/// The event id of a row, as `lookback dump` prints it.
pub fn event_id(row: &[Value]) -> String {
    match &row[0] {
        Value::Uuid(u) => format_uuid(u),
        other => panic!("event_id is not a uuid: {other:?}"),
    }
}

/// The JSON object `lookback dump` prints for a row.
pub fn expected_json(row: &[Value]) -> JsonRow {
    let schema = Schema::events();
    schema
        .columns
        .iter()
        .zip(row)
        .map(|(c, v)| {
            let j = match v {
                Value::Null => serde_json::Value::Null,
                Value::Bool(b) => (*b).into(),
                Value::Int64(i) | Value::Timestamp(i) => (*i).into(),
                Value::Float64(f) => {
                    serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
                }
                Value::Text(s) => s.clone().into(),
                Value::Uuid(u) => format_uuid(u).into(),
            };
            (c.name.clone(), j)
        })
        .collect()
}
