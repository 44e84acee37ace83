//! Scoring on a CUDA GPU.
//!
//! The driver (`libcuda`) and NVRTC are loaded at run time (cudarc's dynamic loading), and
//! only after [`gpu`] has checked that both libraries can be opened, so a machine without CUDA
//! runs everything else and reports why the GPU is unavailable instead of failing to start.
//!
//! The kernel ([`KERNEL_SOURCE`], compiled by NVRTC once per process) runs one thread per
//! row over the forest's perfect layout ([`crate::forest`]): the same packed nodes and leaves
//! the CPU reads, uploaded once per model ([`GpuForest`]), with the features copied per batch
//! column-major (`x[f * rows + row]`). Each thread adds the trees' leaves in model order in
//! `f32` and applies the link with `expf`, so GPU and CPU scores agree to float rounding.
//! Forests with a tree deeper than [`crate::forest::PERFECT_DEPTH_MAX`] are not uploaded (the
//! CPU scores them).
//!
//! [`emulate`] is the kernel's arithmetic transcribed to Rust over the same packed buffers:
//! the tests check the packing and the kernel's indexing with it on machines without a GPU.

use crate::error::ModelError;
use crate::forest::{Forest, PackedNode, PerfectTree, DEFAULT_LEFT};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::{Arc, Mutex, OnceLock};

/// Rows one kernel launch scores at most (device memory for a batch is bounded by this times
/// the feature count).
pub const LAUNCH_ROWS_MAX: usize = 1 << 22;
/// Threads per block.
const BLOCK_THREADS: u32 = 256;
const KERNEL_NAME: &str = "score_forest";

/// The kernel: one thread per row.
pub const KERNEL_SOURCE: &str = r#"
extern "C" __global__ void score_forest(
    const unsigned int* __restrict__ nodes,  // 2 words per node: feature | default_left << 31, threshold bits
    const float* __restrict__ leaves,
    const unsigned int* __restrict__ trees,  // 3 words per tree: depth, first node, first leaf
    unsigned int tree_count,
    const float* __restrict__ x,             // column-major: x[f * rows + row]
    unsigned int rows,
    float base_margin,
    int link,                                // 0 identity, 1 sigmoid, 2 exp
    float* __restrict__ out)
{
    unsigned int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    float margin = base_margin;
    for (unsigned int t = 0; t < tree_count; ++t) {
        unsigned int depth = trees[3 * t], node0 = trees[3 * t + 1], leaf0 = trees[3 * t + 2];
        unsigned int i = 0;
        for (unsigned int level = 0; level < depth; ++level) {
            unsigned int fd = nodes[2 * (node0 + i)];
            float threshold = __uint_as_float(nodes[2 * (node0 + i) + 1]);
            float v = x[(unsigned long long)(fd & 0x7fffffffu) * rows + row];
            unsigned int left = (unsigned int)(v < threshold) | ((unsigned int)isnan(v) & (fd >> 31));
            i = 2 * i + 2 - left;
        }
        margin += leaves[leaf0 + i - ((1u << depth) - 1)];
    }
    if (link == 1) margin = 1.0f / (1.0f + expf(-margin));
    else if (link == 2) margin = expf(margin);
    out[row] = margin;
}
"#;

/// A forest's perfect layout as the kernel reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLayout {
    pub nodes: Vec<u32>,
    pub leaves: Vec<f32>,
    pub trees: Vec<u32>,
    pub base_margin: f32,
    pub link: i32,
}

impl GpuLayout {
    /// The layout of `forest`, or None when a tree is too deep for the perfect layout.
    pub fn of(forest: &Forest) -> Option<GpuLayout> {
        let trees: Vec<PerfectTree> = forest.perfect_trees()?;
        let nodes = forest.nodes.iter().flat_map(|n: &PackedNode| [n.feature, n.threshold.to_bits()]).collect();
        let trees = trees.iter().flat_map(|t| [t.depth, t.first_node, t.first_leaf]).collect();
        Some(GpuLayout { nodes, leaves: forest.leaves.clone(), trees, base_margin: forest.base_margin(), link: forest.link().code() })
    }
}

