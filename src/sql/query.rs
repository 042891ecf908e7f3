//! Read-only SQL over a written dataset (`hindsight query DIR SQL`).
//!
//! Two tables are registered:
//! * `dataset`: exactly the shards listed in `manifest.json` (never stray files in the
//!   directory), with the contract schema (`docs/CONTRACT.md`) for the dataset's top-k width;
//! * `quarantine`: `quarantine.jsonl` (`source_uri`, `record_index`, `byte_offset`, `reason`,
//!   `detail`, `snippet`), an empty table with these columns when the file is absent.
//!
//! Only queries run: DDL (`CREATE`, `DROP`), DML (`INSERT`, `COPY`) and statements (`SET`) are
//! refused, so a query never writes anything. The query is planned before any output is opened,
//! so a bad query leaves no file behind.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use super::{SqlError, SqlResult};
use crate::ingest::QuarantineEntry;
use crate::sink::{contract_schema, Manifest};

/// Rows per batch of the in-memory quarantine table.
const QUARANTINE_BATCH: usize = 8192;

/// A dataset directory opened for queries.
pub struct DatasetQuery {
    ctx: SessionContext,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

/// The columns of the `quarantine` table (one per field of a `quarantine.jsonl` line).
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("record_index", DataType::Int64, false),
        Field::new("byte_offset", DataType::UInt64, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("snippet", DataType::Utf8, false),
    ]))
}

impl DatasetQuery {
    /// Opens `dir`: reads its manifest and registers `dataset` and `quarantine`. Fails with a
    /// `Dataset` error when `dir` has no readable manifest.
    pub fn open(dir: &Path) -> SqlResult<Self> {
        let bad = |m: String| SqlError::Dataset(format!("{}: {m}", dir.display()));
        if !dir.is_dir() {
            return Err(bad("not a dataset directory".into()));
        }
        let dir = dir
            .canonicalize()
            .map_err(|e| bad(format!("cannot resolve: {e}")))?;
        let manifest = Manifest::read(&dir).map_err(|e| bad(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hindsight-query")
            .build()
            .map_err(|e| SqlError::Query(format!("starting the query runtime: {e}")))?;
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let schema = contract_schema(&manifest.dataset.layout());
        let table: Arc<dyn datafusion::datasource::TableProvider> = if manifest.shards.is_empty() {
            Arc::new(
                MemTable::try_new(schema, vec![vec![]])
                    .map_err(|e| SqlError::Query(e.to_string()))?,
            )
        } else {
            let mut urls = Vec::with_capacity(manifest.shards.len());
            for s in &manifest.shards {
                let path = dir.join(&s.file);
                if !path.is_file() {
                    return Err(bad(format!(
                        "shard {} listed in the manifest is missing (run `hindsight validate`)",
                        s.file
                    )));
                }
                // The footer is checked with the synchronous reader first: DataFusion's async
                // footer parsing panics on some damaged files instead of returning an error.
                let footer = std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| {
                        parquet::file::metadata::ParquetMetaDataReader::new()
                            .parse_and_finish(&f)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = footer {
                    return Err(bad(format!(
                        "shard {} is not a readable Parquet file ({e}); run `hindsight validate`",
                        s.file
                    )));
                }
                // A `file://` URL, not a path: DataFusion reads `*`, `?` and `[` in a plain
                // path as a glob, and a dataset directory may be named `runs[2]`.
                let file_url = url::Url::from_file_path(&path)
                    .map_err(|()| bad(format!("shard {}: not an absolute path", s.file)))?;
                let url = ListingTableUrl::try_new(file_url, None)
                    .map_err(|e| bad(format!("shard {}: {e}", s.file)))?;
                urls.push(url);
            }
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(schema);
            Arc::new(ListingTable::try_new(config).map_err(|e| bad(e.to_string()))?)
        };
        ctx.register_table("dataset", table)
            .map_err(|e| SqlError::Query(e.to_string()))?;
        let quarantine = read_quarantine(&dir.join("quarantine.jsonl"))?;
        let qtable = MemTable::try_new(quarantine_schema(), vec![quarantine])
            .map_err(|e| SqlError::Query(e.to_string()))?;
        ctx.register_table("quarantine", Arc::new(qtable))
            .map_err(|e| SqlError::Query(e.to_string()))?;
        Ok(DatasetQuery { ctx, rt, dir })
    }

    /// The dataset directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Plans `sql` (read-only) and starts it; a syntax, name or type error is returned here,
    /// before any output exists.
    pub fn plan(&self, sql: &str) -> SqlResult<QueryStream<'_>> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let stream: datafusion::error::Result<SendableRecordBatchStream> =
            self.rt.block_on(async {
                let df = self.ctx.sql_with_options(sql, options).await?;
                df.execute_stream().await
            });
        let stream = stream.map_err(|e| SqlError::Query(clean(&e.to_string())))?;
        Ok(QueryStream {
            schema: stream.schema(),
            stream,
            rt: &self.rt,
        })
    }

    /// Runs `sql` and collects every result batch (for small results and tests).
    pub fn collect(&self, sql: &str) -> SqlResult<(SchemaRef, Vec<RecordBatch>)> {
        let mut q = self.plan(sql)?;
        let mut out = Vec::new();
        while let Some(b) = q.next_batch()? {
            out.push(b);
        }
        Ok((q.schema(), out))
    }
}

/// A running query: its schema and its result batches, pulled one at a time (bounded memory).
pub struct QueryStream<'a> {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    rt: &'a tokio::runtime::Runtime,
}

impl QueryStream<'_> {
    /// The result's columns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next result batch; `None` at the end. An error while running is a `Query` error.
    pub fn next_batch(&mut self) -> SqlResult<Option<RecordBatch>> {
        match self.rt.block_on(self.stream.next()) {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(SqlError::Query(clean(&e.to_string()))),
        }
    }
}

