//! Demo data for the quick start: a small, deterministic attribution dataset (three apps,
//! touchpoints from a handful of channels, installs and purchases), loaded through the normal
//! write path when `lookback serve --demo` starts on an empty `events` table.

use anyhow::{bail, Result};
use lookback_common::{schema::events::TABLE_NAME, Batch, BatchBuilder, Schema, Value};
use lookback_storage::Db;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEMO_DEVICES: usize = 2_000;
const DEMO_BATCH_EVENTS: usize = 5_000;
const DEMO_SEED: u64 = 0x100C_BAC4;
/// 2026-11-01T00:00:00Z in microseconds.
const DEMO_START_US: i64 = 1_793_491_200_000_000;
const APPS: [&str; 3] = ["com.demo.puzzle", "com.demo.runner", "com.demo.shop"];
const CHANNELS: [(&str, &str); 5] = [
    ("google_ads", "gads_winter_sale"),
    ("meta", "meta_lookalike_1"),
    ("tiktok", "tt_spark_ads"),
    ("applovin", "al_rewarded"),
    ("organic", "none"),
];

pub fn load_if_empty(db: &Db) -> Result<()> {
    if db.snapshot(TABLE_NAME)?.rows() > 0 {
        tracing::info!("events table is not empty; demo data not loaded");
        return Ok(());
    }
    let schema = db.schema(TABLE_NAME).expect("the events table always exists");
    let mut rng = SmallRng::seed_from_u64(DEMO_SEED);
    let mut total = 0usize;
    for device in (0..DEMO_DEVICES).step_by(DEMO_BATCH_EVENTS / 10) {
        let batch = journeys(&schema, &mut rng, device, DEMO_BATCH_EVENTS / 10)?;
        total += batch.rows();
        let (tx, rx) = std::sync::mpsc::channel();
        db.admit(TABLE_NAME, 0, 0, batch, Box::new(move |r| drop(tx.send(r))))?;
        if let Ok(Err(e)) | Err(e) = rx.recv().map_err(|e| lookback_storage::DbError::Storage(e.to_string())) {
            bail!("load demo data: {e}");
        }
    }
    tracing::info!(events = total, "loaded demo data");
    Ok(())
}

/// Each device gets a journey: impressions and clicks from one or two channels, then maybe an
/// install, opens and purchases.
fn journeys(schema: &Schema, rng: &mut SmallRng, first_device: usize, devices: usize) -> Result<Batch> {
    let mut b = BatchBuilder::new(schema, devices * 10);
    for d in first_device..first_device + devices {
        let app = APPS[d % APPS.len()];
        let platform = if d % 3 == 0 { "ios" } else { "android" };
        let mut ts = DEMO_START_US + rng.gen_range(0..20 * 86_400_000_000i64);
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
