//! Errors of model loading, the registry and scoring.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model text is not JSON (or not UTF-8), with serde's position.
    #[error("model is not valid JSON: {0}")]
    Json(String),
    /// The JSON is not an XGBoost model this build reads: the field path and what is wrong.
    #[error("invalid XGBoost model: {0}")]
    Invalid(String),
    /// A valid model using something Lookback does not score (a booster, objective, ...).
    #[error("unsupported XGBoost model: {0}")]
    Unsupported(String),
    /// A model larger than a named limit.
    #[error("model too large: {0}")]
    TooLarge(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A registry operation on a name it does not hold.
    #[error("model \"{0}\" does not exist")]
    NotFound(String),
    /// A model name outside `[a-z0-9_]`, or too long.
    #[error("invalid model name \"{0}\": use 1 to 63 lower-case letters, digits and underscores, starting with a letter")]
    BadName(String),
    /// A scoring call whose inputs do not fit the model.
    #[error("{0}")]
    BadInput(String),
    /// The CUDA path was asked for and cannot run.
    #[error("cuda: {0}")]
    Cuda(String),
}

impl ModelError {
    pub(crate) fn invalid(message: impl Into<String>) -> ModelError {
        ModelError::Invalid(message.into())
    }
}
