//! XGBoost's JSON model format (`booster.save_model("model.json")`, xgboost 1.0 to 3.x), read
//! into a [`Model`]: the objective, the base score and each tree's nodes as written.
//!
//! What is read: `version`, `learner.learner_model_param` (`num_feature`, `base_score`,
//! `num_class`, `num_target`), `learner.objective.name`, `learner.gradient_booster` (`name`
//! must be `gbtree`) and its `model.trees[*]`: `left_children`, `right_children`,
//! `split_indices`, `split_conditions` (a leaf's value for a leaf), `default_left`,
//! `split_type`, `tree_param.size_leaf_vector`. Everything else (statistics, feature names) is
//! ignored.
//!
//! Every rule is checked before a model is returned, so a model either loads whole or not at
//! all: the error names the field and the tree. Trees are walked iteratively with a visited
//! mark, so a cycle or a shared child is refused rather than looped over, and no recursion
//! depth depends on the file.
//!
//! Semantics (XGBoost's): a row goes to the left child when `x < split_condition` in `f32`,
//! and to the node's default child when `x` is missing (NaN). The margin is
//! `base_margin + Σ leaf values`, `base_margin` being the base score taken to margin space
//! (`logit` for the logistic objectives, `ln` for Poisson); the score is the margin through
//! the objective's link (`sigmoid`, `exp`, or none).

use crate::error::ModelError;
use serde_json::Value;

/// Largest model text read, in bytes.
pub const MODEL_BYTES_MAX: usize = 1 << 30;
/// Trees in one model at most.
pub const TREES_MAX: usize = 100_000;
/// Nodes in one tree at most.
pub const TREE_NODES_MAX: usize = 1 << 22;
/// Features a model may take at most.
pub const FEATURES_MAX: usize = 65_536;
/// Depth of a tree at most (edges from the root to its deepest leaf).
pub const TREE_DEPTH_MAX: usize = 256;
/// XGBoost major versions whose JSON format this reads.
pub const VERSIONS_SUPPORTED: std::ops::RangeInclusive<u64> = 1..=3;

/// The objectives scored, with their link functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    BinaryLogistic,
    RegLogistic,
    RegSquaredError,
    CountPoisson,
}

/// How a margin becomes a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Identity,
    Sigmoid,
    Exp,
}

impl Objective {
    fn named(name: &str) -> Option<Objective> {
        match name {
            "binary:logistic" => Some(Objective::BinaryLogistic),
            "reg:logistic" => Some(Objective::RegLogistic),
            // reg:linear is the name xgboost < 1.0 gave reg:squarederror.
            "reg:squarederror" | "reg:linear" => Some(Objective::RegSquaredError),
            "count:poisson" => Some(Objective::CountPoisson),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::BinaryLogistic => "binary:logistic",
            Objective::RegLogistic => "reg:logistic",
            Objective::RegSquaredError => "reg:squarederror",
            Objective::CountPoisson => "count:poisson",
        }
    }

    pub fn link(self) -> Link {
        match self {
            Objective::BinaryLogistic | Objective::RegLogistic => Link::Sigmoid,
            Objective::RegSquaredError => Link::Identity,
            Objective::CountPoisson => Link::Exp,
        }
    }

    /// The base score (in the objective's output space, as saved) in margin space, as
    /// XGBoost's `ProbToMargin`.
    fn base_margin(self, base_score: f32) -> Result<f32, ModelError> {
        let margin = match self.link() {
            Link::Identity => base_score,
            Link::Sigmoid => {
                if !(base_score > 0.0 && base_score < 1.0) {
                    return Err(ModelError::invalid(format!("base_score {base_score} must lie in (0, 1) for {}", self.name())));
                }
                -(1.0 / base_score - 1.0).ln()
            }
            Link::Exp => {
                if !(base_score > 0.0) {
                    return Err(ModelError::invalid(format!("base_score {base_score} must be positive for {}", self.name())));
                }
                base_score.ln()
            }
        };
        match margin.is_finite() {
            true => Ok(margin),
            false => Err(ModelError::invalid(format!("base_score {base_score} gives no finite margin"))),
        }
    }
}

impl Link {
    /// The score of `margin`, in `f32` as XGBoost computes it.
    pub fn apply(self, margin: f32) -> f32 {
        match self {
            Link::Identity => margin,
            Link::Sigmoid => 1.0 / (1.0 + (-margin).exp()),
            Link::Exp => margin.exp(),
        }
    }