/// The kernel's arithmetic on the host: scores `rows` rows of column-major `x`.
pub fn emulate(layout: &GpuLayout, x: &[f32], rows: usize) -> Vec<f32> {
    (0..rows)
        .map(|row| {
            let mut margin = layout.base_margin;
            for t in layout.trees.chunks_exact(3) {
                let (depth, node0, leaf0) = (t[0], t[1] as usize, t[2] as usize);
                let mut i = 0usize;
                for _ in 0..depth {
                    let fd = layout.nodes[2 * (node0 + i)];
                    let threshold = f32::from_bits(layout.nodes[2 * (node0 + i) + 1]);
                    let v = x[(fd & !DEFAULT_LEFT) as usize * rows + row];
                    let left = (v < threshold) as usize | (v.is_nan() as usize & (fd >> 31) as usize);
                    i = 2 * i + 2 - left;
                }
                margin += layout.leaves[leaf0 + i - ((1usize << depth) - 1)];
            }
            match layout.link {
                1 => 1.0 / (1.0 + (-margin).exp()),
                2 => margin.exp(),
                _ => margin,
            }
        })
        .collect()
}

/// The process's GPU: a context on device 0 and the compiled kernel. Launches are serialized
/// (one stream).
pub struct Gpu {
    stream: Arc<CudaStream>,
    function: CudaFunction,
    name: String,
    launch: Mutex<()>,
}

/// A forest uploaded to the GPU.
pub struct GpuForest {
    nodes: CudaSlice<u32>,
    leaves: CudaSlice<f32>,
    trees: CudaSlice<u32>,
    tree_count: u32,
    base_margin: f32,
    link: i32,
}

impl std::fmt::Debug for GpuForest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuForest({} trees)", self.tree_count)
    }
}

/// The GPU, opened on first use; Err says why there is none (no driver, no NVRTC, no device,
/// the kernel did not compile).
pub fn gpu() -> Result<&'static Gpu, ModelError> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    GPU.get_or_init(open).as_ref().map_err(|why| ModelError::Cuda(why.clone()))
}

/// Whether a GPU is usable, without an error.
pub fn available() -> bool {
    gpu().is_ok()
}

fn open() -> Result<Gpu, String> {
    // Safety: these only try to dlopen the libraries; they call nothing in them.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda) on this machine".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC (libnvrtc) on this machine: the kernel is compiled at run time".into());
    }
    let count = CudaContext::device_count().map_err(|e| format!("count devices: {e}"))?;
    if count < 1 {
        return Err("no CUDA device".into());
    }
    let context = CudaContext::new(0).map_err(|e| format!("open device 0: {e}"))?;
    let name = context.name().unwrap_or_else(|_| "CUDA device 0".into());
    let ptx = cudarc::nvrtc::compile_ptx(KERNEL_SOURCE).map_err(|e| format!("compile the scoring kernel: {e:?}"))?;
    let module = context.load_module(ptx).map_err(|e| format!("load the scoring kernel: {e}"))?;
    let function = module.load_function(KERNEL_NAME).map_err(|e| format!("find {KERNEL_NAME}: {e}"))?;
    Ok(Gpu { stream: context.default_stream(), function, name, launch: Mutex::new(()) })
}

impl Gpu {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn upload(&self, layout: &GpuLayout) -> Result<GpuForest, String> {
        let copy = |what: &str, e: cudarc::driver::DriverError| format!("upload {what}: {e}");
        Ok(GpuForest {
            nodes: self.stream.clone_htod(&layout.nodes).map_err(|e| copy("nodes", e))?,
            leaves: self.stream.clone_htod(&layout.leaves).map_err(|e| copy("leaves", e))?,
            trees: self.stream.clone_htod(&layout.trees).map_err(|e| copy("trees", e))?,
            tree_count: (layout.trees.len() / 3) as u32,
            base_margin: layout.base_margin,
            link: layout.link,
        })
    }

    /// Scores like [`Forest::predict`], on the GPU: uploads the forest on first use, then
    /// copies the features in launches of at most [`LAUNCH_ROWS_MAX`] rows.
    pub fn predict(&self, forest: &Forest, columns: &[&[f32]], out: &mut [f32]) -> Result<(), ModelError> {
        forest.check_input(columns, out.len())?;
        let uploaded = forest
            .gpu
            .get_or_init(|| match GpuLayout::of(forest) {
                Some(layout) => self.upload(&layout),
                None => Err(format!("a tree is deeper than {}: scored on the CPU only", crate::forest::PERFECT_DEPTH_MAX)),
            })
            .as_ref()
            .map_err(|e| ModelError::Cuda(e.clone()))?;
        let _serial = self.launch.lock().map_err(|_| ModelError::Cuda("launch lock poisoned".into()))?;
        let mut first = 0;
        while first < out.len() {
            let rows = (out.len() - first).min(LAUNCH_ROWS_MAX);
            let scores = self.launch(uploaded, columns, first, rows).map_err(ModelError::Cuda)?;
            out[first..first + rows].copy_from_slice(&scores);
            first += rows;
        }
        Ok(())
    }

