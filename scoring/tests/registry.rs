//! The model registry on disk: a registered model survives reopening, drop removes it, a bad
//! model changes nothing, a leftover temp file is ignored, a damaged file is left out and
//! reported at open.

mod common;

use common::*;
use lookback_scoring::registry::MODELS_DIR;
use lookback_scoring::{ModelError, ModelRegistry};

fn text(name: &str) -> String {
    String::from_utf8(model_text(name)).unwrap()
}

#[test]
fn models_persist_across_reopen_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, problems) = ModelRegistry::open(dir.path()).unwrap();
    assert!(problems.is_empty() && registry.list().is_empty());
    // From JSON text and from a server path.
    let info = registry.load("fraud_v1", &text("binary_logistic")).unwrap();
    assert_eq!((info.objective, info.trees, info.features), ("binary:logistic", 20, 8));
    registry.load("ltv", fixture("reg_squarederror.model.json").to_str().unwrap()).unwrap();
    let names: Vec<String> = registry.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["fraud_v1", "ltv"]);
    drop(registry);

    let (registry, problems) = ModelRegistry::open(dir.path()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(registry.list().len(), 2);
    let columns = features();
    let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let mut out = vec![0f32; refs[0].len()];
    registry.forest("fraud_v1").unwrap().predict(&refs, &mut out, 1).unwrap();
    assert_close(&out, &expected("binary_logistic"), "fraud_v1 after reopen");

    // Replacing keeps one model of the name.
    registry.load("fraud_v1", &text("reg_logistic")).unwrap();
    assert_eq!(registry.list()[0].objective, "reg:logistic");
    registry.drop_model("ltv").unwrap();
    assert!(matches!(registry.drop_model("ltv"), Err(ModelError::NotFound(_))));
    assert!(matches!(registry.forest("ltv"), Err(ModelError::NotFound(_))));
    drop(registry);
    let (registry, _) = ModelRegistry::open(dir.path()).unwrap();
    let names: Vec<String> = registry.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["fraud_v1"]);
}

#[test]
fn bad_loads_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = ModelRegistry::open(dir.path()).unwrap();
    registry.load("m", &text("binary_logistic")).unwrap();
    let truncated = &text("reg_squarederror")[..5000];
    assert!(matches!(registry.load("m", truncated), Err(ModelError::Json(_))));
    assert!(matches!(registry.load("Bad-Name", &text("binary_logistic")), Err(ModelError::BadName(_))));
    let err = registry.load("n", "/no/such/model.json").unwrap_err().to_string();
    assert!(err.contains("/no/such/model.json"), "{err}");
    assert_eq!(registry.list().len(), 1);
    assert_eq!(registry.list()[0].objective, "binary:logistic");
    let files: Vec<String> = std::fs::read_dir(dir.path().join(MODELS_DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files, ["m.xgb.json"]);
}

#[test]
fn open_skips_unfinished_and_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join(MODELS_DIR);
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("good.xgb.json"), model_text("binary_logistic")).unwrap();
    // A registration that crashed before its rename, and a file damaged on disk.
    std::fs::write(models.join("half.xgb.json.tmp"), &model_text("binary_logistic")[..100]).unwrap();
    std::fs::write(models.join("damaged.xgb.json"), &model_text("binary_logistic")[..100]).unwrap();
    let (registry, problems) = ModelRegistry::open(dir.path()).unwrap();
    let names: Vec<String> = registry.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["good"]);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].0.ends_with("damaged.xgb.json"));
    assert!(!models.join("half.xgb.json.tmp").exists());
}
