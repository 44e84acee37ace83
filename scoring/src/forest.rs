//! A model compiled for batch evaluation, and the CPU scorer.
//!
//! Layout: a tree of depth `d <= PERFECT_DEPTH_MAX` is stored as a *perfect* binary tree of
//! depth `d`: internal node `i` has children `2i + 1` and `2i + 2`, and leaf `j` is node
//! `2^d − 1 + j`. A leaf above depth `d` is padded with internal nodes whose whole subtree
//! carries its value (so either direction reaches it). Evaluation is then a fixed number of
//! steps with no branch on the tree's shape: `i = 2i + 2 − go_left`, where
//! `go_left = x < threshold, or x is NaN and the node's missing values go left`. A node is 8
//! bytes (feature index with the default-left flag in its top bit, threshold); a depth-6 tree
//! is 504 bytes of nodes and 256 of leaves, so a forest of 100 stays in L2.
//! Deeper trees keep their own nodes and are walked node by node (the general path).
//!
//! Scoring: rows go in blocks of [`BLOCK_ROWS`]; a block's features are copied column-major
//! into a small buffer that stays in L1, then every tree is applied to the whole block level by
//! level (the independent rows of a block overlap their memory latencies), adding each tree's
//! leaf to the row's margin in `f32`, tree by tree, as XGBoost does. Large batches are split
//! over threads.

use crate::error::ModelError;
use crate::xgboost::{Link, Model, Node, Objective};

/// Trees at most this deep take the perfect layout.
pub const PERFECT_DEPTH_MAX: usize = 10;
/// Rows scored together.
pub const BLOCK_ROWS: usize = 64;
/// Rows a thread takes at least before a batch is split over threads.
pub const THREAD_ROWS_MIN: usize = 16_384;
/// Threads one batch uses at most.
pub const THREADS_MAX: usize = 64;
/// The default-left flag in [`PackedNode::feature`].
pub(crate) const DEFAULT_LEFT: u32 = 1 << 31;

/// A node of the perfect layout.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct PackedNode {
    /// Feature index, with [`DEFAULT_LEFT`] set when missing values go left.
    pub feature: u32,
    pub threshold: f32,
}

const _: () = assert!(std::mem::size_of::<PackedNode>() == 8);

/// A tree in the perfect layout: its nodes are `nodes[first_node .. first_node + 2^depth − 1]`
/// and its leaves `leaves[first_leaf .. first_leaf + 2^depth]` of the forest.
#[derive(Clone, Copy, Debug)]
pub struct PerfectTree {
    pub depth: u32,
    pub first_node: u32,
    pub first_leaf: u32,
}

/// A tree deeper than [`PERFECT_DEPTH_MAX`], as written.
#[derive(Clone, Debug)]
struct GeneralTree {
    nodes: Vec<Node>,
}

/// Where a tree is evaluated from.
#[derive(Clone, Debug)]
enum Compiled {
    Perfect(PerfectTree),
    General(GeneralTree),
}

/// A model ready to score.
#[derive(Debug)]
pub struct Forest {
    objective: Objective,
    base_margin: f32,
    num_features: usize,
    /// In model order (the order leaf values are added in).
    trees: Vec<Compiled>,
    pub(crate) nodes: Vec<PackedNode>,
    pub(crate) leaves: Vec<f32>,
    /// Uploaded on first GPU use.
    pub(crate) gpu: std::sync::OnceLock<Result<crate::cuda::GpuForest, String>>,
}

impl Forest {
    pub fn compile(model: &Model) -> Forest {
        let mut forest = Forest {
            objective: model.objective,
            base_margin: model.base_margin,
            num_features: model.num_features,
            trees: Vec::with_capacity(model.trees.len()),
            nodes: Vec::new(),
            leaves: Vec::new(),
            gpu: std::sync::OnceLock::new(),
        };
        for tree in &model.trees {
            let compiled = match tree.depth <= PERFECT_DEPTH_MAX {
                true => Compiled::Perfect(forest.pack(&tree.nodes, tree.depth)),
                false => Compiled::General(GeneralTree { nodes: tree.nodes.clone() }),
            };
            forest.trees.push(compiled);
        }
        // The evaluators index a block by these features without checking: one check here.
        assert!(forest.nodes.iter().all(|n| ((n.feature & !DEFAULT_LEFT) as usize) < forest.num_features.max(1)));
        forest
    }

    pub fn num_features(&self) -> usize {
        self.num_features
    }

