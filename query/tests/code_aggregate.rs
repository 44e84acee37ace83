//! GROUP BY on segment dictionary codes (`CodeAggregateExec`) answers exactly what DataFusion's
//! own hash aggregate answers, over several segments (whose codes differ for the same text),
//! memtable rows, NULL keys, bitmap-filtered scans and FILTER clauses.

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use lookback_common::Value;
use lookback_query::scan::LookbackTable;
use lookback_storage::Db;
use std::sync::Arc;

mod common;

use common::{admit_events, event_id, open, BASE_US};

/// Rows `from..to`; `channels` picks each row's channel (None: NULL).
fn admit(db: &Db, seq: u64, from: i64, to: i64, channels: &[Option<&str>]) {
    admit_events(db, seq, from..to, |i, column| match column {
        "event_id" => event_id(i, 0),
        "app_id" => Value::Text(format!("app-{}", i % 4)),
        "ts" => Value::Timestamp(BASE_US + i * 1_000_000),
        "event_type" => Value::Text(["install", "open", "purchase"][(i % 3) as usize].into()),
        "device_id" => Value::Text(format!("device-{}", i % 97)),
        "channel" => channels[(i as usize) % channels.len()].map_or(Value::Null, |c| Value::Text(c.into())),
        "revenue" if i % 7 == 0 => Value::Null,
        "revenue" => Value::Float64(i as f64 * 0.25),
        _ => Value::Null,
    })
}

async fn text(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn grouping_on_codes_equals_hash_grouping() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 256);
    // Two segments with different channel sets (so one text has different codes in each),
    // then memtable rows.
    admit(&db, 1, 0, 3_000, &[Some("organic"), Some("ads"), None, Some("a-channel-name-longer-than-12")]);
    db.flush_all().unwrap();
    admit(&db, 2, 3_000, 5_000, &[Some("zz-affiliate"), Some("ads"), Some("ads"), None, Some("email")]);
    db.flush_all().unwrap();
    admit(&db, 3, 5_000, 5_600, &[Some("ads"), Some("memtable-only"), None]);

    let with_rule = lookback_query::session_context(&db, "lookback").unwrap();
    let plain = SessionContext::new();
    plain.register_table("events", Arc::new(LookbackTable::new(db.clone(), "events", db.schema("events").unwrap()))).unwrap();

    let queries = [
        "SELECT channel, sum(revenue), count(*), count(revenue), min(revenue), max(revenue), avg(revenue) FROM events GROUP BY channel ORDER BY channel",
        "SELECT channel, count(*) FROM events WHERE event_type = 'install' GROUP BY channel ORDER BY channel",
        "SELECT channel, count(*) FILTER (WHERE revenue > 100), max(app_id), min(ts) FROM events GROUP BY channel ORDER BY channel",
        "SELECT app_id, count(DISTINCT device_id), sum(revenue) FROM events GROUP BY app_id ORDER BY app_id",
        "SELECT channel, count(*) FROM events WHERE ts > to_timestamp_micros(1700000000000000 + 2500000000) GROUP BY channel ORDER BY channel",
        "SELECT device_id, count(*) FROM events GROUP BY device_id ORDER BY 2 DESC, 1 LIMIT 5",
        "SELECT count(*) FROM (SELECT channel FROM events GROUP BY channel) t",
        "SELECT channel, count(*) FROM events WHERE event_type = 'no-such-type' GROUP BY channel",
        // date_trunc of a fixed unit groups through the dense step table.
        "SELECT date_trunc('minute', ts) AS m, count(*), sum(revenue) FROM events GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('hour', ts), count(*) FROM events WHERE event_type = 'open' GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('week', ts), avg(revenue), max(channel) FROM events GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('second', ts), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3",
        "SELECT date_trunc('month', ts), count(*) FROM events GROUP BY 1",
    ];
    for sql in queries {
        let expected = text(&plain, sql).await;
        assert_eq!(text(&with_rule, sql).await, expected, "{sql}");
    }

    // Plain aggregates, FILTER clauses and bitmap-filtered scans run on codes; a DISTINCT
    // aggregate does not.
    for sql in [queries[0], queries[1], queries[2], queries[5], queries[8], queries[9], queries[10], queries[11]] {
        let plan = text(&with_rule, &format!("EXPLAIN {sql}")).await;
        assert!(plan.contains("CodeAggregateExec"), "{plan}");
    }
    let plan = text(&with_rule, &format!("EXPLAIN {}", queries[3])).await;
    assert!(!plan.contains("CodeAggregateExec"), "{plan}");
    let plan = text(&plain, &format!("EXPLAIN {}", queries[0])).await;
    assert!(!plan.contains("CodeAggregateExec") && plan.contains("LookbackScanExec"), "{plan}");
}
