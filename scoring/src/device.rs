//! Where a batch is scored: the `scoring_device` setting and the rule `auto` follows.
//!
//! `auto` sends a batch to the GPU when one is usable, the forest fits the GPU layout, and the
//! batch has at least [`GPU_ROWS_MIN`] rows (below that, copying the features to the device
//! costs more than the CPU takes); otherwise, and if the GPU fails, the CPU scores it. `cuda`
//! insists: no GPU is an error that says why. `cpu` never touches the GPU.

use crate::cuda;
use crate::error::ModelError;
use crate::forest::Forest;

/// Rows from which `auto` prefers the GPU. An estimate, not yet measured (docs/scoring.md):
/// copying 4,096 rows of 32 features (512 KiB) and one launch take tens of microseconds over
/// PCIe, the CPU path about 2 ms per core; it is below a SQL batch (8,192 rows) so that `auto`
/// sends full scan batches to the GPU.
pub const GPU_ROWS_MIN: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DevicePreference {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DevicePreference {
    pub fn parse(text: &str) -> Option<DevicePreference> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(DevicePreference::Auto),
            "cpu" => Some(DevicePreference::Cpu),
            "cuda" | "gpu" => Some(DevicePreference::Cuda),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DevicePreference::Auto => "auto",
            DevicePreference::Cpu => "cpu",
            DevicePreference::Cuda => "cuda",
        }
    }
}

/// Where a batch ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

/// The device `preference` picks for `rows` rows of `forest`, given whether a GPU is usable.
pub fn choose(preference: DevicePreference, rows: usize, gpu_usable: bool, forest_fits_gpu: bool) -> Device {
    match preference {
        DevicePreference::Cpu => Device::Cpu,
        DevicePreference::Cuda => Device::Cuda,
        DevicePreference::Auto if gpu_usable && forest_fits_gpu && rows >= GPU_ROWS_MIN => Device::Cuda,
        DevicePreference::Auto => Device::Cpu,
    }
}

/// Scores a batch where `preference` says (see the module docs); returns where it ran.
pub fn score(forest: &Forest, columns: &[&[f32]], out: &mut [f32], preference: DevicePreference, threads: usize) -> Result<Device, ModelError> {
    let fits = forest.perfect_trees().is_some();
    let usable = preference != DevicePreference::Cpu && cuda::available();
    match choose(preference, out.len(), usable, fits) {
        Device::Cpu => forest.predict(columns, out, threads).map(|_| Device::Cpu),
        Device::Cuda => {
            let ran = cuda::gpu().and_then(|gpu| gpu.predict(forest, columns, out));
            match (ran, preference) {
                (Ok(()), _) => Ok(Device::Cuda),
                (Err(e), DevicePreference::Cuda) => Err(e),
                // auto: the CPU takes over a batch the GPU could not score.
                (Err(_), _) => forest.predict(columns, out, threads).map(|_| Device::Cpu),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_the_gpu_for_large_batches_it_can_take() {
        use DevicePreference::*;
        assert_eq!(choose(Auto, GPU_ROWS_MIN, true, true), Device::Cuda);
        assert_eq!(choose(Auto, GPU_ROWS_MIN - 1, true, true), Device::Cpu);
        assert_eq!(choose(Auto, GPU_ROWS_MIN, false, true), Device::Cpu);
        assert_eq!(choose(Auto, GPU_ROWS_MIN, true, false), Device::Cpu);
        assert_eq!(choose(Cpu, usize::MAX, true, true), Device::Cpu);
        assert_eq!(choose(Cuda, 1, false, false), Device::Cuda);
        assert_eq!(DevicePreference::parse(" CUDA "), Some(Cuda));
        assert_eq!(DevicePreference::parse("tpu"), None);
    }
}