    pub fn objective(&self) -> Objective {
        self.objective
    }

    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    pub(crate) fn base_margin(&self) -> f32 {
        self.base_margin
    }

    pub(crate) fn link(&self) -> Link {
        self.objective.link()
    }

    /// The perfect-layout trees, in order, or None when some tree is deeper (the GPU kernel
    /// evaluates the perfect layout only).
    pub(crate) fn perfect_trees(&self) -> Option<Vec<PerfectTree>> {
        self.trees
            .iter()
            .map(|t| match t {
                Compiled::Perfect(p) => Some(*p),
                Compiled::General(_) => None,
            })
            .collect()
    }

    /// Appends `nodes` (a tree of `depth`) in the perfect layout.
    fn pack(&mut self, nodes: &[Node], depth: usize) -> PerfectTree {
        let tree = PerfectTree { depth: depth as u32, first_node: self.nodes.len() as u32, first_leaf: self.leaves.len() as u32 };
        let internal = (1usize << depth) - 1;
        self.nodes.resize(self.nodes.len() + internal, PackedNode { feature: DEFAULT_LEFT, threshold: f32::INFINITY });
        self.leaves.resize(self.leaves.len() + internal + 1, 0.0);
        let (node_base, leaf_base) = (tree.first_node as usize, tree.first_leaf as usize);
        // (node in `nodes`, position in the perfect tree, level)
        let mut stack = vec![(0u32, 0usize, 0usize)];
        while let Some((i, position, level)) = stack.pop() {
            match nodes[i as usize] {
                Node::Split { feature, threshold, default_left, left, right } => {
                    assert!(level < depth, "a split at the tree's depth");
                    let flag = if default_left { DEFAULT_LEFT } else { 0 };
                    self.nodes[node_base + position] = PackedNode { feature: feature | flag, threshold };
                    stack.push((left, 2 * position + 1, level + 1));
                    stack.push((right, 2 * position + 2, level + 1));
                }
                Node::Leaf { value } => {
                    // Every leaf below `position` at depth `depth` carries `value`; the padding
                    // nodes above them keep their default (any direction is right).
                    let span = 1usize << (depth - level);
                    let first = ((position + 1) << (depth - level)) - 1 - internal;
                    self.leaves[leaf_base + first..leaf_base + first + span].fill(value);
                }
            }
        }
        tree
    }

    /// Scores `rows` rows whose features are `columns` (column-major: `columns[f][row]`, NaN
    /// for a missing value) into `out`, on up to `threads` threads.
    pub fn predict(&self, columns: &[&[f32]], out: &mut [f32], threads: usize) -> Result<(), ModelError> {
        self.check_input(columns, out.len())?;
        let rows = out.len();
        let threads = threads.clamp(1, THREADS_MAX).min(rows.div_ceil(THREAD_ROWS_MIN)).max(1);
        if threads == 1 {
            self.predict_range(columns, 0, out);
            return Ok(());
        }
        let per_thread = rows.div_ceil(threads).next_multiple_of(BLOCK_ROWS);
        std::thread::scope(|scope| {
            for (i, part) in out.chunks_mut(per_thread).enumerate() {
                scope.spawn(move || self.predict_range(columns, i * per_thread, part));
            }
        });
        Ok(())
    }

    pub(crate) fn check_input(&self, columns: &[&[f32]], rows: usize) -> Result<(), ModelError> {
        if columns.len() != self.num_features {
            return Err(ModelError::BadInput(format!("the model takes {} features, got {}", self.num_features, columns.len())));
        }
        match columns.iter().position(|c| c.len() != rows) {
            Some(f) => Err(ModelError::BadInput(format!("feature {f} has {} values for {rows} rows", columns[f].len()))),
            None => Ok(()),
        }
    }

    /// Scores rows `first .. first + out.len()` into `out`.
    fn predict_range(&self, columns: &[&[f32]], first: usize, out: &mut [f32]) {
        let mut block = vec![0f32; self.num_features * BLOCK_ROWS];
        let mut margins = [0f32; BLOCK_ROWS];
        let mut positions = [0u32; BLOCK_ROWS];
        for (b, out) in out.chunks_mut(BLOCK_ROWS).enumerate() {
            let (start, n) = (first + b * BLOCK_ROWS, out.len());
            for (f, column) in columns.iter().enumerate() {
                block[f * BLOCK_ROWS..f * BLOCK_ROWS + n].copy_from_slice(&column[start..start + n]);
            }
            let margins = &mut margins[..n];
            margins.fill(self.base_margin);
            for tree in &self.trees {
                match tree {
                    Compiled::Perfect(t) => self.perfect_block(t, &block, &mut positions[..n], margins),
                    Compiled::General(t) => general_block(t, &block, margins),
                }
            }
            let link = self.link();
            for (o, &m) in out.iter_mut().zip(margins.iter()) {
                *o = link.apply(m);
            }
        }
    }