/// Reads `quarantine.jsonl` into batches (empty when the file is absent).
fn read_quarantine(path: &Path) -> SqlResult<Vec<RecordBatch>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(SqlError::Dataset(format!("{}: {e}", path.display())));
        }
    };
    let mut batches = Vec::new();
    let mut entries: Vec<QuarantineEntry> = Vec::with_capacity(QUARANTINE_BATCH);
    let mut reader = std::io::BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| SqlError::Dataset(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.last() == Some(&b'\n');
        let parsed = std::str::from_utf8(&buf)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                if text.trim().is_empty() {
                    Ok(None)
                } else {
                    serde_json::from_str::<QuarantineEntry>(text)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }
            });
        let entry = match parsed {
            Ok(Some(entry)) => entry,
            Ok(None) => continue,
            // A last line without its newline is a write cut short (a killed run): skip it
            // rather than make the whole table unusable.
            Err(e) if !complete => {
                tracing::warn!(
                    path = %path.display(),
                    line = line_no,
                    "skipping the unterminated last line of quarantine.jsonl ({e})"
                );
                break;
            }
            Err(e) => {
                return Err(SqlError::Dataset(format!(
                    "{} line {line_no}: {e}",
                    path.display()
                )))
            }
        };
        entries.push(entry);
        if entries.len() == QUARANTINE_BATCH {
            batches.push(quarantine_batch(&entries)?);
            entries.clear();
        }
    }
    if !entries.is_empty() {
        batches.push(quarantine_batch(&entries)?);
    }
    Ok(batches)
}

fn quarantine_batch(entries: &[QuarantineEntry]) -> SqlResult<RecordBatch> {
    let mut uri = StringBuilder::new();
    let mut index = Int64Builder::with_capacity(entries.len());
    let mut offset = UInt64Builder::with_capacity(entries.len());
    let mut reason = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut snippet = StringBuilder::new();
    for e in entries {
        uri.append_value(&e.source_uri);
        index.append_value(e.record_index);
        offset.append_option(e.byte_offset);
        reason.append_value(e.reason.as_str());
        detail.append_value(&e.detail);
        snippet.append_value(&e.snippet);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uri.finish()),
        Arc::new(index.finish()),
        Arc::new(offset.finish()),
        Arc::new(reason.finish()),
        Arc::new(detail.finish()),
        Arc::new(snippet.finish()),
    ];
    RecordBatch::try_new(quarantine_schema(), columns).map_err(|e| SqlError::Query(e.to_string()))
}

/// Keeps the first line of a DataFusion error (the rest is backtrace hints).
fn clean(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}
