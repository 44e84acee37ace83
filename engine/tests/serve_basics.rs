//! `lookback serve` as an operator meets it: the demo dataset, the HTTP endpoints (health,
//! Prometheus metrics, admin flush and storage), clean SIGTERM shutdown and a quick restart,
//! and clear refusals to start (a locked data directory, a bad config file, a bad
//! `LOOKBACK_FAULTS`).

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Generous for a debug build on a loaded 2-core CI machine; a healthy restart takes well under
/// a second.
const RESTART_SECONDS_MAX: f64 = 15.0;
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn demo_metrics_flush_sigterm_and_restart() {
    let site = Site::new();
    let server = site.start(&["--demo", "--memory-prefault-mib", "256"]);
    let log = std::fs::read_to_string(site.data_dir.with_extension("log")).unwrap();
    assert!(log.contains("pre-faulted the heap"), "start-up log:\n{log}");
    let rss_kb = server.rss_kb();
    assert!(rss_kb >= 256 << 10, "a pre-faulted heap is resident: VmRSS {rss_kb} kB");

    let (status, body) = http(&site.http_addr, "GET", "/health");
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "health: {body}");
    let (status, metrics) = http(&site.http_addr, "GET", "/metrics");
    assert_eq!(status, 200);
    for name in ["lookback_ingest_events_accepted_total", "lookback_wal_sync_seconds_bucket", "lookback_memtable_bytes", "lookback_segments"] {
        assert!(metrics.contains(&format!("# TYPE {}", name.trim_end_matches("_bucket"))), "no {name} in /metrics:\n{metrics}");
        assert!(metrics.lines().any(|l| l.starts_with(name)), "no {name} sample in /metrics:\n{metrics}");
    }
    assert_eq!(metric(&metrics, "lookback_wal_poisoned"), Some(0.0));

    let (status, body) = http(&site.http_addr, "POST", "/admin/flush");
    assert_eq!(status, 200, "flush: {body}");
    let (status, body) = http(&site.http_addr, "GET", "/admin/storage");
    assert_eq!(status, 200, "storage: {body}");
    let storage: serde_json::Value = serde_json::from_str(&body).expect("storage is JSON");
    let segment_rows = storage["segment_rows"].as_u64().expect("segment_rows");
    assert!(segment_rows > 0, "demo rows must be in segments after a flush: {body}");
    assert_eq!(storage["memtable_rows"].as_u64(), Some(0), "flush leaves memtables empty: {body}");
    assert!(storage["segments"].as_u64().unwrap_or(0) > 0, "{body}");
    let (_, metrics) = http(&site.http_addr, "GET", "/metrics");
    assert!(metric(&metrics, "lookback_segments").unwrap_or(0.0) >= 1.0, "lookback_segments after a flush:\n{metrics}");

    let status = server.sigterm();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");

    let started = Instant::now();
    let server = site.start(&["--demo"]);
    let restart = started.elapsed().as_secs_f64();
    assert!(restart < RESTART_SECONDS_MAX, "restart took {restart:.1} s");
    let (_, body) = http(&site.http_addr, "GET", "/admin/storage");
    let storage: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(storage["rows"].as_u64(), Some(segment_rows), "rows after restart (--demo must not load twice): {body}");
    eprintln!("restart ready in {restart:.2} s with {segment_rows} rows");
    server.terminate();

    // `dump` prints the events table; the demo's campaign_costs has 30 days x 4 campaigns.
    let rows = dump(&site.data_dir);
    assert_eq!(rows.len() as u64 + 30 * 4, segment_rows, "dump row count");
    for row in &rows {
        let app = row["app_id"].as_str().expect("app_id");
        assert!(app.starts_with("com.demo."), "demo app id: {app}");
    }
}

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let site = Site::new();
    let server = site.start(&[]);
    let other_ingest = format!("127.0.0.1:{}", free_port());
    let other_http = format!("127.0.0.1:{}", free_port());
    let command = serve_command(&site.data_dir, &other_ingest, &other_http, &[]);
    let (status, stderr) = serve_expecting_failure(command, REFUSAL_TIMEOUT);
    assert!(!status.success(), "second server must exit non-zero");
    assert!(stderr.contains("locked"), "second server must say the directory is locked:\n{stderr}");
    let (status, _) = http(&site.http_addr, "GET", "/health");
    assert_eq!(status, 200, "the first server keeps running");
    server.terminate();
}

#[test]
fn bad_configuration_stops_start_up_with_a_clear_error() {
    let site = Site::new();
    let refuse = |extra: &[&str], env: Option<&str>| {
        let mut command = serve_command(&site.data_dir, &site.ingest_addr, &site.http_addr, extra);
        if let Some(spec) = env {
            command.env("LOOKBACK_FAULTS", spec);
        }
        let (status, stderr) = serve_expecting_failure(command, REFUSAL_TIMEOUT);
        assert!(!status.success(), "start-up must fail: {extra:?} {env:?}");
        stderr
    };

    let config = site.config("[storage]\nmemtable_bytes_maxx = 5\n");
    let stderr = refuse(&["--config", &config], None);
    assert!(stderr.contains("parse config file") && stderr.contains("memtable_bytes_maxx"), "unknown key:\n{stderr}");

    let config = site.config("[storage\nnot toml");
    let stderr = refuse(&["--config", &config], None);
    assert!(stderr.contains("parse config file"), "broken TOML:\n{stderr}");

    let config = site.config("[storage]\nwal_io = \"carrier-pigeon\"\n");
    let stderr = refuse(&["--config", &config], None);
    assert!(stderr.contains("wal_io"), "invalid value:\n{stderr}");

    let missing = site.dir.path().join("missing.toml");
    let stderr = refuse(&["--config", missing.to_str().unwrap()], None);
    assert!(stderr.contains("read config file"), "missing file:\n{stderr}");

    let stderr = refuse(&[], Some("sync:.log:explode"));
    assert!(stderr.contains("LOOKBACK_FAULTS") && stderr.contains("unknown action"), "bad fault spec:\n{stderr}");

    // Nothing above got far enough to lock or write the data directory... and a good start works.
    site.start(&[]).terminate();
}
