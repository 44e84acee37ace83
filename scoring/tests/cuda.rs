//! The CUDA path on a machine with a GPU: scores equal the CPU's (and so xgboost's) on the
//! fixtures and on a large random batch, across launch boundaries. Without a GPU every test
//! here says so and returns (the kernel's arithmetic is checked on the CPU in the unit tests).

mod common;

use common::*;
use lookback_scoring::cuda;
use lookback_scoring::{DevicePreference, Forest, Model};

fn gpu_or_skip(test: &str) -> Option<&'static cuda::Gpu> {
    match cuda::gpu() {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            eprintln!("{test}: skipped, no usable GPU here ({e})");
            None
        }
    }
}

#[test]
fn gpu_scores_equal_xgboost_on_the_fixtures() {
    let Some(gpu) = gpu_or_skip("gpu_scores_equal_xgboost_on_the_fixtures") else { return };
    let columns = features();
    let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    for name in MODELS {
        let forest = Forest::compile(&Model::from_json(&model_text(name)).unwrap());
        let mut out = vec![0f32; refs[0].len()];
        match gpu.predict(&forest, &refs, &mut out) {
            Ok(()) => assert_close(&out, &expected(name), &format!("{name} on {}", gpu.name())),
            // Deeper than the perfect layout: the CPU's, by design.
            Err(e) => assert!(name.starts_with("deep") && e.to_string().contains("deeper"), "{name}: {e}"),
        }
    }
}

#[test]
fn gpu_equals_cpu_on_a_large_batch() {
    let Some(gpu) = gpu_or_skip("gpu_equals_cpu_on_a_large_batch") else { return };
    let forest = Forest::compile(&Model::from_json(&model_text("binary_logistic")).unwrap());
    let rows = cuda::LAUNCH_ROWS_MAX + 12_345;
    let base = features();
    let columns: Vec<Vec<f32>> = base.iter().map(|c| (0..rows).map(|r| c[r % c.len()] + (r / c.len()) as f32 * 1e-3).collect()).collect();
    let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let (mut on_gpu, mut on_cpu) = (vec![0f32; rows], vec![0f32; rows]);
    gpu.predict(&forest, &refs, &mut on_gpu).unwrap();
    forest.predict(&refs, &mut on_cpu, 2).unwrap();
    assert_close(&on_gpu, &on_cpu, "GPU vs CPU");
    let ran = lookback_scoring::device::score(&forest, &refs, &mut on_gpu, DevicePreference::Auto, 2).unwrap();
    assert_eq!(ran, lookback_scoring::Device::Cuda);
}
