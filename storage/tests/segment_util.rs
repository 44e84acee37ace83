//! Shared helpers of the segment tests: random batches over every column type, a realistic
//! events-like generator, and batch equality that treats NaN bit patterns as values.
#![allow(dead_code)]

use lookback_common::schema::events;
use lookback_common::{Batch, BatchBuilder, ColumnDef, ColumnType, Schema, Value};
use rand::rngs::SmallRng;
use rand::Rng;

/// Every column type, nullable and not; sort key (tag, n, ts); bitmaps on tag and s.
pub fn mixed_schema() -> Schema {
    use ColumnType::*;
    let c = ColumnDef::new;
    let columns = vec![
        c("tag", Text, true),
        c("n", Int64, true),
        c("x", Float64, true),
        c("ts", Timestamp, false),
        c("b", Bool, true),
        c("id", Uuid, true),
        c("s", Text, false),
    ];
    Schema::new("mixed", columns, vec![0, 1, 3], vec![0, 6]).expect("valid schema")
}

/// Includes strings a segment dictionary packs (canonical UUIDs in either case, dotted quads)
/// and near misses it must keep raw.
const TAGS: &[&str] = &[
    "", "a", "b", "é", "日本語", "zz", "a\u{0}b", "🦀crab",
    "0f8fad5b-d9cb-469f-a165-70867728950e", "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
    "7c9e6679-7425-40DE-944b-e07fc1f90ae7", "10.0.0.1", "192.168.1.255", "010.0.0.1", "1.2.3",
];

fn long_text(rng: &mut SmallRng) -> String {
    let n = rng.gen_range(100..200);
    (0..n).map(|_| rng.gen_range('a'..='z')).collect()
}

fn random_int(rng: &mut SmallRng) -> i64 {
    match rng.gen_range(0..6) {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => rng.gen_range(-3..3),
        3 => rng.gen(),
        _ => rng.gen_range(-1000..1000),
    }
}

fn random_float(rng: &mut SmallRng) -> f64 {
    match rng.gen_range(0..8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => f64::from_bits(rng.gen()),
        _ => rng.gen_range(-100.0..100.0),
    }
}

fn maybe(rng: &mut SmallRng, null_ratio: f64, v: impl FnOnce(&mut SmallRng) -> Value) -> Value {
    if rng.gen_bool(null_ratio) {
        Value::Null
    } else {
        v(rng)
    }
}

/// A random unsorted batch of [`mixed_schema`]. `null_ratio` applies to nullable columns.
pub fn random_batch(rng: &mut SmallRng, rows: usize, null_ratio: f64) -> Batch {
    let schema = mixed_schema();
    let mut b = BatchBuilder::new(&schema, rows);
    for _ in 0..rows {
        let row = vec![
            maybe(rng, null_ratio, |r| {
                if r.gen_bool(0.1) {
                    Value::Text(long_text(r))
                } else {
                    Value::Text(TAGS[r.gen_range(0..TAGS.len())].to_string())
                }
            }),
            maybe(rng, null_ratio, |r| Value::Int64(random_int(r))),
            maybe(rng, null_ratio, |r| Value::Float64(random_float(r))),
            Value::Timestamp(random_int(rng)),
            maybe(rng, null_ratio, |r| Value::Bool(r.gen())),
            maybe(rng, null_ratio, |r| Value::Uuid(r.gen())),
            Value::Text(if rng.gen_bool(0.5) {
                format!("v{}", rng.gen_range(0..5))
            } else {
                format!("{}✓{}", rng.gen::<u32>(), "x".repeat(rng.gen_range(0..40)))
            }),
        ];
        b.push_row(&row).expect("row matches schema");
    }
    b.finish().expect("valid batch")
}

/// Values equal with floats compared by bits; null slots compared as null only.
pub fn assert_batches_equal(expected: &Batch, actual: &Batch) {
    assert_eq!(expected.rows(), actual.rows(), "row count");
    assert_eq!(expected.columns().len(), actual.columns().len(), "column count");
    for c in 0..expected.columns().len() {
        for row in 0..expected.rows() {
            let (e, a) = (expected.column(c).value(row), actual.column(c).value(row));
            assert!(same_value(&e, &a), "column {c} row {row}: expected {e:?}, got {a:?}");
        }
    }
}

pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

// ---- realistic events ----

struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut SmallRng) -> usize {
        let total = *self.cumulative.last().expect("n > 0");
        let x = rng.gen_range(0.0..total);
        self.cumulative.partition_point(|&c| c < x).min(self.cumulative.len() - 1)
    }
}

const EVENT_TYPES: &[(&str, u32)] = &[
    ("screen_view", 35),
    ("session_start", 25),
    ("ad_impression", 15),
    ("click", 10),
    ("level_up", 6),
    ("add_to_cart", 4),
    ("purchase", 2),
    ("sign_up", 1),
    ("tutorial_complete", 1),
    ("share", 1),
];
const CHANNELS: &[&str] = &[
    "organic", "google_ads", "facebook", "tiktok", "apple_search_ads", "unity_ads", "applovin",
    "ironsource", "snapchat", "twitter", "reddit", "email", "referral", "moloco", "liftoff",
    "vungle", "chartboost", "mintegral", "pangle", "influencer",
];
const SCREENS: &[&str] = &["home", "shop", "level_select", "settings", "profile", "inbox", "map"];

