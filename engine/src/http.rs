//! The HTTP endpoint for operators: `/health`, `/metrics` (Prometheus), and admin actions
//! used by benchmarks and operators (`POST /admin/flush`, `POST /admin/compact`,
//! `GET /admin/storage` with the per-column on-disk breakdown).

use crate::metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use lookback_storage::Db;
use lookback_wire::ingest::IngestServerStats;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct HttpState {
    pub db: Arc<Db>,
    pub ingest: Arc<IngestServerStats>,
    pub started: Instant,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/admin/flush", post(flush))
        .route("/admin/compact", post(compact))
        .route("/admin/storage", get(storage))
        .with_state(state)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn health(State(s): State<HttpState>) -> Response {
    match s.db.wal().poisoned() {
        None => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        Some(reason) => json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "wal_poisoned", "reason": reason})),
    }
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    let body = metrics::render(&s.db, &s.ingest, s.started);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn run_admin(s: HttpState, action: fn(&Db) -> Result<(), lookback_storage::DbError>) -> Response {
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || action(&s.db)).await {
        Ok(Ok(())) => json(StatusCode::OK, serde_json::json!({"ok": true, "ms": started.elapsed().as_millis() as u64})),
        Ok(Err(e)) => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"ok": false, "error": e.to_string()})),
        Err(e) => json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"ok": false, "error": e.to_string()})),
    }
}

async fn flush(State(s): State<HttpState>) -> Response {
    run_admin(s, Db::flush_all).await
}

async fn compact(State(s): State<HttpState>) -> Response {
    run_admin(s, Db::compact_all).await
}

async fn storage(State(s): State<HttpState>) -> Response {
    let g = s.db.gauges();
    let columns = match s.db.column_bytes(lookback_common::schema::events::TABLE_NAME) {
        Ok(c) => c,
        Err(e) => return json(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": e.to_string()})),
    };
    let columns: Vec<_> = columns.into_iter().map(|(name, bytes)| serde_json::json!({"name": name, "bytes": bytes})).collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "rows": g.segment_rows + g.memtable_rows,
            "segment_rows": g.segment_rows,
            "memtable_rows": g.memtable_rows,
            "segment_bytes": g.segment_bytes,
            "segments": g.segments,
            "columns": columns,
        }),
    )
}
