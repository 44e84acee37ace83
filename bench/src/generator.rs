//! Deterministic, realistic synthetic marketing events for the `events` table.
//!
//! [`EventGenerator::batch`] is a pure function of `(seed, batch_index, rows)`: the same call
//! returns the same [`Batch`] on any machine, so `lookback-bench ingest` and `lookback-bench gen`
//! (CSV for ClickHouse and PostgreSQL) produce byte-identical events. Randomness comes from
//! [`SplitMix64`] (a fixed algorithm, see `rng.rs`), one independent stream per batch.
//!
//! Shape of the data (all skews are Zipf-like, most frequent first in `catalog.rs`):
//! - a fixed pool of `devices` devices (default 200k) shared by the whole dataset; device
//!   activity is Zipf-skewed (a few devices are very active). Each device has stable attributes
//!   derived from `(seed, device_index)` only: platform (45% ios, 45% android, 10% web),
//!   device_id (IDFA-style upper-case UUID on ios, GAID-style lower-case on android, a cookie id
//!   on web), an IPv4 address, a realistic user agent, a home app, and for 30% of devices a
//!   user_id carried by all of that device's events;
//! - 20 advertiser apps; an event belongs to the device's home app 70% of the time;
//! - event mix: 80% impression, 15% click, 3% install, 1.5% open, 0.5% purchase;
//! - touchpoints (impression, click) carry channel (15, Zipf) and campaign (20 per channel,
//!   Zipf) and have null properties; app events (install, open, purchase) have null
//!   channel/campaign and a small JSON object in properties;
//! - revenue and currency (85% USD) only on purchases;
//! - ts: row `n` of the run (`batch_index * rows + i`) is at `start_ts_us + n * spacing +
//!   jitter`, jitter uniform in `[0, spacing)`, so a batch covers a contiguous time window;
//! - event_id: a random UUIDv4 from the batch's stream.
//!
//! This is a load generator, not a statistical model of any real customer's traffic.

use crate::catalog::{self, APP_IDS, CHANNELS, PLATFORMS, SKUS, SKU_PRICES_USD};
use crate::rng::{derive_seed, SplitMix64, Zipf};
use lookback_common::schema::events::*;
use lookback_common::{Batch, BatchBuilder, Schema, Value};
use std::fmt::Write;

/// 2026-11-01T00:00:00Z in microseconds since the Unix epoch.
pub const DEFAULT_START_TS_US: i64 = 1_793_491_200_000_000;

/// Stream salts, so device profiles and batches never share a random stream.
const SALT_DEVICES: u64 = 0xD5_0000_0001;
const SALT_BATCHES: u64 = 0xBA_0000_0002;

/// Event types in generation order; the weights are their shares of all events.
pub const EVENT_TYPES: [&str; 5] = ["impression", "click", "install", "open", "purchase"];
pub const EVENT_TYPE_WEIGHTS: [f64; 5] = [0.80, 0.15, 0.03, 0.015, 0.005];
/// Index of the first app (non-touchpoint) event type in [`EVENT_TYPES`].
const FIRST_APP_EVENT: usize = 2;
const PURCHASE: usize = 4;
const INSTALL: usize = 2;

/// Upper bounds of the small integers inside `properties`.
const SESSION_MAX: u64 = 200;
const LEVEL_MAX: u64 = 60;

#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Timestamp of the first event of the run, µs since the Unix epoch (UTC).
    pub start_ts_us: i64,
    /// Average gap between consecutive events; each event gets `[0, spacing)` of jitter.
    pub event_spacing_us: i64,
    /// Size of the device pool shared by the whole dataset.
    pub devices: usize,
    /// Zipf exponent of device activity (0 = uniform).
    pub device_zipf_exponent: f64,
    /// Zipf exponent of app, channel, campaign and SKU popularity.
    pub popularity_zipf_exponent: f64,
    /// Campaigns per channel (15 channels).
    pub campaigns_per_channel: usize,
    /// Share of devices with a known user_id.
    pub user_id_device_share: f64,
    /// Probability an event belongs to the device's home app rather than a random app.
    pub home_app_share: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            start_ts_us: DEFAULT_START_TS_US,
            event_spacing_us: 1_000,
            devices: 200_000,
            device_zipf_exponent: 0.6,
            popularity_zipf_exponent: 1.0,
            campaigns_per_channel: 20,
            user_id_device_share: 0.3,
            home_app_share: 0.7,
        }
    }
}