    /// The code the GPU kernel switches on.
    pub(crate) fn code(self) -> i32 {
        match self {
            Link::Identity => 0,
            Link::Sigmoid => 1,
            Link::Exp => 2,
        }
    }
}

/// One node as written. Children are indexes into the tree's nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Node {
    Split { feature: u32, threshold: f32, default_left: bool, left: u32, right: u32 },
    Leaf { value: f32 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    /// Node 0 is the root. Nodes no split reaches (deleted by pruning) are kept as leaves.
    pub nodes: Vec<Node>,
    /// Edges from the root to the deepest leaf.
    pub depth: usize,
}

/// A validated XGBoost model.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub objective: Objective,
    pub num_features: usize,
    /// As saved (output space).
    pub base_score: f32,
    /// `base_score` in margin space.
    pub base_margin: f32,
    pub trees: Vec<Tree>,
    /// The xgboost version that saved the model.
    pub version: [u64; 3],
}

impl Model {
    /// Reads a model from its JSON text.
    pub fn from_json(text: &[u8]) -> Result<Model, ModelError> {
        if text.len() > MODEL_BYTES_MAX {
            return Err(ModelError::TooLarge(format!("{} bytes, at most {MODEL_BYTES_MAX}", text.len())));
        }
        let root: Value = serde_json::from_slice(text).map_err(|e| ModelError::Json(e.to_string()))?;
        let version = read_version(&root)?;
        let learner = field(&root, "learner", "")?;
        let params = field(learner, "learner_model_param", "learner")?;
        let num_features = count_param(params, "num_feature", "learner.learner_model_param")?;
        if num_features == 0 || num_features > FEATURES_MAX {
            return Err(ModelError::invalid(format!("learner.learner_model_param.num_feature: {num_features}, must be 1 to {FEATURES_MAX}")));
        }
        for (name, most) in [("num_class", 1), ("num_target", 1)] {
            if optional_count_param(params, name, "learner.learner_model_param")?.unwrap_or(0) > most {
                return Err(ModelError::Unsupported(format!("learner.learner_model_param.{name} > 1: only single-output models are scored")));
            }
        }
        let objective_name = text_at(field(field(learner, "objective", "learner")?, "name", "learner.objective")?, "learner.objective.name")?;
        let objective = Objective::named(objective_name).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "objective {objective_name}; Lookback scores binary:logistic, reg:logistic, reg:squarederror and count:poisson"
            ))
        })?;
        let base_score = read_base_score(params)?;
        let base_margin = objective.base_margin(base_score)?;
        let trees = read_trees(field(learner, "gradient_booster", "learner")?, num_features)?;
        Ok(Model { objective, num_features, base_score, base_margin, trees, version })
    }

    /// Deepest tree.
    pub fn depth(&self) -> usize {
        self.trees.iter().map(|t| t.depth).max().unwrap_or(0)
    }
}

fn field<'v>(value: &'v Value, name: &str, at: &str) -> Result<&'v Value, ModelError> {
    let path = if at.is_empty() { name.to_string() } else { format!("{at}.{name}") };
    match value {
        Value::Object(map) => map.get(name).ok_or_else(|| ModelError::invalid(format!("{path}: missing"))),
        _ => Err(ModelError::invalid(format!("{at}: not an object"))),
    }
}

fn text_at<'v>(value: &'v Value, path: &str) -> Result<&'v str, ModelError> {
    value.as_str().ok_or_else(|| ModelError::invalid(format!("{path}: not a string")))
}

fn read_version(root: &Value) -> Result<[u64; 3], ModelError> {
    let missing = || ModelError::invalid("version: missing or not [major, minor, patch] (a model saved by xgboost >= 1.0 save_model has one)");
    let parts = root.get("version").and_then(Value::as_array).ok_or_else(missing)?;
    let numbers: Vec<u64> = parts.iter().filter_map(Value::as_u64).collect();
    let [major, minor, patch] = numbers[..] else { return Err(missing()) };
    if parts.len() != 3 {
        return Err(missing());
    }
    if !VERSIONS_SUPPORTED.contains(&major) {
        return Err(ModelError::Unsupported(format!(
            "version {major}.{minor}.{patch}: this build reads models saved by xgboost {}.0 to {}.x",
            VERSIONS_SUPPORTED.start(),
            VERSIONS_SUPPORTED.end()
        )));
    }
    Ok([major, minor, patch])
}