    /// Adds tree `t`'s leaf to each row's margin, the rows' features in `block`.
    fn perfect_block(&self, t: &PerfectTree, block: &[f32], positions: &mut [u32], margins: &mut [f32]) {
        let internal = (1usize << t.depth) - 1;
        let nodes = &self.nodes[t.first_node as usize..t.first_node as usize + internal];
        let leaves = &self.leaves[t.first_leaf as usize..t.first_leaf as usize + internal + 1];
        assert!(block.len() >= self.num_features * BLOCK_ROWS && margins.len() <= BLOCK_ROWS && positions.len() == margins.len());
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // Safety: the CPU has AVX2 (checked above); the layout invariants the function
            // needs are those of `perfect_rows` (asserted in `compile` and above).
            done = unsafe { simd::perfect_rows_avx2(nodes, leaves, t.depth, block, margins) };
        }
        perfect_rows(nodes, leaves, t.depth, block, &mut positions[done..], &mut margins[done..], done);
    }
}

/// The scalar evaluation of one perfect tree over rows `first ..` of a block (`margins[i]` is
/// row `first + i`). Every position at level `l` is below `2^l − 1`, so it indexes `nodes`;
/// every node's feature is below the forest's feature count (checked in [`Forest::compile`]),
/// so `feature * BLOCK_ROWS + row` indexes `block`.
fn perfect_rows(nodes: &[PackedNode], leaves: &[f32], depth: u32, block: &[f32], positions: &mut [u32], margins: &mut [f32], first: usize) {
    let internal = nodes.len();
    positions.fill(0);
    for _ in 0..depth {
        for (r, position) in positions.iter_mut().enumerate() {
            let node = nodes[*position as usize];
            let x = block[(node.feature & !DEFAULT_LEFT) as usize * BLOCK_ROWS + first + r];
            let left = (x < node.threshold) as u32 | (x.is_nan() as u32 & (node.feature >> 31));
            *position = 2 * *position + 2 - left;
        }
    }
    for (margin, &position) in margins.iter_mut().zip(positions.iter()) {
        *margin += leaves[position as usize - internal];
    }
}

