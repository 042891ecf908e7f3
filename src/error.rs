//! Library error type: every failure names what it was doing and with which file, so a nightly
//! job's log says what to fix without a debugger.

use std::path::PathBuf;

/// Errors raised by the model, tokenizer and scorer layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model file is readable but not something we can run (unknown architecture, missing tensor).
    #[error("model {path}: {message}")]
    Model { path: PathBuf, message: String },
    /// The tokenizer could not be built or failed on input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model's chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The chat template renders a conversation in a way its pieces cannot be matched exactly
    /// (the whole conversation does not start with the generation prompt, no end-of-turn).
    #[error("chat template mismatch: {0}")]
    TemplateMismatch(String),
    /// A teacher template id is unknown or its placeholders do not fit.
    #[error("teacher template: {0}")]
    Template(String),
    /// A scoring request is malformed (empty completion, context too long, ...).
    #[error("invalid scoring request{}: {message}", id.as_deref().map(|i| format!(" '{i}'")).unwrap_or_default())]
    Request { id: Option<String>, message: String },
    /// A tensor operation failed inside candle.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Library result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for a model error about `path`.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }
}
