//! `attribute(...)` and `attribute_channels(...)` against the independent reference
//! implementation (`tests/reference/attribution_ref.py`, written from docs/attribution.md
//! without the engine's code), on random data built to hit the rules' edges: timestamps on a
//! one-second grid with many ties and touchpoints exactly on window boundaries, missing device
//! ids, several apps, conversions without touchpoints, fingerprint-only matches, NULL channels.
//! The data sits in two segments (small blocks, so journeys span blocks and segments) plus the
//! memtable, and again after a full compaction.

#[allow(dead_code)] // not every test uses every helper
mod common;

use common::{admit_events, open, BASE_US};
use datafusion::arrow::array::{Array, Float64Array, StringArray, StringViewArray, TimestampMicrosecondArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use lookback_common::batch::format_uuid;
use lookback_common::Value;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const SECOND_US: i64 = 1_000_000;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone)]
struct Ev {
    id: [u8; 16],
    app: String,
    ts: i64,
    ty: String,
    device: Option<String>,
    ip: Option<String>,
    ua: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    revenue: Option<f64>,
}

fn generate(seed: u64, rows: usize) -> Vec<Ev> {
    let mut rng = SplitMix(seed);
    (0..rows)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next().to_be_bytes());
            id[8..].copy_from_slice(&rng.next().to_be_bytes());
            let ty = match rng.below(100) {
                0..=39 => "impression",
                40..=69 => "click",
                70..=84 => "install",
                85..=94 => "purchase",
                _ => "open",
            };
            let touch = ty == "impression" || ty == "click";
            let device = (rng.below(10) != 0).then(|| format!("dev-{:02}", rng.below(12)));
            let ip = (rng.below(8) != 0).then(|| format!("10.0.0.{}", rng.below(6)));
            let ua = (rng.below(8) != 0).then(|| rng.pick(&["ua-a", "ua-b", "ua-c"]).to_string());
            let channel = (touch && rng.below(20) != 0).then(|| rng.pick(&["ads", "mail", "search", "social", "tv"]).to_string());
            let campaign = touch.then(|| rng.pick(&["c1", "c2", "c3"]).to_string());
            let revenue = match ty {
                "purchase" => Some((rng.below(10_000) as f64) / 100.0),
                "install" if rng.below(2) == 0 => Some(rng.below(50) as f64 / 4.0),
                _ => None,
            };
            Ev {
                id,
                app: rng.pick(&["app.a", "app.b", "app.c"]).to_string(),
                ts: BASE_US + rng.below(2_000) as i64 * SECOND_US,
                ty: ty.to_string(),
                device,
                ip,
                ua,
                channel,
                campaign,
                revenue,
            }
        })
        .collect()
}

fn value(ev: &Ev, column: &str) -> Value {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    match column {
        "event_id" => Value::Uuid(ev.id),
        "app_id" => Value::Text(ev.app.clone()),
        "ts" => Value::Timestamp(ev.ts),
        "event_type" => Value::Text(ev.ty.clone()),
        "device_id" => text(&ev.device),
        "ip" => text(&ev.ip),
        "user_agent" => text(&ev.ua),
        "channel" => text(&ev.channel),
        "campaign" => text(&ev.campaign),
        "revenue" => ev.revenue.map_or(Value::Null, Value::Float64),
        _ => Value::Null,
    }
}

fn write_csv(events: &[Ev], path: &Path) {
    let mut out = String::from("event_id,app_id,ts_us,event_type,device_id,ip,user_agent,channel,campaign,revenue\n");
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    for e in events {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            format_uuid(&e.id),
            e.app,
            e.ts,
            e.ty,
            o(&e.device),
            o(&e.ip),
            o(&e.ua),
            o(&e.channel),
            o(&e.campaign),
            e.revenue.map(|r| r.to_string()).unwrap_or_default()
        ));
    }
    std::fs::write(path, out).unwrap();
}

/// One call: its SQL arguments and the same parameters for the reference.
struct Case {
    function: &'static str,
    model: &'static str,
    sql_args: Vec<String>,
    params: Json,
}

