//! Demo data for the quick start: an attribution dataset of about a million events over the
//! last 30 days (three apps, touchpoints from five channels, installs and purchases) and a
//! `campaign_costs` table (a cost per campaign per day, for ROAS joins), loaded through the
//! normal write path when `lookback serve --demo` starts on an empty `events` table. The data is
//! the same on every load but for its dates, which end at the day of loading, so "last 30
//! days" dashboards have something to show.

use anyhow::{bail, Result};
use lookback_common::{schema::events::TABLE_NAME, Batch, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
use lookback_storage::Db;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Devices with a journey; about 5.5 events each.
const DEMO_DEVICES: usize = 180_000;
const DEMO_BATCH_EVENTS: usize = 50_000;
const DEMO_SEED: u64 = 0x100C_BAC4;
const DEMO_DAYS: i64 = 30;
const DAY_US: i64 = 86_400_000_000;
const COSTS_TABLE: &str = "campaign_costs";
const APPS: [&str; 3] = ["com.demo.puzzle", "com.demo.runner", "com.demo.shop"];
const CHANNELS: [(&str, &str); 5] = [
    ("google_ads", "gads_winter_sale"),
    ("meta", "meta_lookalike_1"),
    ("tiktok", "tt_spark_ads"),
    ("applovin", "al_rewarded"),
    ("email", "newsletter"),
];
/// The channel with no cost rows (owned media). Not named `organic`: that is the channel
/// attribution reports unattributed conversions under (docs/attribution.md), and a touchpoint
/// channel of that name would be counted together with them.
const UNPAID_CHANNEL: &str = "email";

pub fn load_if_empty(db: &Db) -> Result<()> {
    match db.snapshot(TABLE_NAME) {
        Ok(snapshot) if snapshot.rows() == 0 => {}
        Ok(_) => {
            tracing::info!("events table is not empty; demo data not loaded");
            return Ok(());
        }
        // A damaged segment: the table is not empty, and its queries answer XX001.
        Err(e) => {
            tracing::warn!(error = %e, "events table cannot be read; demo data not loaded");
            return Ok(());
        }
    }
    let schema = db.schema(TABLE_NAME).expect("the events table always exists");
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;
    // Midnight 29 days ago: the whole dataset is within "the last 30 days" and in the past
    // (a journey starts at least 3 days before today and lasts at most 54 hours).
    let start_us = (now_us.div_euclid(DAY_US) - (DEMO_DAYS - 1)) * DAY_US;
    let mut rng = SmallRng::seed_from_u64(DEMO_SEED);
    let mut total = 0usize;
    let devices_per_batch = DEMO_BATCH_EVENTS * 2 / 11;
    for device in (0..DEMO_DEVICES).step_by(devices_per_batch) {
        let devices = devices_per_batch.min(DEMO_DEVICES - device);
        let batch = journeys(&schema, &mut rng, start_us, device, devices)?;
        total += batch.rows();
        write(db, TABLE_NAME, batch)?;
    }
    let costs = campaign_costs(db, &mut rng, start_us)?;
    tracing::info!(events = total, campaign_costs = costs, "loaded demo data");
    Ok(())
}

fn write(db: &Db, table: &str, batch: Batch) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    db.admit(table, 0, 0, batch, Box::new(move |r| drop(tx.send(r))))?;
    if let Ok(Err(e)) | Err(e) = rx.recv().map_err(|e| lookback_storage::DbError::Storage(e.to_string())) {
        bail!("load demo data: {e}");
    }
    Ok(())
}

/// `campaign_costs (day timestamptz, channel text, campaign text, cost double precision)`:
/// one row per paid campaign per day. Returns the rows written (none if the table exists).
fn campaign_costs(db: &Db, rng: &mut SmallRng, start_us: i64) -> Result<usize> {
    if db.schema(COSTS_TABLE).is_some() {
        return Ok(0);
    }
    let columns = vec![
        ColumnDef::new("day", ColumnType::Timestamp, false),
        ColumnDef::new("channel", ColumnType::Text, false),
        ColumnDef::new("campaign", ColumnType::Text, false),
        ColumnDef::new("cost", ColumnType::Float64, false),
    ];
    let schema = Schema::new(COSTS_TABLE, columns, Vec::new(), Vec::new()).map_err(anyhow::Error::msg)?;
    db.create_table(schema.clone())?;
    let mut b = BatchBuilder::new(&schema, DEMO_DAYS as usize * CHANNELS.len());
    for day in 0..DEMO_DAYS {
        for (channel, campaign) in CHANNELS.iter().filter(|(c, _)| *c != UNPAID_CHANNEL) {
            let cost = (rng.gen_range(20_000..80_000) as f64) / 100.0;
            let row = [Value::Timestamp(start_us + day * DAY_US), Value::Text(channel.to_string()), Value::Text(campaign.to_string()), Value::Float64(cost)];
            b.push_row(&row).map_err(anyhow::Error::msg)?;
        }
    }
    let batch = b.finish().map_err(anyhow::Error::msg)?;
    let rows = batch.rows();
    write(db, COSTS_TABLE, batch)?;
    Ok(rows)
}

/// Each device gets a journey: impressions and clicks from one or two channels, then maybe an
/// install, opens and purchases.
fn journeys(schema: &Schema, rng: &mut SmallRng, start_us: i64, first_device: usize, devices: usize) -> Result<Batch> {
    let mut b = BatchBuilder::new(schema, devices * 10);
    for d in first_device..first_device + devices {
        let app = APPS[d % APPS.len()];
        let platform = if d % 3 == 0 { "ios" } else { "android" };
        let mut ts = start_us + rng.gen_range(0..(DEMO_DAYS - 4) * DAY_US);
        for step in 0..rng.gen_range(2..10) {
            ts += rng.gen_range(1_000_000..6 * 3_600_000_000i64);
            let (channel, campaign) = CHANNELS[(d + step / 3) % CHANNELS.len()];
            let kind = match step {
                0..=2 => "impression",
                3 => "click",
                4 => "install",
                5 | 6 => "open",
                _ => "purchase",
            };
            let touch = kind == "impression" || kind == "click";
            let text = |s: String| Value::Text(s);
            let mut event_id: [u8; 16] = rng.gen();
            event_id[6] = (event_id[6] & 0x0f) | 0x40; // UUID version 4
            event_id[8] = (event_id[8] & 0x3f) | 0x80; // RFC 9562 variant
            let row = [
                Value::Uuid(event_id),
                text(app.into()),
                Value::Timestamp(ts),
                text(kind.into()),
                text(format!("dev-{d:06}")),
                if d % 4 == 0 { text(format!("user-{d}")) } else { Value::Null },
                text(format!("10.{}.{}.{}", d % 250, d / 250 % 250, d % 7)),
                text(format!("DemoApp/1.0 ({platform})")),
                text(platform.into()),
                if touch { text(channel.into()) } else { Value::Null },
                if touch { text(campaign.into()) } else { Value::Null },
                if kind == "purchase" { Value::Float64(rng.gen_range(1..100) as f64 - 0.01) } else { Value::Null },
                if kind == "purchase" { text("USD".into()) } else { Value::Null },
                if touch { Value::Null } else { text(format!("{{\"step\":{step}}}")) },
            ];
            b.push_row(&row).map_err(anyhow::Error::msg)?;
        }
    }
    b.finish().map_err(anyhow::Error::msg)
}