/// Stable per-device attributes. The device's strings lie contiguously in the generator's
/// text arena (`device_id`, `ip`, `user_id`) so an event costs one random access there.
#[derive(Debug, Clone, Copy)]
struct DeviceProfile {
    text_start: u32,
    device_id_len: u8,
    ip_len: u8,
    /// 0 = no user_id.
    user_id_len: u8,
    platform: u8,
    user_agent: u16,
    home_app: u16,
}

impl DeviceProfile {
    /// (device_id, ip, user_id) from the arena.
    fn texts<'a>(&self, arena: &'a str) -> (&'a str, &'a str, Option<&'a str>) {
        let start = self.text_start as usize;
        let ip_start = start + usize::from(self.device_id_len);
        let user_start = ip_start + usize::from(self.ip_len);
        let user_end = user_start + usize::from(self.user_id_len);
        let user_id = (self.user_id_len > 0).then(|| &arena[user_start..user_end]);
        (
            &arena[start..ip_start],
            &arena[ip_start..user_start],
            user_id,
        )
    }
}

/// Which rows of a run go in which batch: `events` rows in batches of `batch_rows`, the last
/// batch possibly partial. Shared by `gen` and `ingest` so both produce the same events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    pub events: u64,
    pub batch_rows: usize,
}

impl RunPlan {
    pub fn new(events: u64, batch_rows: usize) -> RunPlan {
        assert!(batch_rows > 0, "batch_rows must be positive");
        RunPlan { events, batch_rows }
    }

    pub fn batches(&self) -> u64 {
        self.events.div_ceil(self.batch_rows as u64)
    }

    /// Rows in batch `batch_index` (0 past the end).
    pub fn rows_of(&self, batch_index: u64) -> usize {
        let start = batch_index.saturating_mul(self.batch_rows as u64);
        self.events
            .saturating_sub(start)
            .min(self.batch_rows as u64) as usize
    }
}

pub struct EventGenerator {
    seed: u64,
    config: GeneratorConfig,
    schema: Schema,
    devices: Vec<DeviceProfile>,
    /// device_id, ip and user_id of every device, device after device.
    device_texts: String,
    user_agents: [Vec<String>; 3],
    campaigns: Vec<Vec<String>>,
    device_choice: Zipf,
    app_choice: Zipf,
    channel_choice: Zipf,
    campaign_choice: Zipf,
    sku_choice: Zipf,
    currency_choice: Zipf,
    event_type_choice: Zipf,
}

