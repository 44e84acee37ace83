//! Server configuration: defaults, an optional TOML file, then command-line flags, in that
//! order of precedence. Every tunable is a named limit with its unit last.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub ingest_addr: String,
    pub pg_addr: String,
    pub http_addr: String,
    /// "text" (key=value) or "json".
    pub log_format: String,
    /// Heap memory mapped at start-up and kept (see the `heap` module); 0: none, and freed
    /// memory goes back to the kernel after 30 s.
    pub memory_prefault_bytes: usize,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub pg: PgConfig,
}

/// The Postgres wire endpoint (`pg_addr`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgConfig {
    pub connections_max: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig { connections_max: lookback_wire::pg::PgServerConfig::default().connections_max }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub memtable_bytes_max: usize,
    pub memory_bytes_max: usize,
    pub flush_interval_ms: u64,
    pub dedup_window_ms: u64,
    pub dedup_entries_max: usize,
    pub producers_max: usize,
    pub flush_zstd_level: i32,
    pub compaction_zstd_level: i32,
    pub compaction_block_rows: usize,
    pub compaction_fan_in: usize,
    pub compaction_rows_max: u64,
    pub compaction_urgent_segments: usize,
    pub wal_segment_bytes: u64,
    /// "auto", "io_uring" or "pwrite".
    pub wal_io: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub frame_bytes_max: usize,
    pub batch_events_max: usize,
    pub text_value_bytes_max: usize,
    pub inflight_batches_max: usize,
    pub connections_max: usize,
    pub handshake_timeout_ms: u64,
    pub admit_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./lookback-data"),
            ingest_addr: "127.0.0.1:7433".into(),
            pg_addr: "127.0.0.1:5433".into(),
            http_addr: "127.0.0.1:9433".into(),
            log_format: "text".into(),
            memory_prefault_bytes: MEMORY_PREFAULT_BYTES_DEFAULT,
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            pg: PgConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let db = lookback_storage::DbOptions::new(".");
        StorageConfig {
            memtable_bytes_max: db.memtable_bytes_max,
            memory_bytes_max: db.memory_bytes_max,
            flush_interval_ms: db.flush_interval_ms,
            dedup_window_ms: db.dedup_window_ms,
            dedup_entries_max: db.dedup_entries_max,
            producers_max: db.producers_max,
            flush_zstd_level: db.flush_segment.zstd_level,
            compaction_zstd_level: db.compaction_zstd_level,
            compaction_block_rows: db.compaction_block_rows,
            compaction_fan_in: db.compaction_fan_in,
            compaction_rows_max: db.compaction_rows_max,
            compaction_urgent_segments: db.compaction_urgent_segments,
            wal_segment_bytes: db.wal_segment_bytes,
            wal_io: "auto".into(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        let w = lookback_wire::ingest::IngestServerConfig::default();
        IngestConfig {
            // Below the WAL's record limit (48 MiB with 64 MiB segments): a batch is logged as
            // one record.
            frame_bytes_max: INGEST_FRAME_BYTES_MAX_DEFAULT.min(w.frame_bytes_max),
            batch_events_max: w.batch_events_max,
            text_value_bytes_max: w.text_value_bytes_max,
            inflight_batches_max: w.inflight_batches_max,
            connections_max: w.connections_max,
            handshake_timeout_ms: w.handshake_timeout_ms,
            admit_timeout_ms: w.admit_timeout_ms,
        }
    }
}

/// Default heap pre-faulted at start-up: the memtable budget (`memory_bytes_max`, 1 GiB) plus
/// the dedup window's tables and flush buffers of a busy first hour (measured: 13 M events
/// peak at ~2 GiB resident).
const MEMORY_PREFAULT_BYTES_DEFAULT: usize = 2 << 30;

/// Default ingest frame limit: comfortably under the WAL record limit of the default WAL
/// segment size, so every accepted batch fits one WAL record.
const INGEST_FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Bytes a WAL record adds around a batch (record header, table name, producer fields).
const WAL_RECORD_OVERHEAD_BYTES: usize = 4096;

impl Config {
    /// Cross-field checks, so a bad combination fails at start-up with a clear message
    /// instead of as rejected batches later.
    pub fn validate(&self) -> Result<()> {
        let wal = self.db_options()?.wal_record_bytes_max();
        let frame = self.ingest.frame_bytes_max;
        if frame + WAL_RECORD_OVERHEAD_BYTES > wal {
            anyhow::bail!(
                "ingest.frame_bytes_max ({frame}) must be at least {WAL_RECORD_OVERHEAD_BYTES} bytes below the WAL record limit ({wal}, half of storage.wal_segment_bytes up to 48 MiB): raise wal_segment_bytes or lower frame_bytes_max"
            );
        }
        if self.pg.connections_max == 0 {
            anyhow::bail!("pg.connections_max must be at least 1");
        }
        Ok(())
    }

    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }

    pub fn db_options(&self) -> Result<lookback_storage::DbOptions> {
        let s = &self.storage;
        let mut o = lookback_storage::DbOptions::new(&self.data_dir);
        o.memtable_bytes_max = s.memtable_bytes_max;
        o.memory_bytes_max = s.memory_bytes_max;
        o.flush_interval_ms = s.flush_interval_ms;
        o.dedup_window_ms = s.dedup_window_ms;
        o.dedup_entries_max = s.dedup_entries_max;
        o.producers_max = s.producers_max;
        o.flush_segment.zstd_level = s.flush_zstd_level;
        o.compaction_zstd_level = s.compaction_zstd_level;
        o.compaction_block_rows = s.compaction_block_rows;
        o.compaction_fan_in = s.compaction_fan_in;
        o.compaction_rows_max = s.compaction_rows_max;
        o.compaction_urgent_segments = s.compaction_urgent_segments;
        o.wal_segment_bytes = s.wal_segment_bytes;
        o.wal_io = match s.wal_io.as_str() {
            "auto" => lookback_wal::IoMode::Auto,
            "io_uring" => lookback_wal::IoMode::IoUring,
            "pwrite" => lookback_wal::IoMode::Pwrite,
            other => anyhow::bail!("storage.wal_io must be auto, io_uring or pwrite, not {other:?}"),
        };
        Ok(o)
    }

    pub fn pg_server_config(&self) -> lookback_wire::pg::PgServerConfig {
        lookback_wire::pg::PgServerConfig { connections_max: self.pg.connections_max }
    }

    pub fn ingest_server_config(&self) -> lookback_wire::ingest::IngestServerConfig {
        let i = &self.ingest;
        lookback_wire::ingest::IngestServerConfig {
            frame_bytes_max: i.frame_bytes_max,
            batch_events_max: i.batch_events_max,
            text_value_bytes_max: i.text_value_bytes_max,
            inflight_batches_max: i.inflight_batches_max,
            connections_max: i.connections_max,
            handshake_timeout_ms: i.handshake_timeout_ms,
            admit_timeout_ms: i.admit_timeout_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("data_dir = \"/x\"\n[storage]\nflush_interval_ms = 5\n").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.storage.flush_interval_ms, 5);
        assert_eq!(c.ingest_addr, "127.0.0.1:7433");
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let mut c = Config::default();
        c.validate().unwrap();
        c.storage.wal_io = "nope".into();
        assert!(c.db_options().is_err());
        let mut c = Config::default();
        c.storage.wal_segment_bytes = 4 << 20;
        assert!(c.validate().unwrap_err().to_string().contains("frame_bytes_max"));
    }
}
