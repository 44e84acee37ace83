//! Generator properties: determinism, prefixes, event mix, per-device stability, null shape.

use super::*;
use std::collections::HashMap;

fn small_config() -> GeneratorConfig {
    GeneratorConfig {
        devices: 5_000,
        ..GeneratorConfig::default()
    }
}

fn text(batch: &Batch, col: usize, row: usize) -> Option<&str> {
    batch.column(col).text(row)
}

#[test]
fn same_seed_same_batch_and_different_seed_or_index_differ() {
    let a = EventGenerator::new(42, small_config());
    let b = EventGenerator::new(42, small_config());
    assert_eq!(a.batch(7, 500), b.batch(7, 500));
    assert_ne!(a.batch(7, 500), a.batch(8, 500));
    let c = EventGenerator::new(43, small_config());
    assert_ne!(a.batch(7, 500), c.batch(7, 500));
}

#[test]
fn plan_batches_are_prefixes_and_cover_the_run() {
    let g = EventGenerator::new(1, small_config());
    let plan = RunPlan::new(2_500, 1_000);
    assert_eq!(plan.batches(), 3);
    let last = g.plan_batch(&plan, 2);
    assert_eq!(last.rows(), 500);
    let full = g.batch(2, 1_000);
    let first: Vec<u32> = (0..500).collect();
    assert_eq!(last, full.take(&first));
    assert_eq!(plan.rows_of(3), 0);
}

#[test]
fn timestamps_advance_about_one_ms_per_event() {
    let g = EventGenerator::new(5, small_config());
    let rows = 1_000;
    for batch_index in [0u64, 3] {
        let b = g.batch(batch_index, rows);
        let ts = match &b.column(TS).values {
            lookback_common::ColumnValues::Timestamp(v) => v.clone(),
            other => panic!("ts column is {:?}", other.column_type()),
        };
        let window_start = DEFAULT_START_TS_US + (batch_index as i64) * rows as i64 * 1_000;
        assert!(ts
            .iter()
            .all(|&t| t >= window_start && t < window_start + rows as i64 * 1_000));
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "jitter stays inside each event's slot"
        );
    }
}

#[test]
fn event_mix_is_impressions_then_clicks_then_installs_then_opens_then_purchases() {
    let g = EventGenerator::new(9, small_config());
    let b = g.batch(0, 200_000);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for row in 0..b.rows() {
        *counts
            .entry(text(&b, EVENT_TYPE, row).expect("event_type is set"))
            .or_default() += 1;
    }
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert!(n("impression") > n("click"), "{counts:?}");
    assert!(n("click") > n("install"), "{counts:?}");
    assert!(n("install") > n("open"), "{counts:?}");
    assert!(n("open") > n("purchase") && n("purchase") > 0, "{counts:?}");
    let impression_share = n("impression") as f64 / b.rows() as f64;
    assert!(
        (0.78..0.82).contains(&impression_share),
        "{impression_share}"
    );
}

#[test]
fn device_attributes_are_stable_per_device() {
    let g = EventGenerator::new(11, small_config());
    let mut seen: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for batch_index in 0..3 {
        let b = g.batch(batch_index, 20_000);
        for row in 0..b.rows() {
            let device = text(&b, DEVICE_ID, row)
                .expect("device_id is set")
                .to_string();
            let attrs: Vec<Option<String>> = [USER_ID, IP, USER_AGENT, PLATFORM]
                .iter()
                .map(|&c| text(&b, c, row).map(str::to_string))
                .collect();
            let first = seen.entry(device.clone()).or_insert_with(|| attrs.clone());
            assert_eq!(*first, attrs, "device {device} changed attributes");
        }
    }
    assert!(
        seen.len() > 1_000,
        "events spread over many devices: {}",
        seen.len()
    );
}

#[test]
fn device_activity_is_skewed_and_user_ids_cover_about_30_percent() {
    let g = EventGenerator::new(3, GeneratorConfig::default());
    let b = g.batch(0, 200_000);
    let mut per_device: HashMap<&str, usize> = HashMap::new();
    let mut with_user = 0;
    for row in 0..b.rows() {
        *per_device
            .entry(text(&b, DEVICE_ID, row).expect("device_id"))
            .or_default() += 1;
        with_user += usize::from(text(&b, USER_ID, row).is_some());
    }
    let max = per_device.values().max().copied().unwrap_or(0);
    let mean = b.rows() as f64 / per_device.len() as f64;
    assert!(max as f64 > 20.0 * mean, "max {max} vs mean {mean}");
    let share = with_user as f64 / b.rows() as f64;
    assert!((0.2..0.4).contains(&share), "user_id share {share}");
}

#[test]
fn touchpoints_and_app_events_have_the_right_nulls() {
    let g = EventGenerator::new(13, small_config());
    let b = g.batch(0, 50_000);
    for row in 0..b.rows() {
        let kind = text(&b, EVENT_TYPE, row).expect("event_type");
        let touchpoint = matches!(kind, "impression" | "click");
        assert_eq!(
            text(&b, CHANNEL, row).is_some(),
            touchpoint,
            "row {row} {kind}"
        );
        assert_eq!(
            text(&b, CAMPAIGN, row).is_some(),
            touchpoint,
            "row {row} {kind}"
        );
        assert_eq!(
            text(&b, PROPERTIES, row).is_none(),
            touchpoint,
            "row {row} {kind}"
        );
        let purchase = kind == "purchase";
        assert_eq!(
            !b.column(REVENUE).is_null(row),
            purchase,
            "row {row} {kind}"
        );
        assert_eq!(
            text(&b, CURRENCY, row).is_some(),
            purchase,
            "row {row} {kind}"
        );
        if let Some(json) = text(&b, PROPERTIES, row) {
            serde_json::from_str::<serde_json::Value>(json).expect("properties is JSON");
        }
        if let Some(campaign) = text(&b, CAMPAIGN, row) {
            let channel = text(&b, CHANNEL, row).expect("channel");
            assert!(
                campaign.starts_with(channel),
                "campaign {campaign} of channel {channel}"
            );
        }
    }
}

#[test]
fn event_ids_are_uuid_v4_and_unique() {
    let g = EventGenerator::new(17, small_config());
    let mut ids = std::collections::HashSet::new();
    for batch_index in 0..4 {
        let b = g.batch(batch_index, 10_000);
        for row in 0..b.rows() {
            let lookback_common::Value::Uuid(u) = b.column(EVENT_ID).value(row) else {
                panic!("event_id is not a uuid");
            };
            assert_eq!(u[6] >> 4, 4, "version nibble");
            assert_eq!(u[8] >> 6, 0b10, "variant bits");
            assert!(ids.insert(u), "duplicate event_id");
        }
    }
}

