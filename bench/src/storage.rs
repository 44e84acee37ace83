//! The server's storage report: `POST /admin/compact` (flush the memtable, compact fully,
//! return when done) then `GET /admin/storage`, which returns
//! `{"rows": u64, "segment_bytes": u64, "segments": u64, "columns": [{"name", "bytes"}]}`.

use anyhow::{bail, Context};
use lookback_bench::http;
use std::time::Duration;

/// Full compaction of a large table can take minutes on a small machine.
const COMPACT_TIMEOUT: Duration = Duration::from_secs(1_800);
const STORAGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct StorageReport {
    pub rows: u64,
    pub segment_bytes: u64,
    pub columns: Vec<(String, u64)>,
    /// The response as received, kept for the JSON report.
    pub raw: serde_json::Value,
}

impl StorageReport {
    pub fn parse(body: &str) -> anyhow::Result<StorageReport> {
        let raw: serde_json::Value =
            serde_json::from_str(body).context("storage report is not JSON")?;
        let field = |name: &str| {
            raw.get(name)
                .and_then(serde_json::Value::as_u64)
                .with_context(|| format!("storage report lacks integer field {name:?}: {body}"))
        };
        let (rows, segment_bytes) = (field("rows")?, field("segment_bytes")?);
        let mut columns = Vec::new();
        for c in raw
            .get("columns")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = c.get("name").and_then(serde_json::Value::as_str);
            let bytes = c.get("bytes").and_then(serde_json::Value::as_u64);
            match (name, bytes) {
                (Some(name), Some(bytes)) => columns.push((name.to_string(), bytes)),
                _ => bail!("storage report column entry lacks name/bytes: {c}"),
            }
        }
        Ok(StorageReport {
            rows,
            segment_bytes,
            columns,
            raw,
        })
    }

    pub fn bytes_per_event(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.segment_bytes as f64 / self.rows as f64)
    }

    pub fn columns_bytes_per_event(&self) -> Option<serde_json::Value> {
        if self.rows == 0 || self.columns.is_empty() {
            return None;
        }
        let map = self
            .columns
            .iter()
            .map(|(name, bytes)| {
                (
                    name.clone(),
                    serde_json::json!(*bytes as f64 / self.rows as f64),
                )
            })
            .collect::<serde_json::Map<_, _>>();
        Some(serde_json::Value::Object(map))
    }
}

/// Compacts, then reads the storage report. Blocking.
pub fn fetch_storage(http_addr: &str) -> anyhow::Result<StorageReport> {
    let compact = http::request(
        http_addr,
        "POST",
        "/admin/compact",
        Some(b""),
        COMPACT_TIMEOUT,
    )
    .context("compact the server's storage")?;
    if compact.status != 200 {
        bail!(
            "POST /admin/compact returned {}: {}",
            compact.status,
            compact.body_text()
        );
    }
    let storage = http::request(http_addr, "GET", "/admin/storage", None, STORAGE_TIMEOUT)
        .context("read the server's storage report")?;
    if storage.status != 200 {
        bail!(
            "GET /admin/storage returned {}: {}",
            storage.status,
            storage.body_text()
        );
    }
    StorageReport::parse(&storage.body_text())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests {
    use super::*;

    #[test]
    fn parses_the_storage_report() {
        let body = r#"{"rows": 4, "segment_bytes": 100, "segments": 1,
                       "columns": [{"name": "event_id", "bytes": 64}]}"#;
        let r = StorageReport::parse(body).unwrap();
        assert_eq!(r.bytes_per_event(), Some(25.0));
        assert_eq!(r.columns_bytes_per_event().unwrap()["event_id"], 16.0);
        assert!(StorageReport::parse(r#"{"rows": 1}"#).is_err());
    }
}
