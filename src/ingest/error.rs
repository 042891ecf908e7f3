//! Errors of the ingest layer that stop a run.
//!
//! Bad *records* never become an error: they become a quarantine entry and the job goes on
//! (see `crate::ingest::QuarantineEntry`). `IngestError` is only for problems the user must fix
//! before anything can be read: a path that matches nothing, an invalid glob, a bad template or
//! config, or an output file that cannot be written.

use std::path::PathBuf;

/// A run-stopping error of ingest, episode building or templates.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The consumer of the episode stream stopped reading (a deliberately shortened run).
    #[error("the run stopped before the input was fully read")]
    Stopped,
    /// An input argument (path, directory or glob) matched no file; a typo should not look like an empty dataset.
    #[error("input `{0}` matched no file (check the path or glob)")]
    NoInput(String),
    /// A glob pattern could not be parsed.
    #[error("invalid glob `{pattern}`: {detail}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// What the glob parser said.
        detail: String,
    },
    /// A file or directory could not be listed, created or written (not a bad record).
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A teacher template is unknown or malformed.
    #[error("template error: {0}")]
    Template(#[from] crate::template::TemplateError),
    /// The ingest configuration is inconsistent.
    #[error("config error: {0}")]
    Config(String),
    /// An object-store input could not be listed or configured.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The input predicate (`input.where`) is invalid for these inputs.
    #[error(transparent)]
    Where(#[from] super::source::PredicateError),
    /// A format name given as an override is unknown.
    #[error(transparent)]
    UnknownFormat(#[from] crate::record::UnknownFormat),
}

impl IngestError {
    /// Wraps an `io::Error` with the path it happened on, so messages say which file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io {
            path: path.into(),
            source,
        }
    }
}
