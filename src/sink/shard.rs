//! Parquet shard writer: rows → record batches → zstd Parquet files with small row groups,
//! rolled by rows and bytes, with deterministic names and bytes (the same rows and metadata give
//! byte-identical files, so reruns are checkable by sha256 and re-uploads are no-ops).
//!
//! Each shard is written to `{name}.tmp`, fsynced and renamed, so a crash never leaves a
//! truncated `part-*.parquet`; a leftover `.tmp` is reported by `validate`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::batch::{batch_to_rows, rows_to_batch};
use super::columns::Storage;
use super::error::{SinkError, SinkResult};
use super::meta::DatasetMeta;
use super::row::OutputRow;
use super::schema::contract_schema;

/// The `created_by` string of every shard: fixed (no library build string that could change
/// the bytes), so equal rows give equal files.
pub fn created_by() -> String {
    format!("hindsight {}", env!("CARGO_PKG_VERSION"))
}

/// Sharding and encoding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardConfig {
    /// A shard is closed once it holds this many rows.
    pub max_rows: usize,
    /// A shard is closed once this many bytes are written (checked after each row group).
    pub max_bytes: u64,
    /// Rows per row group (small: rows are long, and readers stream by row group).
    pub row_group_rows: usize,
    /// zstd level.
    pub zstd_level: i32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 256 << 20,
            row_group_rows: 64,
            zstd_level: 3,
        }
    }
}

/// One finished shard, as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name, relative to the dataset directory.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Σ T over its rows.
    pub response_tokens: u64,
    /// File size.
    pub bytes: u64,
    /// sha256 of the file (hex).
    pub sha256: String,
}

/// A `Write` that hashes and counts what passes through, so the shard's sha256 needs no second
/// read of the file.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct OpenShard {
    name: String,
    tmp: PathBuf,
    writer: ArrowWriter<HashingWriter>,
    rows: u64,
    response_tokens: u64,
}

/// Writes rows into `part-{chunk_id}-{seq:05}.parquet` shards under one directory.
pub struct ShardWriter {
    dir: PathBuf,
    chunk_id: String,
    meta: DatasetMeta,
    cfg: ShardConfig,
    schema: SchemaRef,
    props: WriterProperties,
    seq: u32,
    pending: Vec<OutputRow>,
    current: Option<OpenShard>,
    done: Vec<ShardInfo>,
}

fn writer_properties(
    meta: &DatasetMeta,
    cfg: &ShardConfig,
    schema: &SchemaRef,
) -> SinkResult<WriterProperties> {
    let level = ZstdLevel::try_new(cfg.zstd_level)
        .map_err(|e| SinkError::Config(format!("zstd level {}: {e}", cfg.zstd_level)))?;
    let kv: Vec<KeyValue> = meta
        .key_values()
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let mut b = WriterProperties::builder()
        .set_created_by(created_by())
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_write_page_header_statistics(false)
        .set_key_value_metadata(Some(kv));
    let descr = ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(|e| SinkError::Config(format!("contract schema has no Parquet form: {e}")))?;
    for col in descr.columns() {
        let path = col.path().clone();
        let top = path.parts().first().map(String::as_str).unwrap_or_default();
        // How each column is stored is part of the column table (`super::columns::Storage`),
        // adjusted for the dataset's encoding (`Layout::storage`).
        let layout = meta.layout();
        let storage = super::columns::column(top).map(|c| layout.storage(c));
        match storage {
            Some(Storage::Plain) => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::PLAIN);
            }
            Some(Storage::ByteStreamSplit) => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            Some(Storage::Statistics) => {
                b = b.set_column_statistics_enabled(path, EnabledStatistics::Chunk);
            }
            Some(Storage::Default) | None => {}
        }
    }
    Ok(b.build())
}

