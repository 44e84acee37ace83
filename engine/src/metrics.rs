//! Prometheus text exposition of the server's counters and gauges.
//!
//! The numbers live where they are produced (atomics in the WAL, the database and the ingest
//! server); this module only renders them at scrape time, so there is no second registry to
//! keep in sync. Format: https://prometheus.io/docs/instrumenting/exposition_formats/.

use lookback_storage::Db;
use lookback_wire::ingest::IngestServerStats;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Instant;

struct Exposition(String);

impl Exposition {
    fn metric(&mut self, kind: &str, name: &str, help: &str, value: f64) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.metric("counter", name, help, value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.metric("gauge", name, help, value);
    }

    /// `buckets`: cumulative (upper bound in µs, count); rendered in seconds.
    fn histogram_us(&mut self, name: &str, help: &str, buckets: &[(u64, u64)], sum_us: u64, count: u64) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        for &(le, n) in buckets {
            let le = if le == u64::MAX { "+Inf".to_string() } else { format!("{}", le as f64 / 1e6) };
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        if buckets.last().is_none_or(|b| b.0 != u64::MAX) {
            let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {count}");
        }
        let _ = writeln!(self.0, "{name}_sum {}\n{name}_count {count}", sum_us as f64 / 1e6);
    }
}

pub fn render(db: &Db, ingest: &IngestServerStats, started: Instant) -> String {
    let mut e = Exposition(String::with_capacity(4096));
    let s = db.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    e.gauge("lookback_uptime_seconds", "Seconds since the server started", started.elapsed().as_secs_f64());
    e.counter("lookback_ingest_events_received_total", "Events received in admitted batches", load(&s.events_received));
    e.counter("lookback_ingest_events_accepted_total", "Events written (after dedup)", load(&s.events_accepted));
    e.counter("lookback_ingest_events_deduplicated_total", "Events dropped as duplicates of an (app_id, event_id) in the dedup window", load(&s.events_deduplicated));
    e.counter("lookback_ingest_batches_total", "Batches admitted", load(&s.batches_admitted));
    e.counter("lookback_ingest_duplicate_batches_total", "Resent batches recognised by producer sequence", load(&s.duplicate_batches));
    e.counter("lookback_ingest_overloaded_total", "Admissions refused because memtables were full", load(&s.overloaded));
    e.counter("lookback_ingest_connections_total", "Ingest connections accepted", load(&ingest.connections_total));
    e.gauge("lookback_ingest_connections_open", "Open ingest connections", load(&ingest.connections_open) as f64);
    e.counter("lookback_ingest_bytes_total", "Batch bytes received", load(&ingest.bytes));
    e.counter("lookback_ingest_errors_total", "Error frames sent", load(&ingest.errors));
    let w = db.wal().stats();
    e.counter("lookback_wal_records_total", "WAL records written", w.records);
    e.counter("lookback_wal_bytes_total", "WAL bytes written", w.bytes_written);
    e.counter("lookback_wal_syncs_total", "WAL group commits (fdatasync calls)", w.syncs);
    e.histogram_us("lookback_wal_sync_seconds", "WAL write+fdatasync latency per group commit", &w.sync_micros_buckets, w.sync_micros_total, w.syncs);
    e.gauge("lookback_wal_queued_bytes", "Payload bytes waiting for the WAL writer", w.queued_bytes as f64);
    e.gauge("lookback_wal_segment_files", "WAL segment files on disk", w.segment_files as f64);
    e.gauge("lookback_wal_durable_lsn", "Highest durable LSN", db.wal().durable_lsn() as f64);
    e.gauge("lookback_wal_poisoned", "1 when the WAL refused writes after an I/O failure", db.wal().poisoned().is_some() as u8 as f64);
    let g = db.gauges();
    e.gauge("lookback_memtable_bytes", "Bytes held in memtables (active and frozen)", g.memtable_bytes as f64);
    e.gauge("lookback_memtable_rows", "Rows held in memtables", g.memtable_rows as f64);
    e.gauge("lookback_segments", "Live segment files", g.segments as f64);
    e.gauge("lookback_segment_bytes", "Bytes in live segment files", g.segment_bytes as f64);
    e.gauge("lookback_segment_rows", "Rows in live segment files", g.segment_rows as f64);
    e.gauge("lookback_damaged_segments", "Listed segments whose file failed its checksums at start-up: their table's queries answer XX001", g.damaged_segments as f64);
    e.gauge("lookback_dedup_keys", "Keys in the event-id dedup window", g.dedup_keys as f64);
    e.counter("lookback_dedup_generations_evicted_early_total", "Dedup generations dropped before the window ended (entries limit)", g.dedup_evicted_early);
    e.gauge("lookback_producers", "Producers whose batch sequence is tracked", g.producers as f64);
    e.counter("lookback_flushes_total", "Memtable flushes", load(&s.flushes));
    e.counter("lookback_flush_errors_total", "Failed flush attempts", load(&s.flush_errors));
    e.counter("lookback_flush_seconds_total", "Time spent flushing", load(&s.flush_micros_total) / 1_000_000);
    e.counter("lookback_compactions_total", "Segment merges", load(&s.compactions));
    e.counter("lookback_compaction_errors_total", "Failed merges", load(&s.compaction_errors));
    e.gauge("lookback_recovery_seconds", "Duration of the last start-up recovery", load(&s.recovery_micros) as f64 / 1e6);
    e.gauge("lookback_recovery_records", "WAL records replayed at start-up", load(&s.recovered_records) as f64);
    e.0
}
