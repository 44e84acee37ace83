//! The named models of a data directory, kept across restarts.
//!
//! On disk (docs/format.md, "Models"): `<data dir>/models/<name>.xgb.json` holds the model
//! text exactly as it was loaded. Registering writes `<name>.xgb.json.tmp`, fsyncs it, renames
//! it over the final name and fsyncs the directory, so after a crash a model is there whole or
//! not at all (a leftover `.tmp` is removed at open). Dropping unlinks the file and fsyncs the
//! directory. A model is parsed and compiled before anything is written: a bad file is refused
//! and the registry does not change.
//!
//! At open every `*.xgb.json` is parsed again; a file that no longer parses (damaged on disk)
//! is left out and reported to the caller, which logs it: the server starts, and the model is
//! missing from `lookback_models` until it is loaded again.
//!
//! The scoring device preference (`SET scoring_device`) lives here too: it is the server's,
//! not a connection's.

use crate::device::DevicePreference;
use crate::error::ModelError;
use crate::forest::Forest;
use crate::xgboost::{Model, MODEL_BYTES_MAX};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The registry's folder in a data directory.
pub const MODELS_DIR: &str = "models";
const MODEL_SUFFIX: &str = ".xgb.json";
const TEMP_SUFFIX: &str = ".tmp";
/// Longest model name.
pub const MODEL_NAME_BYTES_MAX: usize = 63;
/// Models registered at most.
pub const MODELS_MAX: usize = 1024;

/// What `lookback_models` shows of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub format: &'static str,
    pub objective: &'static str,
    pub trees: usize,
    pub features: usize,
    pub depth: usize,
    pub bytes: usize,
    pub xgboost_version: String,
}

struct Registered {
    info: ModelInfo,
    forest: Arc<Forest>,
}

pub struct ModelRegistry {
    dir: PathBuf,
    models: RwLock<BTreeMap<String, Registered>>,
    /// Serializes load and drop, so files and the map change together.
    writes: Mutex<()>,
    preference: AtomicU8,
}

impl std::fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelRegistry({})", self.dir.display())
    }
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> ModelError + 'p {
    move |source| ModelError::Io { what, path: path.to_path_buf(), source }
}

/// Checks a model name: `[a-z][a-z0-9_]*`, at most [`MODEL_NAME_BYTES_MAX`] bytes.
pub fn check_name(name: &str) -> Result<(), ModelError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    match first_ok && rest_ok && name.len() <= MODEL_NAME_BYTES_MAX {
        true => Ok(()),
        false => Err(ModelError::BadName(name.to_string())),
    }
}

fn parse(text: &[u8], name: &str) -> Result<Registered, ModelError> {
    let model = Model::from_json(text)?;
    let [major, minor, patch] = model.version;
    let info = ModelInfo {
        name: name.to_string(),
        format: "xgboost_json",
        objective: model.objective.name(),
        trees: model.trees.len(),
        features: model.num_features,
        depth: model.depth(),
        bytes: text.len(),
        xgboost_version: format!("{major}.{minor}.{patch}"),
    };
    Ok(Registered { info, forest: Arc::new(Forest::compile(&model)) })
}