/// XGBoost writes its parameters as strings ("8"); numbers are accepted too.
fn optional_count_param(params: &Value, name: &str, at: &str) -> Result<Option<usize>, ModelError> {
    let Some(value) = params.get(name) else { return Ok(None) };
    let parsed = match value {
        Value::String(s) => s.trim().parse::<usize>().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| ModelError::invalid(format!("{at}.{name}: {value} is not a count")))
}

fn count_param(params: &Value, name: &str, at: &str) -> Result<usize, ModelError> {
    optional_count_param(params, name, at)?.ok_or_else(|| ModelError::invalid(format!("{at}.{name}: missing")))
}

/// `base_score`: "5E-1" (xgboost < 3) or "[5E-1]" (xgboost 3, a vector of one).
fn read_base_score(params: &Value) -> Result<f32, ModelError> {
    let path = "learner.learner_model_param.base_score";
    let text = match params.get("base_score") {
        None => return Err(ModelError::invalid(format!("{path}: missing"))),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(ModelError::invalid(format!("{path}: {other} is not a number"))),
    };
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.contains(',') {
        return Err(ModelError::Unsupported(format!("{path}: {text}: one base score per output; only single-output models are scored")));
    }
    match inner.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ModelError::invalid(format!("{path}: {text} is not a finite number"))),
    }
}

fn read_trees(booster: &Value, num_features: usize) -> Result<Vec<Tree>, ModelError> {
    let name = text_at(field(booster, "name", "learner.gradient_booster")?, "learner.gradient_booster.name")?;
    if name != "gbtree" {
        return Err(ModelError::Unsupported(format!("booster {name}: only gbtree is scored")));
    }
    let model = field(booster, "model", "learner.gradient_booster")?;
    let trees = field(model, "trees", "learner.gradient_booster.model")?
        .as_array()
        .ok_or_else(|| ModelError::invalid("learner.gradient_booster.model.trees: not an array"))?;
    if trees.is_empty() || trees.len() > TREES_MAX {
        return Err(ModelError::invalid(format!("learner.gradient_booster.model.trees: {} trees, must be 1 to {TREES_MAX}", trees.len())));
    }
    if let Some(declared) = model.get("gbtree_model_param").and_then(|p| optional_count_param(p, "num_trees", "gbtree_model_param").transpose()) {
        let declared = declared?;
        if declared != trees.len() {
            return Err(ModelError::invalid(format!("gbtree_model_param.num_trees is {declared}, but {} trees follow", trees.len())));
        }
    }
    trees.iter().enumerate().map(|(i, t)| read_tree(t, i, num_features)).collect()
}

/// The arrays of one tree, each of the tree's node count.
struct TreeArrays {
    left: Vec<i64>,
    right: Vec<i64>,
    feature: Vec<i64>,
    condition: Vec<f64>,
    default_left: Vec<bool>,
    split_type: Vec<i64>,
}

fn read_tree(tree: &Value, index: usize, num_features: usize) -> Result<Tree, ModelError> {
    let at = format!("tree {index}");
    if let Some(size) = tree.get("tree_param").and_then(|p| optional_count_param(p, "size_leaf_vector", &at).transpose()) {
        if size? > 1 {
            return Err(ModelError::Unsupported(format!("{at}: vector leaves (multi-target trees) are not scored")));
        }
    }
    let arrays = tree_arrays(tree, &at)?;
    let count = arrays.left.len();
    if count == 0 || count > TREE_NODES_MAX {
        return Err(ModelError::invalid(format!("{at}: {count} nodes, must be 1 to {TREE_NODES_MAX}")));
    }
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        nodes.push(node(&arrays, i, count, num_features, &at)?);
    }
    let depth = check_shape(&nodes, &at)?;
    Ok(Tree { nodes, depth })
}

