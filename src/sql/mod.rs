//! SQL where users expect it, on DataFusion: input filters (`input.where` / `run --where`)
//! evaluated on the input records before episodes are built, and read-only queries over a
//! written dataset (`hindsight query`).
//!
//! * [`filter`]: a SQL predicate parsed and type-checked once against the inputs' columns, then
//!   compiled to a DataFusion physical expression per input schema.
//! * [`parquet_scan`]: the filtered Parquet reader: row groups pruned by their statistics, the
//!   predicate evaluated on its own columns first (late materialisation), surviving rows decoded
//!   with their original row numbers so provenance is identical to an unfiltered run.
//! * [`source`]: [`SqlWhere`], the ingest layer's `InputPredicate` in SQL, and the filtered
//!   JSON reader.
//! * [`query`] and [`render`]: `hindsight query DIR SQL` and its table/CSV/JSONL/Parquet output.

pub mod filter;
pub mod parquet_scan;
pub mod query;
pub mod render;
pub mod source;

use std::path::PathBuf;

pub use crate::ingest::{SourceItem, WhereStats};
pub use filter::{Verdict, WherePredicate};
pub use source::SqlWhere;

/// Errors of the SQL layer; each says what to fix (the predicate, the query, the directory).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The input predicate does not parse, names an unknown column, or is not boolean.
    #[error("--where `{predicate}`: {message}")]
    Predicate {
        /// The predicate as given.
        predicate: String,
        /// What is wrong with it.
        message: String,
    },
    /// The query does not parse or plan, or failed while running.
    #[error("query failed: {0}")]
    Query(String),
    /// The directory is not a usable dataset.
    #[error("{0}")]
    Dataset(String),
    /// The output could not be written.
    #[error("writing {}: {message}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result alias of the SQL layer.
pub type SqlResult<T> = Result<T, SqlError>;
