//! Model scoring in SQL over `lookback-scoring`: the functions `load_model(name, source)`,
//! `drop_model(name)` and `score(name, f1, f2, ...)`, and the table `lookback_models`.
//!
//! `score` is an ordinary scalar function, so it goes anywhere an expression does (SELECT
//! lists, WHERE, over joins and `attribute(...)` output). Per batch it turns each feature
//! argument into an `f32` column (NULL becomes NaN: a missing value, which follows the
//! split's default direction), scores the batch where the registry's device preference says
//! (`SET scoring_device`), and returns double precision. The model name must be a constant.
//!
//! Errors carry PostgreSQL's SQLSTATEs: an unknown model 42704 (undefined_object), a bad name
//! 42602, a bad model or bad arguments 22023, a model file the server cannot read 58P01 /
//! 58030, a GPU asked for and absent 55000.

use crate::SqlError;
use datafusion::arrow::array::{Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use lookback_scoring::xgboost::MODEL_BYTES_MAX;
use lookback_scoring::{device, ModelError, ModelRegistry};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The table listing the registered models.
pub const MODELS_TABLE: &str = "lookback_models";

/// Registers the scoring functions and `lookback_models` in `ctx`, over `registry`.
pub fn register(ctx: &SessionContext, registry: Arc<ModelRegistry>) -> Result<()> {
    ctx.register_udf(ScalarUDF::from(LoadModel::new(registry.clone())));
    ctx.register_udf(ScalarUDF::from(DropModel::new(registry.clone())));
    ctx.register_udf(ScalarUDF::from(Score::new(registry.clone())));
    ctx.register_table(MODELS_TABLE, Arc::new(ModelsTable { registry }))?;
    Ok(())
}

/// A scoring error as a SQL error with its SQLSTATE.
pub fn model_error(e: ModelError) -> DataFusionError {
    let code = match &e {
        ModelError::NotFound(_) => "42704",
        ModelError::BadName(_) => "42602",
        ModelError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "58P01",
        ModelError::Io { .. } => "58030",
        ModelError::Cuda(_) => "55000",
        ModelError::Json(_) | ModelError::Invalid(_) | ModelError::Unsupported(_) | ModelError::TooLarge(_) | ModelError::BadInput(_) => "22023",
    };
    SqlError::new(code, e.to_string()).into()
}

fn bad_argument(message: String) -> DataFusionError {
    SqlError::invalid_parameter(message)
}

/// A text argument that must be one value for the whole call (a literal, in practice).
fn constant_text(function: &str, what: &str, value: &ColumnarValue) -> Result<String> {
    let scalar = match value {
        ColumnarValue::Scalar(s) => s.clone(),
        ColumnarValue::Array(a) if a.len() == 1 => ScalarValue::try_from_array(a, 0)?,
        ColumnarValue::Array(_) => return Err(bad_argument(format!("{function}(): {what} must be a constant"))),
    };
    match scalar {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Ok(s),
        ScalarValue::Utf8(None) | ScalarValue::Utf8View(None) | ScalarValue::LargeUtf8(None) | ScalarValue::Null => {
            Err(bad_argument(format!("{function}(): {what} must not be NULL")))
        }
        other => Err(bad_argument(format!("{function}(): {what} must be text, got {}", other.data_type()))),
    }
}

fn text_signature(arity: usize) -> Signature {
    Signature::uniform(arity, vec![DataType::Utf8], Volatility::Volatile)
}

/// The model's JSON text: `source` itself when it is JSON (starts with `{`), else the regular
/// file it names, read to at most [`MODEL_BYTES_MAX`] bytes.
///
/// Why here and not left to the registry: the registry checks a file's size before reading
/// it, but a device or a FIFO has none. `load_model('m', '/dev/zero')` read zeros until the
/// server ran out of memory, and a FIFO without a writer blocked the query forever. Only
/// regular files are opened, and never read past the limit, whatever size they report
/// (files under `/proc` report 0 bytes).
fn model_text(source: &str) -> std::result::Result<String, ModelError> {
    if source.trim_start().starts_with('{') {
        return Ok(source.to_string());
    }
    let path = Path::new(source);
    let io = |what: &'static str| move |e: std::io::Error| ModelError::Io { what, path: path.to_path_buf(), source: e };
    if !std::fs::metadata(path).map_err(io("read model file"))?.is_file() {
        return Err(ModelError::BadInput(format!("{}: not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MODEL_BYTES_MAX as u64 + 1).read_to_end(&mut bytes)).map_err(io("read model file"))?;
    if bytes.len() > MODEL_BYTES_MAX {
        return Err(ModelError::TooLarge(format!("{}: more than {MODEL_BYTES_MAX} bytes", path.display())));
    }
    let text = String::from_utf8(bytes).map_err(|_| ModelError::BadInput(format!("{}: not UTF-8 text", path.display())))?;
    match text.trim_start().starts_with('{') {
        true => Ok(text),
        // Not JSON: the registry would take it for another path.
        false => Err(ModelError::BadInput(format!("{}: not a model's JSON (it starts with no '{{')", path.display()))),
    }
}

/// `load_model(name, source)`: registers a model from its JSON text or a server path.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LoadModel {
    registry: RegistryRef,
    signature: Signature,
}

impl LoadModel {
    fn new(registry: Arc<ModelRegistry>) -> LoadModel {
        LoadModel { registry: RegistryRef(registry), signature: text_signature(2) }
    }
}

impl ScalarUDFImpl for LoadModel {
    fn name(&self) -> &str {
        "load_model"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = constant_text("load_model", "the model name", &args.args[0])?;
        let source = constant_text("load_model", "the model (a path on the server or the JSON text)", &args.args[1])?;
        let text = model_text(&source).map_err(model_error)?;
        let info = self.registry.0.load(&name, &text).map_err(model_error)?;
        let summary = format!(
            "loaded {}: {} {}, {} trees, depth {}, {} features",
            info.name, info.format, info.objective, info.trees, info.depth, info.features
        );
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(summary))))
    }
}

/// `drop_model(name)`: unregisters a model; true when it was dropped.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DropModel {
    registry: RegistryRef,
    signature: Signature,
}

