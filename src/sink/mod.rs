//! The dataset sink: output rows, the contract's Arrow schema, deterministic Parquet shards, the
//! manifest, and the readers that check and summarize a written dataset (`validate`, `stats`).
//!
//! Typical use by the pipeline driver:
//! 1. [`DatasetMeta::new`] once per run;
//! 2. a [`ShardWriter`] per chunk, fed rows (built by the pipeline's scoring step), then [`ShardWriter::finish`];
//! 3. [`Manifest::new`] over all [`ShardInfo`]s plus run statistics, then [`Manifest::write`].
//!
//! The pipeline does all three through a [`DatasetWriter`], which also uploads to an object
//! store and enforces the order that keeps a dataset consistent (shards → ids → chunk state →
//! manifest).

pub mod batch;
pub mod card;
pub mod columns;
pub mod dataset;
pub mod duplicates;
pub mod encoding;
pub mod error;
pub mod manifest;
pub mod meta;
pub mod row;
pub mod schema;
pub mod shard;
pub mod stats;
pub mod validate;

pub use batch::{batch_to_rows, rows_to_batch};
pub use columns::{Column, CONTRACT};
pub use dataset::DatasetWriter;
pub use encoding::Encoding;
pub use error::{SinkError, SinkResult};
pub use manifest::{Manifest, Totals, MANIFEST_FILE};
pub use meta::DatasetMeta;
pub use row::{sample_id, OutputRow};
pub use schema::{contract_schema, Layout, SCHEMA_VERSION};
pub use shard::{ShardConfig, ShardInfo, ShardWriter};
pub use stats::{dataset_stats, DatasetStats, DroppedRelevance};
pub use validate::{validate, ValidationReport, Violation};