impl ModelRegistry {
    /// Opens (creating) `data_dir/models`; returns the registry and the model files it had to
    /// leave out, with why.
    pub fn open(data_dir: &Path) -> Result<(ModelRegistry, Vec<(PathBuf, ModelError)>), ModelError> {
        let dir = data_dir.join(MODELS_DIR);
        fs::create_dir_all(&dir).map_err(io("create model directory", &dir))?;
        let mut models = BTreeMap::new();
        let mut problems = Vec::new();
        let entries = fs::read_dir(&dir).map_err(io("list model directory", &dir))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if file.ends_with(TEMP_SUFFIX) {
                // A registration that crashed before its rename: it never happened.
                fs::remove_file(&path).map_err(io("remove unfinished model", &path))?;
                continue;
            }
            let Some(name) = file.strip_suffix(MODEL_SUFFIX) else { continue };
            let loaded = check_name(name).and_then(|_| read_bounded(&path)).and_then(|text| parse(&text, name));
            match loaded {
                Ok(registered) => drop(models.insert(name.to_string(), registered)),
                Err(e) => problems.push((path, e)),
            }
        }
        let registry = ModelRegistry {
            dir,
            models: RwLock::new(models),
            writes: Mutex::new(()),
            preference: AtomicU8::new(DevicePreference::Auto as u8),
        };
        Ok((registry, problems))
    }

    /// Registers (or replaces) `name` from `source`: the model's JSON text, or the path of a
    /// model file on the server.
    pub fn load(&self, name: &str, source: &str) -> Result<ModelInfo, ModelError> {
        check_name(name)?;
        let text = match source.trim_start().starts_with('{') {
            true => source.as_bytes().to_vec(),
            false => read_bounded(Path::new(source))?,
        };
        let registered = parse(&text, name)?;
        let _writes = self.writes.lock().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?;
        {
            let models = self.models.read().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?;
            if models.len() >= MODELS_MAX && !models.contains_key(name) {
                return Err(ModelError::TooLarge(format!("{MODELS_MAX} models are registered; drop one first")));
            }
        }
        self.persist(name, &text)?;
        let info = registered.info.clone();
        self.models.write().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?.insert(name.to_string(), registered);
        Ok(info)
    }

    fn persist(&self, name: &str, text: &[u8]) -> Result<(), ModelError> {
        let target = self.dir.join(format!("{name}{MODEL_SUFFIX}"));
        let temp = self.dir.join(format!("{name}{MODEL_SUFFIX}{TEMP_SUFFIX}"));
        let mut file = File::create(&temp).map_err(io("create model file", &temp))?;
        let written = file.write_all(text).and_then(|_| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io("write model file", &temp)(e));
        }
        fs::rename(&temp, &target).map_err(io("rename model file", &target))?;
        sync_dir(&self.dir)
    }

    /// Unregisters `name` and deletes its file.
    pub fn drop_model(&self, name: &str) -> Result<(), ModelError> {
        let _writes = self.writes.lock().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?;
        if !self.models.read().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?.contains_key(name) {
            return Err(ModelError::NotFound(name.to_string()));
        }
        let path = self.dir.join(format!("{name}{MODEL_SUFFIX}"));
        fs::remove_file(&path).map_err(io("remove model file", &path))?;
        sync_dir(&self.dir)?;
        self.models.write().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?.remove(name);
        Ok(())
    }

    /// The compiled forest of `name`.
    pub fn forest(&self, name: &str) -> Result<Arc<Forest>, ModelError> {
        let models = self.models.read().map_err(|_| ModelError::BadInput("model registry lock poisoned".into()))?;
        models.get(name).map(|r| r.forest.clone()).ok_or_else(|| ModelError::NotFound(name.to_string()))
    }

    /// Every registered model, by name.
    pub fn list(&self) -> Vec<ModelInfo> {
        match self.models.read() {
            Ok(models) => models.values().map(|r| r.info.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn preference(&self) -> DevicePreference {
        match self.preference.load(Ordering::Relaxed) {
            x if x == DevicePreference::Cpu as u8 => DevicePreference::Cpu,
            x if x == DevicePreference::Cuda as u8 => DevicePreference::Cuda,
            _ => DevicePreference::Auto,
        }
    }

    pub fn set_preference(&self, preference: DevicePreference) {
        self.preference.store(preference as u8, Ordering::Relaxed);
    }
}

/// A file's bytes, refused past [`MODEL_BYTES_MAX`] before reading them.
fn read_bounded(path: &Path) -> Result<Vec<u8>, ModelError> {
    let bytes = fs::metadata(path).map_err(io("read model file", path))?.len();
    if bytes > MODEL_BYTES_MAX as u64 {
        return Err(ModelError::TooLarge(format!("{}: {bytes} bytes, at most {MODEL_BYTES_MAX}", path.display())));
    }
    fs::read(path).map_err(io("read model file", path))
}

fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync model directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_identifiers() {
        for ok in ["fraud_v1", "a", "ltv2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Fraud", "1model", "a-b", "../x", "a b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