impl DropModel {
    fn new(registry: Arc<ModelRegistry>) -> DropModel {
        DropModel { registry: RegistryRef(registry), signature: text_signature(1) }
    }
}

impl ScalarUDFImpl for DropModel {
    fn name(&self) -> &str {
        "drop_model"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = constant_text("drop_model", "the model name", &args.args[0])?;
        self.registry.0.drop_model(&name).map_err(model_error)?;
        Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
    }
}

/// `score(name, f1, f2, ...)`: the model's score per row, as double precision.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Score {
    registry: RegistryRef,
    signature: Signature,
}

impl Score {
    fn new(registry: Arc<ModelRegistry>) -> Score {
        // Stable, not immutable: a model may be replaced between queries.
        Score { registry: RegistryRef(registry), signature: Signature::variadic_any(Volatility::Stable) }
    }
}

impl ScalarUDFImpl for Score {
    fn name(&self) -> &str {
        "score"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, types: &[DataType]) -> Result<DataType> {
        match types.first() {
            Some(DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null) => {}
            Some(other) => return Err(bad_argument(format!("score(): the first argument is the model name (text), got {other}"))),
            None => return Err(bad_argument("score(): needs a model name and its features".into())),
        }
        if let Some((i, t)) = types.iter().enumerate().skip(1).find(|(_, t)| !feature_type(t)) {
            return Err(bad_argument(format!("score(): feature {i} is {t}; features are numbers or booleans")));
        }
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = constant_text("score", "the model name", &args.args[0])?;
        let forest = self.registry.0.forest(&name).map_err(model_error)?;
        let given = args.args.len() - 1;
        if given != forest.num_features() {
            return Err(bad_argument(format!("score(): model {name} takes {} features, got {given}", forest.num_features())));
        }
        let rows = args.number_rows;
        let columns: Vec<Vec<f32>> = args.args[1..].iter().map(|a| feature_column(a, rows)).collect::<Result<_>>()?;
        let refs: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut out = vec![0f32; rows];
        device::score(&forest, &refs, &mut out, self.registry.0.preference(), 1).map_err(model_error)?;
        let scores: Float64Array = out.into_iter().map(|v| Some(v as f64)).collect();
        Ok(ColumnarValue::Array(Arc::new(scores)))
    }
}