/// The perfect-tree step with AVX2 gathers: eight rows per vector, the block's eight vectors
/// advanced level by level together (independent gathers overlap their latencies). Same
/// arithmetic as [`perfect_rows`], margins added in the same order: the same bits.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{PackedNode, BLOCK_ROWS};
    use std::arch::x86_64::*;

    const LANES: usize = 8;
    const GROUPS: usize = BLOCK_ROWS / LANES;
    const _: () = assert!(BLOCK_ROWS % LANES == 0 && BLOCK_ROWS == 1 << 6);

    /// Scores the first `margins.len() / 8 * 8` rows; returns how many.
    ///
    /// # Safety
    /// The CPU supports AVX2; `nodes` is a perfect tree of `depth` levels (`2^depth − 1`
    /// nodes, each feature below the block's feature count) with `2^depth` leaves, and
    /// `block` holds `BLOCK_ROWS` rows of every feature.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn perfect_rows_avx2(nodes: &[PackedNode], leaves: &[f32], depth: u32, block: &[f32], margins: &mut [f32]) -> usize {
        let groups = margins.len() / LANES;
        let internal = nodes.len() as i32;
        debug_assert_eq!(leaves.len(), nodes.len() + 1);
        let words = nodes.as_ptr() as *const i32; // feature at 2i, threshold bits at 2i + 1
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let feature_mask = _mm256_set1_epi32(0x7fff_ffff);
        let two = _mm256_set1_epi32(2);
        // The top three levels use nodes 0..7 only: they sit in two registers (features,
        // thresholds) and are looked up with a permute instead of two gathers.
        let (mut top_features, mut top_thresholds) = ([0i32; 8], [0f32; 8]);
        for (i, node) in nodes.iter().take(8).enumerate() {
            top_features[i] = node.feature as i32;
            top_thresholds[i] = node.threshold;
        }
        let top_features = unsafe { _mm256_loadu_si256(top_features.as_ptr() as *const __m256i) };
        let top_thresholds = unsafe { _mm256_loadu_ps(top_thresholds.as_ptr()) };
        let root_feature = nodes.first().map_or(0, |n| (n.feature & 0x7fff_ffff) as usize);
        let mut positions = [_mm256_setzero_si256(); GROUPS];
        for level in 0..depth {
            for (g, position) in positions.iter_mut().enumerate().take(groups) {
                let word = _mm256_slli_epi32::<1>(*position);
                // Safety (all gathers): indexes within the buffers by the invariants above.
                let (feature, threshold) = match level < 3 {
                    true => (
                        _mm256_permutevar8x32_epi32(top_features, *position),
                        _mm256_permutevar8x32_ps(top_thresholds, *position),
                    ),
                    false => unsafe {
                        (_mm256_i32gather_epi32::<4>(words, word), _mm256_i32gather_ps::<4>(words.add(1) as *const f32, word))
                    },
                };
                let rows = _mm256_add_epi32(_mm256_set1_epi32((g * LANES) as i32), lane);
                let at = _mm256_add_epi32(_mm256_slli_epi32::<6>(_mm256_and_si256(feature, feature_mask)), rows);
                let x = match level {
                    // Every row is at the root: one feature, eight consecutive rows.
                    0 => unsafe { _mm256_loadu_ps(block.as_ptr().add(root_feature * BLOCK_ROWS + g * LANES)) },
                    _ => unsafe { _mm256_i32gather_ps::<4>(block.as_ptr(), at) },
                };
                let below = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(x, threshold));
                let missing = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
                // All ones (−1) where the row goes left: 2i + 2 − 1.
                let left = _mm256_or_si256(below, _mm256_and_si256(missing, _mm256_srai_epi32::<31>(feature)));
                *position = _mm256_add_epi32(_mm256_add_epi32(word, two), left);
            }
        }
        let first_leaf = _mm256_set1_epi32(internal);
        for (g, position) in positions.iter().enumerate().take(groups) {
            let leaf = unsafe { _mm256_i32gather_ps::<4>(leaves.as_ptr(), _mm256_sub_epi32(*position, first_leaf)) };
            let at = unsafe { margins.as_mut_ptr().add(g * LANES) };
            unsafe { _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), leaf)) };
        }
        groups * LANES
    }
}

