//! Errors of the dataset sink: writing shards, the manifest, and reading them back. Each names
//! the file it was working on so a failed nightly run says what to look at.

use std::path::PathBuf;

/// Failures while writing or reading a dataset directory.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`creating`, `renaming`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet layer refused to write or read a file.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The shard.
        path: PathBuf,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Building or decoding an Arrow array failed (a type or length mismatch).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A JSON document (manifest) could not be read or written.
    #[error("json {path}: {source}")]
    Json {
        /// The document.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A column is missing or has an unexpected Arrow type when reading rows back.
    #[error("column '{column}': {message}")]
    Column {
        /// The column name.
        column: String,
        /// What is wrong with it.
        message: String,
    },
    /// A row cannot be written as given (e.g. its top-k width differs from the dataset's K).
    #[error("invalid row: {0}")]
    InvalidRow(String),
    /// A manifest parses but holds values no writer produces (K out of range, ...).
    #[error("{path}: {message}")]
    InvalidManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file name read from a dataset (manifest, state) is not a plain name inside it.
    #[error("{path}: '{name}' is not a plain file name inside the dataset; refusing to use it")]
    UnsafeName {
        /// The document that named it.
        path: PathBuf,
        /// The name as written there.
        name: String,
    },
    /// Writer settings are unusable (zero rows per shard, empty chunk id, ...).
    #[error("invalid sink config: {0}")]
    Config(String),
    /// Uploading to or reading from the dataset's object store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl SinkError {
    /// Shorthand for an I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SinkError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a Parquet error on `path`.
    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        SinkError::Parquet {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a column error.
    pub fn column(column: &str, message: impl Into<String>) -> Self {
        SinkError::Column {
            column: column.to_string(),
            message: message.into(),
        }
    }
}

/// Result alias of the sink.
pub type SinkResult<T> = std::result::Result<T, SinkError>;
