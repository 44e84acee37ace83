//! Lookback's scores against xgboost's own `predict` on the committed fixture models (both
//! objectives and the two others, missing values, a forest deeper than the perfect layout),
//! and bad model files refused with a message that says what is wrong.

mod common;

use common::*;
use lookback_scoring::{Forest, Model, ModelError};

#[test]
fn scores_equal_xgboost_predict() {
    let columns = features();
    let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let missing = columns.iter().flatten().filter(|v| v.is_nan()).count();
    assert!(missing > 100, "the fixtures hold missing values ({missing})");
    for name in MODELS {
        let model = Model::from_json(&model_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let forest = Forest::compile(&model);
        for threads in [1, 2] {
            let mut out = vec![0f32; refs[0].len()];
            forest.predict(&refs, &mut out, threads).unwrap();
            assert_close(&out, &expected(name), name);
        }
    }
}

#[test]
fn the_fixtures_cover_both_layouts_and_every_objective() {
    let depths: Vec<usize> = MODELS.iter().map(|n| Model::from_json(&model_text(n)).unwrap().depth()).collect();
    assert!(depths.iter().any(|&d| d <= lookback_scoring::forest::PERFECT_DEPTH_MAX));
    assert!(depths.iter().any(|&d| d > lookback_scoring::forest::PERFECT_DEPTH_MAX), "{depths:?}");
    let objectives: Vec<&str> = MODELS.iter().map(|n| Model::from_json(&model_text(n)).unwrap().objective.name()).collect();
    for o in ["binary:logistic", "reg:squarederror", "reg:logistic", "count:poisson"] {
        assert!(objectives.contains(&o), "{o}");
    }
}

#[test]
fn truncated_and_damaged_model_files_are_refused() {
    let text = model_text("binary_logistic");
    // Every truncation is invalid JSON, never a smaller model.
    for cut in (0..text.len()).step_by(97) {
        match Model::from_json(&text[..cut]) {
            Err(ModelError::Json(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let as_text = String::from_utf8(text.clone()).unwrap();
    for (from, to, says) in [
        ("\"version\":[3", "\"version\":[0", "version 0."),
        ("\"gbtree\"", "\"dart\"", "booster dart"),
        ("\"objective\":{\"name\":\"binary:logistic\"", "\"objective\":{\"name\":\"rank:pairwise\"", "objective rank:pairwise"),
        ("\"left_children\":[1,", "\"left_children\":[100000,", "not a node of this tree"),
    ] {
        let damaged = as_text.replacen(from, to, 1);
        assert_ne!(damaged, as_text, "{from} not in the fixture");
        let err = Model::from_json(damaged.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(says), "{err:?} should say {says:?}");
    }
    assert!(Model::from_json(b"\xff\xfe").unwrap_err().to_string().contains("not valid JSON"));
    assert!(Model::from_json(b"[1, 2]").unwrap_err().to_string().contains("version"));
}