/// Adds a deep tree's leaf to each row's margin, walking its nodes.
fn general_block(t: &GeneralTree, block: &[f32], margins: &mut [f32]) {
    for (r, margin) in margins.iter_mut().enumerate() {
        let mut i = 0usize;
        loop {
            match t.nodes[i] {
                Node::Leaf { value } => {
                    *margin += value;
                    break;
                }
                Node::Split { feature, threshold, default_left, left, right } => {
                    let x = block[feature as usize * BLOCK_ROWS + r];
                    let go_left = if x.is_nan() { default_left } else { x < threshold };
                    i = if go_left { left } else { right } as usize;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xgboost::Tree;

    /// The reference: each row walks each tree node by node.
    fn walk(model: &Model, row: &[f32]) -> f32 {
        let mut margin = model.base_margin;
        for tree in &model.trees {
            let mut i = 0usize;
            loop {
                match tree.nodes[i] {
                    Node::Leaf { value } => {
                        margin += value;
                        break;
                    }
                    Node::Split { feature, threshold, default_left, left, right } => {
                        let x = row[feature as usize];
                        let go_left = if x.is_nan() { default_left } else { x < threshold };
                        i = if go_left { left } else { right } as usize;
                    }
                }
            }
        }
        model.objective.link().apply(margin)
    }

    /// A random tree of at most `depth` levels over `features` features (an unbalanced one:
    /// leaves at every level), from a simple LCG.
    fn random_tree(seed: &mut u64, depth: usize, features: u32) -> Tree {
        let mut next = move || {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) as u32
        };
        let mut nodes = vec![Node::Leaf { value: 0.0 }];
        let mut open = vec![(0usize, 0usize)];
        let mut deepest = 0;
        while let Some((i, level)) = open.pop() {
            deepest = deepest.max(level);
            if level == depth || (level > 0 && next() % 4 == 0) {
                nodes[i] = Node::Leaf { value: (next() % 2000) as f32 / 1000.0 - 1.0 };
                continue;
            }
            let (left, right) = (nodes.len() as u32, nodes.len() as u32 + 1);
            nodes.push(Node::Leaf { value: 0.0 });
            nodes.push(Node::Leaf { value: 0.0 });
            // Thresholds on a coarse grid, so that rows hit them exactly.
            let threshold = (next() % 9) as f32 * 0.25 - 1.0;
            nodes[i] = Node::Split { feature: next() % features, threshold, default_left: next() % 2 == 0, left, right };
            open.push((left as usize, level + 1));
            open.push((right as usize, level + 1));
        }
        Tree { nodes, depth: deepest }
    }

    fn random_model(trees: usize, depth: usize, features: u32, objective: Objective) -> Model {
        let mut seed = 42;
        let trees = (0..trees).map(|_| random_tree(&mut seed, depth, features)).collect();
        Model { objective, num_features: features as usize, base_score: 0.5, base_margin: 0.25, trees, version: [3, 0, 0] }
    }

    fn random_rows(rows: usize, features: usize) -> Vec<Vec<f32>> {
        let mut seed = 7u64;
        (0..features)
            .map(|_| {
                (0..rows)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        match (seed >> 33) % 10 {
                            0 => f32::NAN,
                            v => (v as f32 - 5.0) * 0.25,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn perfect_and_general_layouts_score_as_the_trees_say() {
        for (depth, objective) in [(1, Objective::RegSquaredError), (6, Objective::BinaryLogistic), (10, Objective::CountPoisson), (13, Objective::RegLogistic)] {
            let model = random_model(25, depth, 5, objective);
            let forest = Forest::compile(&model);
            let rows = 1000;
            let columns = random_rows(rows, 5);
            let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
            let mut out = vec![0f32; rows];
            forest.predict(&refs, &mut out, 1).unwrap();
            for (r, &got) in out.iter().enumerate() {
                let row: Vec<f32> = columns.iter().map(|c| c[r]).collect();
                assert_eq!(got.to_bits(), walk(&model, &row).to_bits(), "depth {depth} row {r}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_scalar_steps_agree_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: the scalar path is the only one");
            return;
        }
        for depth in [0, 1, 2, 3, 6, 10] {
            let model = random_model(8, depth, 6, Objective::RegSquaredError);
            let forest = Forest::compile(&model);
            let columns = random_rows(BLOCK_ROWS, 6);
            let block: Vec<f32> = columns.iter().flatten().copied().collect();
            for tree in forest.perfect_trees().unwrap() {
                let internal = (1usize << tree.depth) - 1;
                let nodes = &forest.nodes[tree.first_node as usize..][..internal];
                let leaves = &forest.leaves[tree.first_leaf as usize..][..internal + 1];
                let (mut scalar, mut vector) = (vec![0.5f32; BLOCK_ROWS], vec![0.5f32; BLOCK_ROWS]);
                perfect_rows(nodes, leaves, tree.depth, &block, &mut vec![0; BLOCK_ROWS], &mut scalar, 0);
                let done = unsafe { simd::perfect_rows_avx2(nodes, leaves, tree.depth, &block, &mut vector) };
                assert_eq!(done, BLOCK_ROWS);
                assert_eq!(scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "depth {depth}");
            }
        }
    }

    #[test]
    fn threads_give_the_same_scores() {
        let model = random_model(10, 6, 4, Objective::BinaryLogistic);
        let forest = Forest::compile(&model);
        let rows = 3 * THREAD_ROWS_MIN + 17;
        let columns = random_rows(rows, 4);
        let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let (mut one, mut four) = (vec![0f32; rows], vec![0f32; rows]);
        forest.predict(&refs, &mut one, 1).unwrap();
        forest.predict(&refs, &mut four, 4).unwrap();
        assert_eq!(one, four);
    }

    #[test]
    fn wrong_inputs_are_errors() {
        let forest = Forest::compile(&random_model(2, 3, 3, Objective::RegSquaredError));
        let col = vec![0f32; 4];
        let mut out = vec![0f32; 4];
        let err = forest.predict(&[&col, &col], &mut out, 1).unwrap_err().to_string();
        assert!(err.contains("takes 3 features, got 2"), "{err}");
        let short = vec![0f32; 3];
        let err = forest.predict(&[&col, &short, &col], &mut out, 1).unwrap_err().to_string();
        assert!(err.contains("feature 1 has 3 values for 4 rows"), "{err}");
        forest.predict(&[&[], &[], &[]], &mut [], 2).unwrap();
    }
}
