//! `lookback serve`: opens the data directory, starts the ingest and HTTP listeners, and shuts
//! everything down in order on SIGINT/SIGTERM (stop accepting, ack what was admitted, flush,
//! close the WAL).

use crate::config::Config;
use crate::http::{router, HttpState};
use crate::ingest_sink::DbSink;
use anyhow::{Context, Result};
use lookback_storage::Db;
use lookback_wire::ingest::IngestServerStats;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The data directory's model registry; a model file that no longer parses is logged and
/// left out (the server starts without it).
fn open_models(data_dir: &std::path::Path) -> Result<lookback_scoring::ModelRegistry> {
    let (models, problems) = lookback_scoring::ModelRegistry::open(data_dir).context("open model registry")?;
    for (path, problem) in problems {
        tracing::error!(path = %path.display(), error = %problem, "model file left out");
    }
    let loaded = models.list().len();
    match lookback_scoring::cuda::gpu() {
        Ok(gpu) => tracing::info!(models = loaded, gpu = gpu.name(), "scoring ready"),
        Err(e) => tracing::info!(models = loaded, gpu = %e, "scoring ready, CPU only"),
    }
    Ok(models)
}

/// How long shutdown waits for listeners to drain before closing the database anyway.
const SHUTDOWN_DRAIN_MS: u64 = 10_000;

pub async fn serve(config: Config, demo: bool) -> Result<()> {
    let started = Instant::now();
    // Handlers first: a SIGTERM during start-up must shut down cleanly, not kill the process.
    let signals = Signals::install();
    config.validate()?;
    let (options, faults) = crate::faults_env::apply(config.db_options()?)?;
    let db = tokio::task::spawn_blocking(move || Db::open(options)).await?.context("open data directory")?;
    let db = Arc::new(db);
    if demo {
        let db = db.clone();
        tokio::task::spawn_blocking(move || crate::demo::load_if_empty(&db)).await??;
    }
    let models = Arc::new(open_models(&config.data_dir)?);
    // Before any listener is bound, so a connectable port means the whole server is up.
    let sql = Arc::new(crate::sql::session(&db, &models)?);
    let ingest_listener = bind(&config.ingest_addr, "ingest").await?;
    let http_listener = bind(&config.http_addr, "http").await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = Arc::new(IngestServerStats::default());
    let sink = Arc::new(DbSink::new(db.clone(), Duration::from_millis(config.ingest.admit_timeout_ms)));
    let ingest = tokio::spawn(lookback_wire::ingest::serve(
        ingest_listener,
        sink,
        config.ingest_server_config(),
        stats.clone(),
        shutdown_rx.clone(),
    ));
    let pg_listener = bind(&config.pg_addr, "pg").await?;
    if demo {
        print_demo_help(&config.pg_addr);
    }
    let pg = tokio::spawn(lookback_wire::pg::serve(pg_listener, sql, db.clone(), models, config.pg_server_config(), shutdown_rx.clone()));
    let app = router(HttpState { db: db.clone(), ingest: stats, started, faults });
    let mut http_shutdown = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(
        data_dir = %config.data_dir.display(),
        ingest_addr = %config.ingest_addr,
        http_addr = %config.http_addr,
        pg_addr = %config.pg_addr,
        wal_backend = ?db.wal().backend(),
        "lookback is ready"
    );
    let signal = signals.wait().await;
    tracing::info!(signal, "shutting down");
    let _ = shutdown_tx.send(true);
    let drain = Duration::from_millis(SHUTDOWN_DRAIN_MS);
    match tokio::time::timeout(drain, ingest).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "ingest server stopped with an error"),
        Err(_) => tracing::warn!("ingest connections did not drain in time"),
        _ => {}
    }
    let _ = tokio::time::timeout(drain, http).await;
    let _ = tokio::time::timeout(drain, pg).await;
    tokio::task::spawn_blocking(move || db.shutdown()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn bind(addr: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("bind {what} listener on {addr}"))
}

/// SIGTERM and SIGINT, caught from the moment [`Signals::install`] runs.
struct Signals {
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Signals { streams: Some((term, int)) },
            _ => Signals { streams: None },
        }
    }

    async fn wait(self) -> &'static str {
        let Some((mut term, mut int)) = self.streams else {
            // Without signal handlers the server can only be killed; keep serving.
            std::future::pending::<()>().await;
            return "none";
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

/// What `serve --demo` prints once it accepts connections: how to connect, and queries to try.
fn print_demo_help(pg_addr: &str) {
    let (host, port) = pg_addr.rsplit_once(':').unwrap_or((pg_addr, "5433"));
    println!(
        "Lookback is serving demo data (about 1 M events over the last 30 days, and campaign_costs).
Connect:  psql -h {host} -p {port} -U lookback lookback
Try:
  SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC;
  SELECT date_trunc('day', ts) AS day, count(*) FILTER (WHERE event_type = 'install') AS installs
    FROM events WHERE ts >= now() - interval '7 days' GROUP BY 1 ORDER BY 1;
  SELECT campaign, cost, clicks, cost / clicks AS cost_per_click
    FROM (SELECT campaign, sum(cost) AS cost FROM campaign_costs GROUP BY 1) c
    JOIN (SELECT campaign, count(*) AS clicks FROM events WHERE event_type = 'click' GROUP BY 1) e USING (campaign)
    ORDER BY cost_per_click;
Attribution (docs/attribution.md):
  SELECT channel, count(*) AS installs FROM attribute(model => 'last_touch', conversion => 'install')
    GROUP BY 1 ORDER BY 2 DESC;
  SELECT * FROM attribute_channels(model => 'markov');
  SELECT campaign, cost, revenue, revenue / cost AS roas
    FROM (SELECT campaign, sum(cost) AS cost FROM campaign_costs GROUP BY 1) c
    JOIN (SELECT campaign, sum(revenue) AS revenue
            FROM attribute(model => 'linear', conversion => 'purchase') GROUP BY 1) a USING (campaign)
    ORDER BY roas DESC;"
    );
}