fn case(function: &'static str, model: &'static str, extra: &[(&str, &str, Json)]) -> Case {
    let mut params = json!({
        "function": function, "model": model, "conversion": ["install"],
        "click_window_us": 120 * SECOND_US, "view_window_us": 40 * SECOND_US,
        "probabilistic_window_us": 0, "half_life_us": 90 * SECOND_US,
        "app": null, "since_us": null, "until_us": null, "markov_order": 1,
    });
    let mut sql_args = vec![
        format!("model => '{model}'"),
        "click_window => INTERVAL '120 seconds'".to_string(),
        "view_window => '40 seconds'".to_string(),
        "half_life => INTERVAL '90 seconds'".to_string(),
    ];
    for (sql, key, value) in extra {
        sql_args.push(sql.to_string());
        params[*key] = value.clone();
    }
    Case { function, model, sql_args, params }
}

fn cases() -> Vec<Case> {
    let rules = ["first_touch", "last_touch", "linear", "time_decay", "position_based"];
    let fingerprint = ("probabilistic_window => '60 seconds'", "probabilistic_window_us", json!(60 * SECOND_US));
    let mut cases = Vec::new();
    for model in rules {
        cases.push(case("attribute", model, &[]));
        cases.push(case("attribute", model, &[fingerprint.clone()]));
        cases.push(case("attribute_channels", model, &[fingerprint.clone()]));
    }
    let since = BASE_US + 500 * SECOND_US;
    let until = BASE_US + 1_500 * SECOND_US;
    let scoped = [
        ("app => 'app.b'", "app", json!("app.b")),
        (Box::leak(format!("since => to_timestamp_micros({since})").into_boxed_str()) as &str, "since_us", json!(since)),
        (Box::leak(format!("until => to_timestamp_micros({until})").into_boxed_str()) as &str, "until_us", json!(until)),
    ];
    let mut scoped_fp = scoped.to_vec();
    scoped_fp.push(fingerprint.clone());
    cases.push(case("attribute", "linear", &scoped_fp));
    cases.push(case("attribute", "last_touch", &[("conversion => 'install, purchase'", "conversion", json!(["install", "purchase"]))]));
    // A narrow time range: the conversions' journeys are looked up one by one (point lookups).
    for (from_s, to_s) in [(1_000, 1_010), (1_200, 1_201), (0, 1)] {
        let (since, until) = (BASE_US + from_s * SECOND_US, BASE_US + to_s * SECOND_US);
        let narrow = [
            (Box::leak(format!("since => to_timestamp_micros({since})").into_boxed_str()) as &str, "since_us", json!(since)),
            (Box::leak(format!("until => to_timestamp_micros({until})").into_boxed_str()) as &str, "until_us", json!(until)),
            fingerprint.clone(),
        ];
        cases.push(case("attribute", "position_based", &narrow));
        cases.push(case("attribute", "last_touch", &narrow[..2]));
    }
    for model in ["markov", "shapley"] {
        cases.push(case("attribute_channels", model, &[]));
        cases.push(case("attribute_channels", model, &[fingerprint.clone()]));
        cases.push(case("attribute_channels", model, &scoped));
    }
    cases.push(case("attribute_channels", "markov", &[("markov_order => 2", "markov_order", json!(2))]));
    cases
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
}

fn cells(batches: &[RecordBatch]) -> Vec<BTreeMap<String, Cell>> {
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            let mut row = BTreeMap::new();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                let a = batch.column(i);
                let cell = if a.is_null(r) {
                    Cell::Null
                } else if let Some(s) = a.as_any().downcast_ref::<StringViewArray>() {
                    Cell::Text(s.value(r).to_string())
                } else if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                    Cell::Text(s.value(r).to_string())
                } else if let Some(t) = a.as_any().downcast_ref::<TimestampMicrosecondArray>() {
                    Cell::Int(t.value(r))
                } else if let Some(f) = a.as_any().downcast_ref::<Float64Array>() {
                    Cell::Float(f.value(r))
                } else {
                    panic!("unexpected column type {}", field.data_type())
                };
                row.insert(field.name().clone(), cell);
            }
            rows.push(row);
        }
    }
    rows
}