/// Refuses a row whose per-token columns do not all have T (top-k: T × K) values: the one
/// invariant every trainer relies on is cheaper to enforce here than to find later.
/// `compact`: the dataset's encoding nulls the student's own snapshots, so a row read back from
/// a compact shard (compaction, finalize's dedup) has none and needs none.
fn check_alignment(row: &OutputRow, compact: bool) -> SinkResult<()> {
    let t = row.completion_ids.len();
    let k = row.k;
    let lens = [
        ("loss_mask", row.loss_mask.len(), t),
        ("student_logprobs", row.student_logprobs.len(), t),
        ("teacher_logprobs", row.teacher_logprobs.len(), t),
        ("advantages", row.advantages.len(), t),
        ("teacher_tail_logmass", row.teacher_tail_logmass.len(), t),
        ("teacher_topk_ids", row.teacher_topk_ids.len(), t * k),
        (
            "teacher_topk_logprobs",
            row.teacher_topk_logprobs.len(),
            t * k,
        ),
        (
            "student_topk_logprobs",
            row.student_topk_logprobs.as_ref().map_or(t * k, Vec::len),
            t * k,
        ),
        ("teacher_logz", row.teacher_logz.len(), t),
        ("student_logz", row.student_logz.len(), t),
    ];
    let ks = row.ks;
    let student_side = [
        (
            "student_topk_ids",
            row.student_topk_ids.as_ref().map(Vec::len),
        ),
        (
            "student_topk_logprobs_self",
            row.student_topk_logprobs_self.as_ref().map(Vec::len),
        ),
        (
            "teacher_logprobs_at_student_topk",
            row.teacher_logprobs_at_student_topk.as_ref().map(Vec::len),
        ),
    ];
    for (name, len) in student_side {
        let ok = match len {
            None => ks == 0 || (compact && name == "student_topk_logprobs_self"),
            Some(len) => len == t * ks,
        };
        if !ok {
            return Err(SinkError::InvalidRow(format!(
                "sample {}: {name} has {len:?} values, expected {} (T={t}, K_s={ks})",
                row.sample_id,
                t * ks
            )));
        }
    }
    for (name, len, want) in lens {
        if len != want {
            return Err(SinkError::InvalidRow(format!(
                "sample {}: {name} has {len} values, expected {want} (T={t}, K={k})",
                row.sample_id
            )));
        }
    }
    if row.num_completion_tokens as i64 != t as i64 {
        return Err(SinkError::InvalidRow(format!(
            "sample {}: num_completion_tokens {} != T={t}",
            row.sample_id, row.num_completion_tokens
        )));
    }
    Ok(())
}

fn valid_chunk_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !id.starts_with('.')
}

impl ShardWriter {
    /// A writer for shards of chunk `chunk_id` (ASCII letters, digits, `_-.`; it keeps
    /// concurrent or resumed chunks from colliding) in `dir`, which is created if missing.
    pub fn new(
        dir: impl Into<PathBuf>,
        chunk_id: &str,
        meta: DatasetMeta,
        cfg: ShardConfig,
    ) -> SinkResult<Self> {
        let dir = dir.into();
        if !valid_chunk_id(chunk_id) {
            return Err(SinkError::Config(format!(
                "chunk id '{chunk_id}' must be non-empty ASCII letters, digits, '_', '-' or '.'"
            )));
        }
        if cfg.max_rows == 0 || cfg.row_group_rows == 0 || cfg.max_bytes == 0 {
            return Err(SinkError::Config(
                "max_rows, max_bytes and row_group_rows must be positive".into(),
            ));
        }
        if meta.top_k == 0 {
            return Err(SinkError::Config("top_k must be at least 1".into()));
        }
        std::fs::create_dir_all(&dir).map_err(|e| SinkError::io("creating", &dir, e))?;
        let schema = contract_schema(&meta.layout());
        let props = writer_properties(&meta, &cfg, &schema)?;
        Ok(Self {
            dir,
            chunk_id: chunk_id.to_string(),
            meta,
            cfg,
            schema,
            props,
            seq: 0,
            pending: Vec::new(),
            current: None,
            done: Vec::new(),
        })
    }

    /// The metadata written into every shard.
    pub fn meta(&self) -> &DatasetMeta {
        &self.meta
    }

    /// Shards finished so far.
    pub fn shards(&self) -> &[ShardInfo] {
        &self.done
    }

    /// Queues one row; a row group is written every `row_group_rows` rows.
    pub fn write_row(&mut self, row: OutputRow) -> SinkResult<()> {
        if row.k != self.meta.top_k || row.ks != self.meta.student_top_k {
            return Err(SinkError::InvalidRow(format!(
                "sample {}: top-k widths {}/{} differ from the dataset's K={} / K_s={}",
                row.sample_id, row.k, row.ks, self.meta.top_k, self.meta.student_top_k
            )));
        }
        check_alignment(&row, self.meta.encoding == crate::sink::Encoding::Compact)?;
        self.pending.push(row);
        if self.pending.len() >= self.batch_target() {
            self.flush_pending()?;
        }
        Ok(())
    }