struct Device {
    app: String,
    id: String,
    user: Option<String>,
    ip: String,
    ua: String,
    platform: &'static str,
    channel: usize,
    campaign: String,
}

fn uuid_text(rng: &mut SmallRng) -> String {
    let b: [u8; 16] = rng.gen();
    lookback_common::batch::format_uuid(&b)
}

fn new_device(rng: &mut SmallRng, apps: &Zipf, channels: &Zipf, campaigns: &Zipf) -> Device {
    let platform = ["ios", "android", "web"][rng.gen_range(0..3)];
    let ua = match platform {
        "ios" => format!(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 App/{}.{}",
            rng.gen_range(0..6), rng.gen_range(1..4), rng.gen_range(0..10)
        ),
        "android" => format!(
            "Mozilla/5.0 (Linux; Android {}; SM-G99{}B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{}.0.0.0 Mobile Safari/537.36",
            rng.gen_range(11..15), rng.gen_range(0..10), rng.gen_range(0..6)
        ),
        _ => format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/12{}.0.0.0 Safari/537.36",
            rng.gen_range(0..6)
        ),
    };
    let channel = channels.sample(rng);
    Device {
        app: format!("com.example.app{}", apps.sample(rng)),
        id: uuid_text(rng),
        user: rng.gen_bool(0.6).then(|| format!("u_{:08}", rng.gen_range(0..100_000_000))),
        ip: format!("{}.{}.{}.{}", rng.gen_range(1..224), rng.gen::<u8>(), rng.gen::<u8>(), rng.gen::<u8>()),
        ua,
        platform,
        channel,
        campaign: format!("cmp_{}_{}", CHANNELS[channel], campaigns.sample(rng)),
    }
}

fn event_type(rng: &mut SmallRng) -> &'static str {
    let total: u32 = EVENT_TYPES.iter().map(|e| e.1).sum();
    let mut x = rng.gen_range(0..total);
    for (name, w) in EVENT_TYPES {
        if x < *w {
            return name;
        }
        x -= w;
    }
    EVENT_TYPES[0].0
}

/// An events batch (unsorted): devices with stable attributes, ~20 events each over a week,
/// zipf apps, channels and campaigns, revenue only on purchases, properties half null.
pub fn events_batch(rng: &mut SmallRng, rows: usize) -> Batch {
    let schema = Schema::events();
    let (apps, channels, campaigns) = (Zipf::new(8, 1.2), Zipf::new(CHANNELS.len(), 1.1), Zipf::new(50, 1.1));
    let week_us = 7 * 24 * 3600 * 1_000_000i64;
    let start = 1_700_000_000_000_000i64;
    let mut b = BatchBuilder::new(&schema, rows);
    let mut produced = 0;
    while produced < rows {
        let d = new_device(rng, &apps, &channels, &campaigns);
        let events = rng.gen_range(1..40).min(rows - produced);
        produced += events;
        let mut ts = start + rng.gen_range(0..week_us);
        let mut ip = d.ip.clone();
        for i in 0..events {
            if rng.gen_bool(0.03) {
                ip = format!("10.{}.{}.{}", rng.gen::<u8>(), rng.gen::<u8>(), rng.gen::<u8>());
            }
            let ty = if i == 0 { "session_start" } else { event_type(rng) };
            push_event(rng, &mut b, &d, ty, ts, &ip);
            ts += rng.gen_range(1_000_000..1_200_000_000);
        }
    }
    b.finish().expect("valid events batch")
}

fn push_event(rng: &mut SmallRng, b: &mut BatchBuilder, d: &Device, ty: &str, ts: i64, ip: &str) {
    let text = |s: &str| Value::Text(s.to_string());
    let opt = |s: Option<&str>| s.map_or(Value::Null, |s| Value::Text(s.to_string()));
    let with_channel = rng.gen_bool(0.3);
    let revenue = (ty == "purchase").then(|| [0.99, 1.99, 4.99, 9.99, 19.99][rng.gen_range(0..5)]);
    let currency = revenue.map(|_| ["USD", "USD", "USD", "EUR", "GBP"][rng.gen_range(0..5)]);
    let properties = rng.gen_bool(0.5).then(|| {
        format!(
            "{{\"screen\":\"{}\",\"session\":{},\"level\":{}}}",
            SCREENS[rng.gen_range(0..SCREENS.len())],
            rng.gen_range(1..500),
            rng.gen_range(1..80)
        )
    });
    let mut row = vec![Value::Null; events::COLUMN_COUNT];
    row[events::EVENT_ID] = Value::Uuid(rng.gen());
    row[events::APP_ID] = text(&d.app);
    row[events::TS] = Value::Timestamp(ts);
    row[events::EVENT_TYPE] = text(ty);
    row[events::DEVICE_ID] = text(&d.id);
    row[events::USER_ID] = opt(d.user.as_deref());
    row[events::IP] = text(ip);
    row[events::USER_AGENT] = text(&d.ua);
    row[events::PLATFORM] = text(d.platform);
    row[events::CHANNEL] = opt(with_channel.then_some(CHANNELS[d.channel]));
    row[events::CAMPAIGN] = opt(with_channel.then_some(d.campaign.as_str()));
    row[events::REVENUE] = revenue.map_or(Value::Null, Value::Float64);
    row[events::CURRENCY] = opt(currency);
    row[events::PROPERTIES] = opt(properties.as_deref());
    b.push_row(&row).expect("row matches schema");
}