fn json_cells(rows: &Json) -> Vec<BTreeMap<String, Cell>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let cell = match v {
                        Json::Null => Cell::Null,
                        Json::String(s) => Cell::Text(s.clone()),
                        Json::Number(n) if k.ends_with("_time") => Cell::Int(n.as_i64().unwrap()),
                        Json::Number(n) => Cell::Float(n.as_f64().unwrap()),
                        other => panic!("unexpected reference value {other}"),
                    };
                    (k.clone(), cell)
                })
                .collect()
        })
        .collect()
}

/// Rows sorted by their non-float cells, floats compared with a tolerance.
fn assert_same(label: &str, engine: Vec<BTreeMap<String, Cell>>, reference: Vec<BTreeMap<String, Cell>>, key: &[&str]) {
    let sort = |mut rows: Vec<BTreeMap<String, Cell>>| {
        rows.sort_by(|a, b| {
            let ka: Vec<&Cell> = key.iter().map(|k| &a[*k]).collect();
            let kb: Vec<&Cell> = key.iter().map(|k| &b[*k]).collect();
            ka.partial_cmp(&kb).unwrap()
        });
        rows
    };
    let (engine, reference) = (sort(engine), sort(reference));
    assert_eq!(engine.len(), reference.len(), "{label}: {} rows from the engine, {} from the reference", engine.len(), reference.len());
    for (e, r) in engine.iter().zip(&reference) {
        for (column, expected) in r {
            let got = e.get(column).unwrap_or_else(|| panic!("{label}: the engine has no column {column}"));
            let same = match (got, expected) {
                (Cell::Float(a), Cell::Float(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                (a, b) => a == b,
            };
            assert!(same, "{label}: column {column}: engine {got:?}, reference {expected:?}\nengine row {e:?}\nreference row {r:?}");
        }
    }
}

async fn check_all(ctx: &SessionContext, dir: &Path, layout: &str) -> usize {
    let mut rows_checked = 0;
    for (n, case) in cases().iter().enumerate() {
        let label = format!("{layout}: {}({})", case.function, case.sql_args.join(", "));
        let sql = format!("SELECT * FROM {}({})", case.function, case.sql_args.join(", "));
        let batches = ctx.sql(&sql).await.unwrap_or_else(|e| panic!("{label}: {e}")).collect().await.unwrap_or_else(|e| panic!("{label}: {e}"));
        let params = dir.join(format!("params-{n}.json"));
        std::fs::write(&params, case.params.to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/attribution_ref.py");
        let out = Command::new("python3").arg(&script).arg(dir.join("events.csv")).arg(&params).output().expect("python3 runs");
        assert!(out.status.success(), "{label}: reference failed: {}", String::from_utf8_lossy(&out.stderr));
        let reference = json_cells(&serde_json::from_slice(&out.stdout).unwrap());
        let engine = cells(&batches);
        rows_checked += engine.len();
        let key: &[&str] = match case.function {
            "attribute" => &["conversion_id", "touch_id"],
            _ => &["channel"],
        };
        assert!(!reference.is_empty() || label.contains("to_timestamp_micros"), "{label}: the data should give rows");
        assert_same(&label, engine, reference, key);
        let _ = case.model;
    }
    rows_checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_equals_the_reference_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db"), 16);
    let events = generate(7, 3_000);
    write_csv(&events, &dir.path().join("events.csv"));
    let ctx = lookback_query::session_context(&db, "lookback").unwrap();
    // Two flushed segments of 750 rows, then the memtable in batches of 250 with a query after
    // each, so the memtable is read as several cached sorted runs (2 of them at the end).
    let (flushed, memtable) = events.split_at(1_500);
    let parts: Vec<&[Ev]> = flushed.chunks(750).chain(memtable.chunks(250)).collect();
    for (seq, part) in parts.into_iter().enumerate() {
        let part = part.to_vec();
        admit_events(&db, seq as u64 + 1, 0..part.len() as i64, |i, column| value(&part[i as usize], column));
        if seq < 2 {
            db.flush_all().unwrap();
        } else {
            ctx.sql("SELECT count(*) FROM attribute(model => 'linear')").await.unwrap().collect().await.unwrap();
        }
    }
    let checked = check_all(&ctx, dir.path(), "segments + memtable").await;
    assert!(checked > 1_000, "only {checked} rows compared");
    db.compact_all().unwrap();
    check_all(&ctx, dir.path(), "compacted").await;
}