    /// Queues many rows.
    pub fn write_rows(&mut self, rows: impl IntoIterator<Item = OutputRow>) -> SinkResult<()> {
        rows.into_iter().try_for_each(|r| self.write_row(r))
    }

    /// Writes the remaining rows and closes the last shard; returns every shard written.
    pub fn finish(mut self) -> SinkResult<Vec<ShardInfo>> {
        while !self.pending.is_empty() {
            self.flush_pending()?;
        }
        self.close_current()?;
        Ok(self.done)
    }

    /// Writes a record batch as is, bypassing row construction (its schema must still be the
    /// contract's). Only for tests that need shards violating row-level invariants.
    #[doc(hidden)]
    pub fn write_raw_batch(&mut self, batch: &RecordBatch) -> SinkResult<()> {
        let tokens: u64 = batch_to_rows(batch)?
            .iter()
            .map(|r| r.response_tokens() as u64)
            .sum();
        self.write_batch(batch, tokens)
    }

    /// Rows the next row group may take (never more than the current shard has room for).
    fn batch_target(&self) -> usize {
        let used = self.current.as_ref().map_or(0, |c| c.rows as usize);
        self.cfg
            .row_group_rows
            .min(self.cfg.max_rows.saturating_sub(used).max(1))
    }

    fn flush_pending(&mut self) -> SinkResult<()> {
        let n = self.batch_target().min(self.pending.len());
        let rows: Vec<OutputRow> = self.pending.drain(..n).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let tokens = rows.iter().map(|r| r.response_tokens() as u64).sum();
        let batch = rows_to_batch(&rows, &self.meta.layout())?;
        self.write_batch(&batch, tokens)
    }

    fn write_batch(&mut self, batch: &RecordBatch, tokens: u64) -> SinkResult<()> {
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let perr = |e| SinkError::parquet(&cur.tmp, e);
        cur.writer.write(batch).map_err(perr)?;
        cur.writer
            .flush()
            .map_err(|e| SinkError::parquet(&cur.tmp, e))?;
        cur.rows += batch.num_rows() as u64;
        cur.response_tokens += tokens;
        if cur.rows >= self.cfg.max_rows as u64
            || cur.writer.bytes_written() as u64 >= self.cfg.max_bytes
        {
            self.close_current()?;
        }
        Ok(())
    }

    fn open(&mut self) -> SinkResult<OpenShard> {
        let name = format!("part-{}-{:05}.parquet", self.chunk_id, self.seq);
        self.seq += 1;
        let dest = self.dir.join(&name);
        let (tmp, file) = crate::util::create_temp_beside(&dest)
            .map_err(|e| SinkError::io("creating a temporary file for", &dest, e))?;
        let sink = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let opts = ArrowWriterOptions::new().with_properties(self.props.clone());
        let writer = ArrowWriter::try_new_with_options(sink, self.schema.clone(), opts)
            .map_err(|e| SinkError::parquet(&tmp, e))?;
        Ok(OpenShard {
            name,
            tmp,
            writer,
            rows: 0,
            response_tokens: 0,
        })
    }

    fn close_current(&mut self) -> SinkResult<()> {
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        let sink = cur
            .writer
            .into_inner()
            .map_err(|e| SinkError::parquet(&cur.tmp, e))?;
        let HashingWriter {
            inner,
            hasher,
            bytes,
        } = sink;
        let file = inner
            .into_inner()
            .map_err(|e| SinkError::io("flushing", &cur.tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SinkError::io("syncing", &cur.tmp, e))?;
        drop(file);
        let dest = self.dir.join(&cur.name);
        std::fs::rename(&cur.tmp, &dest).map_err(|e| SinkError::io("renaming", &cur.tmp, e))?;
        sync_dir(&self.dir)?;
        self.done.push(ShardInfo {
            file: cur.name,
            rows: cur.rows,
            response_tokens: cur.response_tokens,
            bytes,
            sha256: hex::encode(hasher.finalize()),
        });
        Ok(())
    }
}

/// Makes a rename durable (the directory entry is flushed too).
pub(crate) fn sync_dir(dir: &Path) -> SinkResult<()> {
    crate::util::sync_dir(dir).map_err(|e| SinkError::io("syncing directory", dir, e))
}