fn tree_arrays(tree: &Value, at: &str) -> Result<TreeArrays, ModelError> {
    let array = |name: &str| -> Result<&Vec<Value>, ModelError> {
        field(tree, name, at)?.as_array().ok_or_else(|| ModelError::invalid(format!("{at}.{name}: not an array")))
    };
    let ints = |name: &str| -> Result<Vec<i64>, ModelError> {
        array(name)?
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| ModelError::invalid(format!("{at}.{name}: {v} is not an integer"))))
            .collect()
    };
    let condition = array("split_conditions")?
        .iter()
        .map(|v| v.as_f64().ok_or_else(|| ModelError::invalid(format!("{at}.split_conditions: {v} is not a number"))))
        .collect::<Result<Vec<f64>, _>>()?;
    let default_left = array("default_left")?
        .iter()
        .map(|v| match v {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            other => Err(ModelError::invalid(format!("{at}.default_left: {other} is not 0, 1 or a boolean"))),
        })
        .collect::<Result<Vec<bool>, _>>()?;
    // split_type came with categorical support (xgboost 1.6); older models are all numeric.
    let split_type = match tree.get("split_type") {
        Some(_) => ints("split_type")?,
        None => Vec::new(),
    };
    let arrays = TreeArrays { left: ints("left_children")?, right: ints("right_children")?, feature: ints("split_indices")?, condition, default_left, split_type };
    let n = arrays.left.len();
    for (name, len) in [
        ("right_children", arrays.right.len()),
        ("split_indices", arrays.feature.len()),
        ("split_conditions", arrays.condition.len()),
        ("default_left", arrays.default_left.len()),
    ] {
        if len != n {
            return Err(ModelError::invalid(format!("{at}.{name}: {len} entries, left_children has {n}")));
        }
    }
    if !arrays.split_type.is_empty() && arrays.split_type.len() != n {
        return Err(ModelError::invalid(format!("{at}.split_type: {} entries, left_children has {n}", arrays.split_type.len())));
    }
    Ok(arrays)
}

fn node(a: &TreeArrays, i: usize, count: usize, num_features: usize, at: &str) -> Result<Node, ModelError> {
    let condition = a.condition[i] as f32;
    if a.left[i] == -1 {
        if a.right[i] != -1 {
            return Err(ModelError::invalid(format!("{at} node {i}: a left child of -1 (a leaf) but a right child of {}", a.right[i])));
        }
        if !condition.is_finite() {
            return Err(ModelError::invalid(format!("{at} node {i}: leaf value {} is not finite", a.condition[i])));
        }
        return Ok(Node::Leaf { value: condition });
    }
    let child = |c: i64, side: &str| -> Result<u32, ModelError> {
        match usize::try_from(c) {
            Ok(c) if c > 0 && c < count => Ok(c as u32),
            _ => Err(ModelError::invalid(format!("{at} node {i}: {side} child {c} is not a node of this tree (1 to {})", count - 1))),
        }
    };
    let (left, right) = (child(a.left[i], "left")?, child(a.right[i], "right")?);
    if left == right {
        return Err(ModelError::invalid(format!("{at} node {i}: both children are node {left}")));
    }
    if a.split_type.get(i).is_some_and(|&t| t != 0) {
        return Err(ModelError::Unsupported(format!("{at} node {i}: a categorical split; only numeric splits are scored")));
    }
    let feature = match usize::try_from(a.feature[i]) {
        Ok(f) if f < num_features => f as u32,
        _ => return Err(ModelError::invalid(format!("{at} node {i}: split feature {} outside the model's {num_features} features", a.feature[i]))),
    };
    if condition.is_nan() {
        return Err(ModelError::invalid(format!("{at} node {i}: split condition is NaN")));
    }
    Ok(Node::Split { feature, threshold: condition, default_left: a.default_left[i], left, right })
}