impl EventGenerator {
    /// Builds the device pool and vocabularies (≈100 ms and ≈20 MB for 200k devices).
    pub fn new(seed: u64, config: GeneratorConfig) -> EventGenerator {
        assert!(config.devices > 0, "the device pool must not be empty");
        assert!(config.devices <= u32::MAX as usize, "device pool too large");
        assert!(
            config.event_spacing_us > 0,
            "event spacing must be positive"
        );
        assert!(
            config.campaigns_per_channel > 0,
            "need at least one campaign per channel"
        );
        let pop = config.popularity_zipf_exponent;
        let mut generator = EventGenerator {
            seed,
            schema: Schema::events(),
            devices: Vec::with_capacity(config.devices),
            device_texts: String::with_capacity(config.devices * 56),
            user_agents: catalog::user_agents(),
            campaigns: campaign_names(config.campaigns_per_channel),
            device_choice: Zipf::new(config.devices, config.device_zipf_exponent),
            app_choice: Zipf::new(APP_IDS.len(), pop),
            channel_choice: Zipf::new(CHANNELS.len(), pop),
            campaign_choice: Zipf::new(config.campaigns_per_channel, pop),
            sku_choice: Zipf::new(SKUS.len(), pop),
            currency_choice: Zipf::weighted(&catalog::CURRENCY_WEIGHTS),
            event_type_choice: Zipf::weighted(&EVENT_TYPE_WEIGHTS),
            config,
        };
        generator.build_devices();
        generator
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Batch `batch_index` of a run in batches of `rows` events.
    pub fn batch(&self, batch_index: u64, rows: usize) -> Batch {
        self.batch_prefix(batch_index, rows, rows)
    }

    /// Batch `batch_index` of `plan` (all full except possibly the last).
    pub fn plan_batch(&self, plan: &RunPlan, batch_index: u64) -> Batch {
        self.batch_prefix(batch_index, plan.batch_rows, plan.rows_of(batch_index))
    }

    /// The first `rows` events of batch `batch_index` of a run in batches of `rows_nominal`:
    /// a prefix of `batch(batch_index, rows_nominal)`.
    pub fn batch_prefix(&self, batch_index: u64, rows_nominal: usize, rows: usize) -> Batch {
        assert!(
            rows <= rows_nominal,
            "a prefix cannot be longer than its batch"
        );
        let mut rng = SplitMix64::new(derive_seed(self.seed ^ SALT_BATCHES, batch_index));
        let first_row = batch_index.saturating_mul(rows_nominal as u64);
        let mut builder = BatchBuilder::new(&self.schema, rows);
        let mut scratch = String::with_capacity(64);
        for i in 0..rows as u64 {
            self.push_event(&mut rng, first_row + i, &mut builder, &mut scratch);
        }
        builder
            .finish()
            .expect("generated events match the events schema")
    }

    fn build_devices(&mut self) {
        let platform_choice = Zipf::weighted(&catalog::PLATFORM_WEIGHTS);
        let device_seed = derive_seed(self.seed, SALT_DEVICES);
        for index in 0..self.config.devices {
            let mut rng = SplitMix64::new(derive_seed(device_seed, index as u64));
            let platform = platform_choice.sample(&mut rng);
            let user_agent = rng.below(self.user_agents[platform].len() as u64) as u16;
            let home_app = self.app_choice.sample(&mut rng) as u16;
            let has_user = rng.chance(self.config.user_id_device_share);
            let text = &mut self.device_texts;
            let start = text.len();
            write_device_id(&mut rng, platform, text);
            let ip_start = text.len();
            write_ipv4(&mut rng, text);
            let user_start = text.len();
            if has_user {
                write!(text, "user_{:010}", rng.below(10_000_000_000)).expect("write to String");
            }
            let len =
                |from: usize, to: usize| u8::try_from(to - from).expect("device text fits a u8");
            self.devices.push(DeviceProfile {
                text_start: u32::try_from(start).expect("device texts exceed 4 GiB"),
                device_id_len: len(start, ip_start),
                ip_len: len(ip_start, user_start),
                user_id_len: len(user_start, text.len()),
                platform: platform as u8,
                user_agent,
                home_app,
            });
        }
    }

    fn push_event(
        &self,
        rng: &mut SplitMix64,
        row: u64,
        b: &mut BatchBuilder,
        scratch: &mut String,
    ) {
        let mut event_id = [0u8; 16];
        rng.fill(&mut event_id);
        set_uuid_v4_bits(&mut event_id);
        let device = self.device_choice.sample(rng);
        let profile = self.devices[device];
        let app = if rng.chance(self.config.home_app_share) {
            usize::from(profile.home_app)
        } else {
            self.app_choice.sample(rng)
        };
        let spacing = self.config.event_spacing_us;
        let jitter = rng.below(spacing as u64) as i64;
        let ts = self.config.start_ts_us + (row as i64).saturating_mul(spacing) + jitter;
        let kind = self.event_type_choice.sample(rng);
        let platform = usize::from(profile.platform);

        let typed = "generated value matches the events schema";
        b.push(EVENT_ID, &Value::Uuid(event_id)).expect(typed);
        b.push_text(APP_ID, Some(APP_IDS[app]));
        b.push(TS, &Value::Timestamp(ts)).expect(typed);
        b.push_text(EVENT_TYPE, Some(EVENT_TYPES[kind]));
        let (device_id, ip, user_id) = profile.texts(&self.device_texts);
        b.push_text(DEVICE_ID, Some(device_id));
        b.push_text(USER_ID, user_id);
        b.push_text(IP, Some(ip));
        let user_agent = &self.user_agents[platform][usize::from(profile.user_agent)];
        b.push_text(USER_AGENT, Some(user_agent));
        b.push_text(PLATFORM, Some(PLATFORMS[platform]));
        if kind < FIRST_APP_EVENT {
            let channel = self.channel_choice.sample(rng);
            let campaign = self.campaign_choice.sample(rng);
            b.push_text(CHANNEL, Some(CHANNELS[channel]));
            b.push_text(CAMPAIGN, Some(&self.campaigns[channel][campaign]));
        } else {
            b.push_text(CHANNEL, None);
            b.push_text(CAMPAIGN, None);
        }
        self.push_purchase_and_properties(rng, kind, platform, b, scratch);
    }

    /// revenue, currency and properties, which depend on the event type.
    fn push_purchase_and_properties(
        &self,
        rng: &mut SplitMix64,
        kind: usize,
        platform: usize,
        b: &mut BatchBuilder,
        scratch: &mut String,
    ) {
        let typed = "generated value matches the events schema";
        scratch.clear();
        if kind == PURCHASE {
            let sku = self.sku_choice.sample(rng);
            let currency = self.currency_choice.sample(rng);
            let price = SKU_PRICES_USD[sku] * catalog::CURRENCY_PRICE_FACTOR[currency];
            let quantity = if rng.chance(0.9) { 1 } else { 2 };
            let revenue = (price * quantity as f64 * 100.0).round() / 100.0;
            b.push(REVENUE, &Value::Float64(revenue)).expect(typed);
            b.push_text(CURRENCY, Some(catalog::CURRENCIES[currency]));
            let level = 1 + rng.below(LEVEL_MAX);
            write!(
                scratch,
                r#"{{"sku":"{}","quantity":{quantity},"level":{level}}}"#,
                SKUS[sku]
            )
            .expect("write to String");
        } else {
            b.push(REVENUE, &Value::Null).expect(typed);
            b.push_text(CURRENCY, None);
            if kind == INSTALL {
                let store = ["app_store", "google_play", "web"][platform];
                let (minor, patch) = (rng.below(12), rng.below(10));
                write!(
                    scratch,
                    r#"{{"store":"{store}","app_version":"3.{minor}.{patch}"}}"#
                )
                .expect("write to String");
            } else if kind >= FIRST_APP_EVENT {
                let (session, level) = (1 + rng.below(SESSION_MAX), 1 + rng.below(LEVEL_MAX));
                write!(scratch, r#"{{"session":{session},"level":{level}}}"#)
                    .expect("write to String");
            }
        }
        b.push_text(
            PROPERTIES,
            (!scratch.is_empty()).then_some(scratch.as_str()),
        );
    }
}

/// Campaign names per channel: `{channel}_{geo}_{objective}_{n:02}`; fixed across seeds.
fn campaign_names(per_channel: usize) -> Vec<Vec<String>> {
    use catalog::{CAMPAIGN_GEOS as GEOS, CAMPAIGN_OBJECTIVES as OBJECTIVES};
    (0..CHANNELS.len())
        .map(|c| {
            (0..per_channel)
                .map(|n| {
                    let geo = GEOS[n % GEOS.len()];
                    let objective = OBJECTIVES[(n / GEOS.len() + c) % OBJECTIVES.len()];
                    format!("{}_{geo}_{objective}_{n:02}", CHANNELS[c])
                })
                .collect()
        })
        .collect()
}

/// Sets the RFC 9562 version (4) and variant (10xx) bits.
pub fn set_uuid_v4_bits(u: &mut [u8; 16]) {
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
}

/// ios: IDFA (upper-case UUID); android: GAID (lower-case UUID); web: a first-party cookie id.
fn write_device_id(rng: &mut SplitMix64, platform: usize, out: &mut String) {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    set_uuid_v4_bits(&mut bytes);
    let hex = |b: u8, upper: bool| {
        let digits = if upper {
            b"0123456789ABCDEF"
        } else {
            b"0123456789abcdef"
        };
        [
            char::from(digits[usize::from(b >> 4)]),
            char::from(digits[usize::from(b & 0x0f)]),
        ]
    };
    if platform == 2 {
        out.push_str("wc.");
        bytes[..12]
            .iter()
            .flat_map(|&b| hex(b, false))
            .for_each(|c| out.push(c));
        return;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.extend(hex(b, platform == 0));
    }
}

/// A public-looking IPv4 address (skips 0, 10, 100, 127, 169, 172, 192 and multicast+).
fn write_ipv4(rng: &mut SplitMix64, out: &mut String) {
    const RESERVED_FIRST_OCTETS: [u64; 7] = [0, 10, 100, 127, 169, 172, 192];
    let mut first = 1 + rng.below(223);
    while RESERVED_FIRST_OCTETS.contains(&first) {
        first += 1;
    }
    let (b, c, d) = (rng.below(256), rng.below(256), 1 + rng.below(254));
    write!(out, "{first}.{b}.{c}.{d}").expect("write to String");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic with the error
mod tests;
