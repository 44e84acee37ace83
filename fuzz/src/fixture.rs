//! The server the `pgwire` and `sql` targets run against, started in-process on first use and
//! reused for every input: a tokio runtime, a `Db` over a temporary data directory holding a
//! few hundred attribution events (half flushed to a segment, half in the memtable, so scans
//! read both) and a `campaign_costs` table to join with, the SQL session the server serves,
//! and the Postgres endpoint (`lookback_wire::pg::serve`) on 127.0.0.1:0.
//!
//! Inputs can write (INSERT, CREATE TABLE, COPY, DROP TABLE); a fixture that has grown past
//! [`FIXTURE_EVENTS_ROWS_MAX`] rows or [`FIXTURE_TABLES_MAX`] tables, or lost its costs table,
//! is replaced by a fresh one, so a long run's inputs keep meeting the same small database.
//!
//! The runtime's threads are named for [`crate::panics`], which counts their panics; the
//! fixture checks them against the panics its endpoint caught at its boundary
//! ([`Fixture::assert_no_escaped_panic`]).

use crate::panics;
use datafusion::prelude::SessionContext;
use lookback_common::{schema::events, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
use lookback_scoring::ModelRegistry;
use lookback_storage::{Db, DbOptions};
use lookback_wire::pg::{PgServerConfig, PgServerStats};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Devices with a journey (two to eight events each: about 300 events).
const FIXTURE_DEVICES: usize = 60;
const FIXTURE_SEED: u64 = 0x00F0_22ED;
/// 2026-10-01T00:00:00Z, in microseconds: the journeys span the ten days after it.
pub const FIXTURE_START_US: i64 = 1_790_812_800_000_000;
const FIXTURE_DAYS: i64 = 10;
const DAY_US: i64 = 86_400_000_000;
const APPS: [&str; 2] = ["fuzz.app", "fuzz.other"];
const CHANNELS: [(&str, &str); 4] = [
    ("meta", "m1"),
    ("google", "g1"),
    ("tiktok", "t1"),
    ("snap", "s1"),
];
/// The table of daily costs per campaign, for joins.
pub const COSTS_TABLE: &str = "campaign_costs";
/// Past these, the fixture is replaced (checked every [`FIXTURE_CHECK_EVERY`] uses).
pub const FIXTURE_EVENTS_ROWS_MAX: u64 = 200_000;
pub const FIXTURE_TABLES_MAX: usize = 64;
const FIXTURE_CHECK_EVERY: u64 = 64;
/// Connections the fixture's Postgres endpoint accepts at once.
pub const FIXTURE_CONNECTIONS_MAX: usize = 64;
/// A panic is counted by the hook before it unwinds and by the boundary after: counts that
/// differ may still converge for this long (a connection of an earlier input panicking).
const PANIC_COUNTS_SETTLE_MS: u64 = 200;

/// Numbers the fixtures of a process, for their thread names.
static FIXTURES_STARTED: AtomicU64 = AtomicU64::new(0);

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub db: Arc<Db>,
    pub models: Arc<ModelRegistry>,
    /// The session the Postgres endpoint serves (shared by its connections, as in the server).
    pub ctx: Arc<SessionContext>,
    pub pg_addr: SocketAddr,
    /// What the endpoint (and the [`lookback_wire::pg::LocalSession`]s given it) counted.
    pub stats: Arc<PgServerStats>,
    thread_name: String,
    /// Caught panics already reported on stderr.
    caught_reported: AtomicU64,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts a fixture; panics (a broken harness, not a finding) if it cannot.
    pub fn start() -> Fixture {
        panics::install();
        let dir = tempfile::tempdir().expect("create the fixture's data directory");
        let thread_name = format!(
            "{}{}",
            panics::SERVER_THREAD_PREFIX,
            FIXTURES_STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(&thread_name)
            .build()
            .expect("build the fixture's runtime");
        let mut options = DbOptions::new(dir.path());
        options.wal_segment_bytes = 4 << 20;
        options.memtable_bytes_max = 1 << 20;
        let db = Arc::new(Db::open(options).expect("open the fixture's Db"));
        load(&db);
        let (models, problems) =
            ModelRegistry::open(dir.path()).expect("open the fixture's model registry");
        assert!(
            problems.is_empty(),
            "a fresh model registry has no problems: {problems:?}"
        );
        let models = Arc::new(models);
        let ctx = Arc::new(session(&db, &models));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fixture's pg listener");
        let pg_addr = listener.local_addr().expect("the pg listener's address");
        let config = PgServerConfig {
            connections_max: FIXTURE_CONNECTIONS_MAX,
        };
        let stats = Arc::new(PgServerStats::default());
        let serve = lookback_wire::pg::serve_with_stats(
            listener,
            ctx.clone(),
            db.clone(),
            models.clone(),
            config,
            stats.clone(),
            shutdown_rx,
        );
        runtime.spawn(serve);
        let caught_reported = AtomicU64::new(0);
        Fixture {
            runtime,
            db,
            models,
            ctx,
            pg_addr,
            stats,
            thread_name,
            caught_reported,
            shutdown,
            _dir: dir,
        }
    }

    /// Panics (the target's failure) if a panic on the fixture's threads was not caught at
    /// the endpoint's boundary, or was in Lookback's own code. Caught ones in libraries are
    /// bugs too, but answered with XX000 and survived: the first of each fixture is reported
    /// on stderr.
    pub fn assert_no_escaped_panic(&self, target: &str) {
        let settle = Instant::now() + Duration::from_millis(PANIC_COUNTS_SETTLE_MS);
        let seen = loop {
            let seen = panics::seen(&self.thread_name);
            if seen.count <= self.stats.panics_caught() || Instant::now() > settle {
                break seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let caught = self.stats.panics_caught();
        assert!(
            seen.count <= caught,
            "{target}: {} panic(s) escaped the endpoint's boundary; the latest: {}",
            seen.count - caught,
            seen.latest
        );
        assert!(
            seen.ours == 0,
            "{target}: a panic in Lookback's code (caught at the boundary, still a bug): {}",
            seen.latest_ours
        );
        if caught > 0 && self.caught_reported.swap(caught, Ordering::Relaxed) == 0 {
            eprintln!("{target}: a library panic was caught at the endpoint's boundary and answered XX000: {}", seen.latest);
        }
    }

    /// Whether inputs have changed the data so much that the fixture should be replaced.
    fn worn(&self) -> bool {
        let rows = self
            .db
            .snapshot(events::TABLE_NAME)
            .map(|s| s.rows())
            .unwrap_or(u64::MAX);
        let tables = self.db.table_names();
        rows > FIXTURE_EVENTS_ROWS_MAX
            || tables.len() > FIXTURE_TABLES_MAX
            || !tables.iter().any(|t| t == COSTS_TABLE)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.db.shutdown();
    }
}

/// The SQL session of the Postgres endpoint, built as `lookback serve` builds it
/// (engine/src/sql.rs): every storage table, the scoring functions, `pg_catalog`.
pub fn session(db: &Arc<Db>, models: &Arc<ModelRegistry>) -> SessionContext {
    lookback_wire::pg::session(db, models).expect("build the endpoint's session")
}

/// A fixture shared by every input of one target, replaced once worn.
pub struct Shared {
    slot: Mutex<Option<Arc<Fixture>>>,
    uses: AtomicU64,
}

impl Shared {
    pub const fn new() -> Shared {
        Shared {
            slot: Mutex::new(None),
            uses: AtomicU64::new(0),
        }
    }

    pub fn get(&self) -> Arc<Fixture> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let check = self.uses.fetch_add(1, Ordering::Relaxed) % FIXTURE_CHECK_EVERY
            == FIXTURE_CHECK_EVERY - 1;
        if check && slot.as_ref().is_some_and(|f| f.worn()) {
            *slot = None;
        }
        slot.get_or_insert_with(|| Arc::new(Fixture::start()))
            .clone()
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

/// Half the journeys, a flush, the other half; then the costs table.
fn load(db: &Db) {
    let schema = db
        .schema(events::TABLE_NAME)
        .expect("the events table always exists");
    let mut rng = SmallRng::seed_from_u64(FIXTURE_SEED);
    let half = FIXTURE_DEVICES / 2;
    write(db, events::TABLE_NAME, journeys(&schema, &mut rng, 0..half));
    db.flush_all().expect("flush the fixture's first events");
    write(
        db,
        events::TABLE_NAME,
        journeys(&schema, &mut rng, half..FIXTURE_DEVICES),
    );
    let costs = costs_schema();
    db.create_table(costs.clone())
        .expect("create the costs table");
    write(db, COSTS_TABLE, campaign_costs(&costs, &mut rng));
}

fn write(db: &Db, table: &str, batch: lookback_common::Batch) {
    let (tx, rx) = std::sync::mpsc::channel();
    db.admit(table, 0, 0, batch, Box::new(move |r| drop(tx.send(r))))
        .expect("admit fixture rows");
    rx.recv()
        .expect("the admit callback runs")
        .expect("fixture rows are durable");
}

fn costs_schema() -> Schema {
    let columns = vec![
        ColumnDef::new("day", ColumnType::Timestamp, false),
        ColumnDef::new("channel", ColumnType::Text, false),
        ColumnDef::new("campaign", ColumnType::Text, false),
        ColumnDef::new("cost", ColumnType::Float64, false),
    ];
    Schema::new(COSTS_TABLE, columns, Vec::new(), Vec::new()).expect("the costs schema is valid")
}

fn campaign_costs(schema: &Schema, rng: &mut SmallRng) -> lookback_common::Batch {
    let mut b = BatchBuilder::new(schema, FIXTURE_DAYS as usize * CHANNELS.len());
    for day in 0..FIXTURE_DAYS {
        for (channel, campaign) in CHANNELS {
            let cost = f64::from(rng.gen_range(1_000..9_000u32)) / 100.0;
            let row = [
                Value::Timestamp(FIXTURE_START_US + day * DAY_US),
                text(channel),
                text(campaign),
                Value::Float64(cost),
            ];
            b.push_row(&row).expect("a cost row fits its schema");
        }
    }
    b.finish().expect("the costs batch")
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Journeys of `devices`: impressions and clicks, then maybe an install, opens and purchases.
/// Every fifth device has no device id (a fingerprint match by ip and user agent).
fn journeys(
    schema: &Schema,
    rng: &mut SmallRng,
    devices: std::ops::Range<usize>,
) -> lookback_common::Batch {
    let mut b = BatchBuilder::new(schema, devices.len() * 8);
    for d in devices {
        let mut ts = FIXTURE_START_US + rng.gen_range(0..(FIXTURE_DAYS - 3) * DAY_US);
        for step in 0..rng.gen_range(2..9usize) {
            ts += rng.gen_range(60_000_000..12 * 3_600_000_000i64);
            let kind = match step {
                0 | 1 => "impression",
                2 => "click",
                3 => "install",
                4 => "open",
                _ => "purchase",
            };
            let mut row = vec![Value::Null; events::COLUMN_COUNT];
            let mut id: [u8; 16] = rng.gen();
            id[6] = (id[6] & 0x0f) | 0x40; // UUID version 4
            id[8] = (id[8] & 0x3f) | 0x80; // RFC 9562 variant
            row[events::EVENT_ID] = Value::Uuid(id);
            row[events::APP_ID] = text(APPS[usize::from(d % 7 == 0)]);
            row[events::TS] = Value::Timestamp(ts);
            row[events::EVENT_TYPE] = text(kind);
            if d % 5 != 0 {
                row[events::DEVICE_ID] = Value::Text(format!("d{d}"));
            }
            row[events::IP] = Value::Text(format!("10.0.{}.{}", d / 200, d % 200));
            row[events::USER_AGENT] = Value::Text(format!(
                "App/1.{} ({})",
                d % 3,
                if d % 2 == 0 { "ios" } else { "android" }
            ));
            row[events::PLATFORM] = text(if d % 2 == 0 { "ios" } else { "android" });
            if kind == "impression" || kind == "click" {
                let (channel, campaign) = CHANNELS[(d + step) % CHANNELS.len()];
                row[events::CHANNEL] = text(channel);
                row[events::CAMPAIGN] = text(campaign);
            } else {
                row[events::PROPERTIES] = Value::Text(format!(
                    "{{\"step\": {step}, \"os\": \"{}\"}}",
                    if d % 2 == 0 { "ios" } else { "android" }
                ));
            }
            if kind == "purchase" {
                row[events::REVENUE] =
                    Value::Float64(f64::from(rng.gen_range(100..10_000u32)) / 100.0);
                row[events::CURRENCY] = text("USD");
            }
            b.push_row(&row)
                .expect("a journey row fits the events schema");
        }
    }
    b.finish().expect("the journeys batch")
}
