//! SQL over the Postgres wire protocol, as psql meets it: the demo data, events acknowledged
//! by the ingest protocol visible to the next query, projections and filters, catalog queries.

mod common;

use common::*;
use lookback_wire::ingest::client::{Producer, ProducerOptions};
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn query(pg_addr: &str, sql: &str) -> String {
    let (ok, out, err) = psql(pg_addr, &["-c", sql]);
    assert!(ok, "psql -c {sql:?} failed: {err}");
    out.trim().to_string()
}

#[test]
fn psql_reads_demo_and_ingested_events() {
    let site = Site::new();
    let pg_addr = format!("127.0.0.1:{}", free_port());
    let server = site.start(&["--demo", "--pg-addr", &pg_addr]);
    let (_, body) = http(&site.http_addr, "GET", "/admin/storage");
    let storage: serde_json::Value = serde_json::from_str(&body).unwrap();
    let demo_rows = storage["rows"].as_u64().expect("rows");
    assert!(demo_rows > 0);
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), demo_rows.to_string());

    // Acknowledged events are visible to the next query (memtable, no flush).
    let mut rng = SmallRng::seed_from_u64(7);
    let rows: Vec<_> = (0..500).map(|_| random_event(&mut rng, 1)).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut p = Producer::connect(&site.ingest_addr, ProducerOptions::new(1)).await.unwrap();
        p.send("events", &build(&rows)).await.unwrap();
        p.flush().await.unwrap();
    });
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), (demo_rows + 500).to_string());
    let purchases = rows.iter().filter(|r| r[3] == lookback_common::Value::Text("purchase".into())).count();
    let sql = "SELECT count(*), count(revenue) FROM events WHERE app_id = 'app1' AND event_type = 'purchase'";
    assert_eq!(query(&pg_addr, sql), format!("{purchases}|{purchases}"));

    // After a flush the same rows come from segments.
    let (status, _) = http(&site.http_addr, "POST", "/admin/flush");
    assert_eq!(status, 200);
    assert_eq!(query(&pg_addr, sql), format!("{purchases}|{purchases}"));
    let sql = "SELECT device_id, platform FROM events WHERE app_id = 'app1' ORDER BY ts LIMIT 1";
    let out = query(&pg_addr, sql);
    assert!(out.starts_with("device-") && out.ends_with("|android"), "{out}");

    // Errors carry PostgreSQL's SQLSTATEs, and the server survives them.
    let cases = [
        ("SELECT * FROM no_such_table", "42P01: relation \"no_such_table\" does not exist"),
        ("SELEC 1", "42601"),
        ("SELECT nocol FROM events", "42703: column \"nocol\" does not exist"),
        ("SELECT 'abc'::int", "22P02"),
        ("DELETE FROM events", "0A000"),
    ];
    for (sql, expected) in cases {
        let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", sql]);
        assert!(!ok && err.contains(expected), "{sql}: expected {expected}, got {err}");
    }
    let (_, _, err) = psql(&pg_addr, &["-c", "DELETE FROM events"]);
    assert!(err.contains("append-only"), "DELETE hint: {err}");

    // Every column reads back, uuids as canonical text.
    let out = query(&pg_addr, "SELECT * FROM events WHERE app_id = 'app1' LIMIT 1");
    let fields: Vec<&str> = out.split('|').collect();
    assert_eq!(fields.len(), 14, "{out}");
    assert!(fields[0].len() == 36 && fields[0].matches('-').count() == 4, "event_id: {out}");
    assert_eq!(query(&pg_addr, "SELECT count(*) FROM events"), (demo_rows + 500).to_string());

    // INSERT goes through the WAL like ingested events, and is visible at once.
    let insert = "INSERT INTO events (event_id, app_id, ts, event_type) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'app-sql', '2026-11-21T10:00:00Z', 'install')";
    let (ok, _, err) = psql(&pg_addr, &["-c", insert]);
    assert!(ok, "INSERT: {err}");
    assert_eq!(query(&pg_addr, "SELECT event_id FROM events WHERE app_id = 'app-sql'"), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");

    let bad_uuid = "INSERT INTO events (event_id, app_id, ts, event_type) VALUES ('nope', 'a', '2026-11-21T10:00:00Z', 'x')";
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", bad_uuid]);
    assert!(!ok && err.contains("22P02") && err.contains("invalid input syntax for type uuid"), "{err}");
    let no_app = "INSERT INTO events (event_id, ts, event_type) VALUES ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a19', '2026-11-21T10:00:00Z', 'x')";
    let (ok, _, err) = psql(&pg_addr, &["-v", "VERBOSITY=verbose", "-c", no_app]);
    assert!(!ok && err.contains("23502"), "{err}");

    // Catalog queries psql's \dt runs.
    let (ok, out, err) = psql(&pg_addr, &["-c", "\\dt"]);
    assert!(ok && out.contains("events"), "\\dt: {out} {err}");
    server.terminate();
}