fn feature_type(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null)
}

/// One feature argument as `rows` f32 values, NULL as NaN.
fn feature_column(value: &ColumnarValue, rows: usize) -> Result<Vec<f32>> {
    let array: ArrayRef = value.to_array(rows)?;
    let floats = cast(&array, &DataType::Float32)?;
    let floats = floats
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| DataFusionError::Internal("score(): cast to float32 gave another type".into()))?;
    Ok(match floats.null_count() {
        0 => floats.values().to_vec(),
        _ => floats.iter().map(|v| v.unwrap_or(f32::NAN)).collect(),
    })
}

/// The registry, compared by identity (the function structs must be `Eq` and `Hash`).
#[derive(Debug)]
struct RegistryRef(Arc<ModelRegistry>);

impl PartialEq for RegistryRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for RegistryRef {}

impl std::hash::Hash for RegistryRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}

/// `lookback_models`: one row per registered model, read when the query runs.
#[derive(Debug)]
struct ModelsTable {
    registry: Arc<ModelRegistry>,
}

fn models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("objective", DataType::Utf8, false),
        Field::new("trees", DataType::Int64, false),
        Field::new("features", DataType::Int64, false),
        Field::new("depth", DataType::Int64, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("xgboost_version", DataType::Utf8, false),
    ]))
}

#[async_trait::async_trait]
impl TableProvider for ModelsTable {
    fn schema(&self) -> SchemaRef {
        models_schema()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let models = self.registry.list();
        let preference = self.registry.preference();
        // Where `score` would run this model's full batches now.
        let gpu = lookback_scoring::cuda::available();
        let device = |depth: usize| {
            let fits = depth <= lookback_scoring::forest::PERFECT_DEPTH_MAX;
            match device::choose(preference, device::GPU_ROWS_MIN, gpu, fits) {
                lookback_scoring::Device::Cpu => "cpu",
                lookback_scoring::Device::Cuda => "cuda",
            }
        };
        let text = |f: &dyn Fn(&lookback_scoring::ModelInfo) -> String| -> ArrayRef { Arc::new(StringArray::from_iter_values(models.iter().map(f))) };
        let int = |f: &dyn Fn(&lookback_scoring::ModelInfo) -> usize| -> ArrayRef { Arc::new(Int64Array::from_iter_values(models.iter().map(|m| f(m) as i64))) };
        let columns = vec![
            text(&|m| m.name.clone()),
            text(&|m| m.format.to_string()),
            text(&|m| m.objective.to_string()),
            int(&|m| m.trees),
            int(&|m| m.features),
            int(&|m| m.depth),
            text(&|m| device(m.depth).to_string()),
            int(&|m| m.bytes),
            text(&|m| m.xgboost_version.clone()),
        ];
        let batch = RecordBatch::try_new(models_schema(), columns)?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], models_schema(), projection.cloned())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found while writing the `sql` fuzz target's dictionary): a device path
    /// was read without end (`/dev/zero`: until the server ran out of memory).
    #[test]
    fn model_sources_are_json_or_bounded_regular_files() {
        let code = |source: &str| match model_text(source) {
            Ok(_) => "ok",
            Err(e) => SqlError::find(&model_error(e)).map_or("?", |e| e.code),
        };
        assert_eq!(code("/dev/zero"), "22023", "a device is not read");
        assert_eq!(code("/no/such/model.json"), "58P01");
        assert_eq!(code("  {\"learner\": {}}"), "ok", "JSON text is passed on as it is");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let json = dir.path().join("m.json");
        std::fs::write(&json, " {\"learner\": {}}").expect("write the model");
        assert_eq!(model_text(json.to_str().expect("a UTF-8 path")).expect("a JSON file is read"), " {\"learner\": {}}");
        let path_inside = dir.path().join("p.txt");
        std::fs::write(&path_inside, "/dev/zero").expect("write the file");
        assert_eq!(code(path_inside.to_str().expect("a UTF-8 path")), "22023", "a file holding a path is not followed");
    }
}
