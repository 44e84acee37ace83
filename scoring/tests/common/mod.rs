//! The fixtures of `tests/fixtures` (made by `make_fixtures.py` with xgboost).

#![allow(dead_code)]

use std::path::PathBuf;

pub const MODELS: [&str; 5] = ["binary_logistic", "reg_squarederror", "reg_logistic", "count_poisson", "deep_squarederror"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn model_text(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("{name}.model.json"))).expect("fixture model")
}

/// The test rows, column-major (`nan` is a missing value).
pub fn features() -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(fixture("features.csv")).expect("fixture features");
    let rows: Vec<Vec<f32>> = text.lines().map(|l| l.split(',').map(|v| v.parse::<f32>().expect("a float")).collect()).collect();
    let width = rows[0].len();
    (0..width).map(|f| rows.iter().map(|r| r[f]).collect()).collect()
}

pub fn expected(name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.txt"))).expect("fixture predictions");
    text.lines().map(|l| l.parse::<f32>().expect("a float")).collect()
}

/// Asserts `got` equals `want` within 1e-6 relative (absolute near zero).
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (r, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tolerance = 1e-6 * w.abs().max(1.0);
        assert!((g - w).abs() <= tolerance, "{what} row {r}: {g} vs xgboost's {w}");
    }
}