/// Checks that the nodes reached from the root form a tree (each reached once) no deeper than
/// [`TREE_DEPTH_MAX`]; returns its depth.
fn check_shape(nodes: &[Node], at: &str) -> Result<usize, ModelError> {
    let mut seen = vec![false; nodes.len()];
    let mut stack: Vec<(u32, usize)> = vec![(0, 0)];
    let mut depth = 0;
    while let Some((i, level)) = stack.pop() {
        let slot = &mut seen[i as usize];
        if *slot {
            return Err(ModelError::invalid(format!("{at}: node {i} is reached twice (not a tree)")));
        }
        *slot = true;
        depth = depth.max(level);
        if level > TREE_DEPTH_MAX {
            return Err(ModelError::TooLarge(format!("{at}: deeper than {TREE_DEPTH_MAX}")));
        }
        if let Node::Split { left, right, .. } = nodes[i as usize] {
            stack.push((right, level + 1));
            stack.push((left, level + 1));
        }
    }
    Ok(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-tree model: node 0 splits feature `f` at 0.5 (missing goes left), leaves -1 / 2.
    fn one_tree(objective: &str, base_score: &str, version: &str) -> String {
        format!(
            r#"{{"version": {version}, "learner": {{
                "learner_model_param": {{"base_score": "{base_score}", "num_feature": "3", "num_class": "0", "num_target": "1"}},
                "objective": {{"name": "{objective}"}},
                "gradient_booster": {{"name": "gbtree", "model": {{"gbtree_model_param": {{"num_trees": "1"}}, "trees": [{{
                    "left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [2, 0, 0],
                    "split_conditions": [0.5, -1.0, 2.0], "default_left": [1, 0, 0], "split_type": [0, 0, 0],
                    "tree_param": {{"size_leaf_vector": "1"}}}}]}}}}}}}}"#
        )
    }

    #[test]
    fn reads_a_small_model() {
        let m = Model::from_json(one_tree("binary:logistic", "[5E-1]", "[3, 1, 0]").as_bytes()).unwrap();
        assert_eq!((m.objective, m.num_features, m.trees.len(), m.depth()), (Objective::BinaryLogistic, 3, 1, 1));
        assert_eq!(m.base_margin, 0.0);
        assert_eq!(m.trees[0].nodes[0], Node::Split { feature: 2, threshold: 0.5, default_left: true, left: 1, right: 2 });
        // xgboost < 3 writes the base score without brackets.
        let m = Model::from_json(one_tree("count:poisson", "2E0", "[1, 7, 6]").as_bytes()).unwrap();
        assert!((m.base_margin - 2f32.ln()).abs() < 1e-7);
    }

    #[test]
    fn bad_models_say_what_is_wrong() {
        let good = one_tree("binary:logistic", "5E-1", "[2, 1, 0]");
        for (from, to, says) in [
            ("\"num_feature\": \"3\"", "\"num_feature\": \"0\"", "num_feature: 0"),
            ("binary:logistic", "multi:softprob", "objective multi:softprob"),
            ("\"gbtree\"", "\"gblinear\"", "booster gblinear"),
            ("[2, 1, 0]", "[0, 90, 0]", "version 0.90.0"),
            ("[2, 1, 0]", "[9, 0, 0]", "version 9.0.0"),
            ("\"split_indices\": [2, 0, 0]", "\"split_indices\": [7, 0, 0]", "split feature 7 outside"),
            ("\"left_children\": [1, -1, -1]", "\"left_children\": [2, -1, -1]", "both children are node 2"),
            ("\"left_children\": [1, -1, -1]", "\"left_children\": [5, -1, -1]", "left child 5 is not a node"),
            ("\"right_children\": [2, -1, -1]", "\"right_children\": [2, -1]", "right_children: 2 entries"),
            ("\"split_type\": [0, 0, 0]", "\"split_type\": [1, 0, 0]", "categorical split"),
            ("\"size_leaf_vector\": \"1\"", "\"size_leaf_vector\": \"3\"", "vector leaves"),
            ("\"num_trees\": \"1\"", "\"num_trees\": \"2\"", "num_trees is 2"),
            ("\"base_score\": \"5E-1\"", "\"base_score\": \"1.5\"", "must lie in (0, 1)"),
            ("\"default_left\": [1, 0, 0]", "\"default_left\": [7, 0, 0]", "default_left: 7"),
            ("\"num_target\": \"1\"", "\"num_target\": \"2\"", "single-output"),
        ] {
            let text = good.replace(from, to);
            assert_ne!(text, good, "{from} not found");
            let err = Model::from_json(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(says), "{err:?} should say {says:?}");
        }
        // A node reached twice (a DAG): 0 -> 1, 2; 1 -> 2, 3.
        let dag = good
            .replace("\"left_children\": [1, -1, -1]", "\"left_children\": [1, 2, -1, -1]")
            .replace("\"right_children\": [2, -1, -1]", "\"right_children\": [2, 3, -1, -1]")
            .replace("\"split_indices\": [2, 0, 0]", "\"split_indices\": [2, 0, 0, 0]")
            .replace("\"split_conditions\": [0.5, -1.0, 2.0]", "\"split_conditions\": [0.5, 1.0, 2.0, 3.0]")
            .replace("\"default_left\": [1, 0, 0]", "\"default_left\": [1, 0, 0, 0]")
            .replace("\"split_type\": [0, 0, 0]", "\"split_type\": [0, 0, 0, 0]");
        assert!(Model::from_json(dag.as_bytes()).unwrap_err().to_string().contains("reached twice"));
        for truncated in [1, good.len() / 2, good.len() - 1] {
            let err = Model::from_json(&good.as_bytes()[..truncated]).unwrap_err();
            assert!(matches!(err, ModelError::Json(_)), "{err}");
        }
        assert!(matches!(Model::from_json(b"{\"learner\": 1}").unwrap_err(), ModelError::Invalid(_)));
    }
}