    fn launch(&self, forest: &GpuForest, columns: &[&[f32]], first: usize, rows: usize) -> Result<Vec<f32>, String> {
        let failed = |what: &str, e: cudarc::driver::DriverError| format!("{what}: {e}");
        let mut x = self.stream.alloc_zeros::<f32>(columns.len() * rows).map_err(|e| failed("allocate features", e))?;
        for (f, column) in columns.iter().enumerate() {
            let mut view = x.slice_mut(f * rows..(f + 1) * rows);
            self.stream.memcpy_htod(&column[first..first + rows], &mut view).map_err(|e| failed("copy features", e))?;
        }
        let mut out = self.stream.alloc_zeros::<f32>(rows).map_err(|e| failed("allocate scores", e))?;
        let rows_u32 = rows as u32;
        let mut launch = self.stream.launch_builder(&self.function);
        launch
            .arg(&forest.nodes)
            .arg(&forest.leaves)
            .arg(&forest.trees)
            .arg(&forest.tree_count)
            .arg(&x)
            .arg(&rows_u32)
            .arg(&forest.base_margin)
            .arg(&forest.link)
            .arg(&mut out);
        let config = LaunchConfig { grid_dim: (rows_u32.div_ceil(BLOCK_THREADS), 1, 1), block_dim: (BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 };
        // Safety: the arguments match the kernel's parameters in order and type; every index
        // the kernel forms is inside its buffer by the layout's construction (GpuLayout::of).
        unsafe { launch.launch(config) }.map_err(|e| failed("launch", e))?;
        self.stream.clone_dtoh(&out).map_err(|e| failed("copy scores back", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xgboost::{Model, Node, Objective, Tree};

    fn model() -> Model {
        // depth 2: x0 < 0.5 ? (x1 < -1 (missing right) ? 1 : 2) : 3
        let nodes = vec![
            Node::Split { feature: 0, threshold: 0.5, default_left: true, left: 1, right: 2 },
            Node::Split { feature: 1, threshold: -1.0, default_left: false, left: 3, right: 4 },
            Node::Leaf { value: 3.0 },
            Node::Leaf { value: 1.0 },
            Node::Leaf { value: 2.0 },
        ];
        Model {
            objective: Objective::RegSquaredError,
            num_features: 2,
            base_score: 0.5,
            base_margin: 0.5,
            trees: vec![Tree { nodes: nodes.clone(), depth: 2 }, Tree { nodes, depth: 2 }],
            version: [3, 0, 0],
        }
    }

    #[test]
    fn the_kernel_arithmetic_on_the_packed_layout_equals_the_cpu() {
        let forest = Forest::compile(&model());
        let layout = GpuLayout::of(&forest).expect("shallow trees pack");
        assert_eq!(layout.trees, vec![2, 0, 0, 2, 3, 4]);
        let c0 = [0.0, 0.0, 1.0, f32::NAN, 0.5, f32::NAN];
        let c1 = [-2.0, f32::NAN, 0.0, -2.0, 0.0, f32::NAN];
        let mut cpu = vec![0f32; 6];
        forest.predict(&[&c0, &c1], &mut cpu, 1).unwrap();
        assert_eq!(cpu, vec![2.5, 4.5, 6.5, 2.5, 6.5, 4.5]);
        let x: Vec<f32> = c0.iter().chain(c1.iter()).copied().collect();
        assert_eq!(emulate(&layout, &x, 6), cpu);
    }

    #[test]
    fn no_gpu_is_an_error_that_says_why() {
        match gpu() {
            Ok(g) => eprintln!("a GPU is present ({}): the GPU tests in tests/cuda.rs run", g.name()),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("cuda: "), "{text}");
                let forest = Forest::compile(&model());
                let err = crate::device::score(&forest, &[&[0.0], &[0.0]], &mut [0.0], crate::DevicePreference::Cuda, 1).unwrap_err();
                assert!(err.to_string().contains("cuda"), "{err}");
            }
        }
    }
}
