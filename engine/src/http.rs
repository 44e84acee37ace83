//! The HTTP endpoint for operators: `/health`, `/metrics` (Prometheus), and admin actions
//! used by benchmarks and operators (`POST /admin/flush`, `POST /admin/compact`,
//! `GET /admin/storage` with the per-column on-disk breakdown), and in fault mode only
//! (`LOOKBACK_FAULTS` set, see `faults_env`) `/debug/faults` to change injected faults.

use crate::metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lookback_common::Faults;
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
    /// Set in fault mode: `/debug/faults` is mounted.
    pub faults: Option<Faults>,
}

pub fn router(state: HttpState) -> Router {
    let router = Router::new();
    let router = match state.faults {
        Some(_) => router.route("/debug/faults", get(list_faults).put(set_faults).delete(clear_faults)),
        None => router,
    };
    router
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

fn fault_rules(faults: &Faults) -> Response {
    let rules: Vec<_> = faults.rules().into_iter().map(|(rule, seen)| format!("{rule:?} seen={seen}")).collect();
    json(StatusCode::OK, serde_json::json!({"rules": rules}))
}

async fn list_faults(State(s): State<HttpState>) -> Response {
    s.faults.as_ref().map_or_else(|| StatusCode::NOT_FOUND.into_response(), fault_rules)
}

async fn set_faults(State(s): State<HttpState>, body: String) -> Response {
    let Some(faults) = &s.faults else { return StatusCode::NOT_FOUND.into_response() };
    match crate::faults_env::parse(&body) {
        Ok(rules) => {
            tracing::warn!(spec = %body, "injected faults replaced");
            faults.set_rules(rules);
            fault_rules(faults)
        }
        Err(e) => json(StatusCode::BAD_REQUEST, serde_json::json!({"error": format!("{e:#}")})),
    }
}

async fn clear_faults(State(s): State<HttpState>) -> Response {
    let Some(faults) = &s.faults else { return StatusCode::NOT_FOUND.into_response() };
    tracing::warn!("injected faults cleared");
    faults.set_rules(Vec::new());
    fault_rules(faults)
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
