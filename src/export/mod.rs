//! `hindsight export DIR --to FORMAT --out OUT`: a finished dataset rewritten in the layout a
//! trainer already reads, so teams train with their own tools and no glue code. Today one
//! format: `axolotl-kd`, the pre-tokenized rows of Axolotl's knowledge-distillation plugin
//! ([`axolotl`]).
//!
//! Export is a pure function of the source dataset and the options, shard by shard: each source
//! shard becomes the output shard of the same name, and `_export/<source shard>.json` (written after the
//! shard, the commit point) records it with the source shard's sha256. A killed export resumes
//! where it stopped; a rerun after the source grew (a nightly run appended shards) converts only
//! the new shards and deletes the outputs of shards the source no longer lists. `manifest.json`
//! (checksums, counts per reason, the source's model hashes) and a dataset card are written
//! last. Rows left out (too long, under `--min-relevance`, nothing to learn) are counted and
//! listed in `skipped.jsonl`; nothing is dropped silently.

pub mod axolotl;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use axolotl::{AxolotlOptions, Overflow, Support};

use crate::pipeline::state::{RunLock, StateError};
use crate::sink::{Manifest, OutputRow, SinkError, MANIFEST_FILE};
use crate::store::{Mirror, StoreError};

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Options that cannot apply to this dataset.
    #[error("{0}")]
    Options(String),
    /// A source row that breaks the contract.
    #[error("{0}")]
    Row(String),
    /// The output directory holds something else.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A trainer's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Axolotl's KD plugin (`axolotl.integrations.kd`), pre-tokenized.
    #[serde(rename = "axolotl-kd")]
    AxolotlKd,
}

impl Format {
    /// The name on the command line and in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::AxolotlKd => "axolotl-kd",
        }
    }
}

/// Everything that decides the exported bytes (its hash binds an output directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportOptions {
    pub format: Format,
    pub axolotl: AxolotlOptions,
    /// Leave out rows whose `relevance` is below this (rows with a null `relevance` are kept,
    /// as the pipeline's own filter keeps them).
    pub min_relevance: Option<f32>,
}

impl ExportOptions {
    fn sha256(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        crate::sink::meta::config_sha256(&v)
    }
}

/// One exported shard, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedShard {
    pub file: String,
    /// The source shard it was made from, and that shard's sha256 when it was.
    pub source_file: String,
    pub source_sha256: String,
    pub rows: u64,
    /// Σ len(input_ids), and the positions with a label (the KD loss's token count).
    pub input_tokens: u64,
    pub trainable_tokens: u64,
    /// Rows whose response was cut at `max_len`.
    pub truncated: u64,
    /// Rows left out, per reason.
    pub skipped: BTreeMap<String, u64>,
    pub bytes: u64,
    pub sha256: String,
}

/// A row left out, with its reason (`skipped.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedRow {
    pub sample_id: String,
    pub source_file: String,
    pub reason: String,
}

/// The commit record of one shard (`_export/<source shard>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardRecord {
    options_sha256: String,
    shard: ExportedShard,
    skipped_rows: Vec<SkippedRow>,
}

/// Sums over the exported shards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportTotals {
    pub shards: u64,
    pub rows_in: u64,
    pub rows: u64,
    pub input_tokens: u64,
    pub trainable_tokens: u64,
    pub truncated: u64,
    pub skipped: BTreeMap<String, u64>,
    pub bytes: u64,
}

/// `manifest.json` of an export: what it was made from and how, and every shard's checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: Format,
    pub options: ExportOptions,
    pub options_sha256: String,
    /// The source dataset: its location, its manifest's sha256 and the model fingerprints a
    /// trainer checks (its `dataset` block, verbatim).
    pub source: serde_json::Value,
    pub shards: Vec<ExportedShard>,
    pub totals: ExportTotals,
    pub hindsight_version: String,
}

/// What an export did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub output: String,
    pub format: Format,
    pub shards_written: u64,
    pub shards_reused: u64,
    pub shards_removed: u64,
    pub totals: ExportTotals,
}

impl ExportReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let skipped: Vec<String> = t.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "exported {} of {} rows as {} ({} shards: {} written, {} reused, {} removed); \
             {} input tokens, {} trainable; {} truncated; skipped: {}\noutput: {}",
            t.rows,
            t.rows_in,
            self.format.as_str(),
            t.shards,
            self.shards_written,
            self.shards_reused,
            self.shards_removed,
            t.input_tokens,
            t.trainable_tokens,
            t.truncated,
            if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            },
            self.output
        )
    }
}

const STATE_DIR: &str = "_export";
const SKIPPED_FILE: &str = "skipped.jsonl";
/// Rows per Parquet row group: an exported row holds `len(input_ids) * K` target values.
const ROW_GROUP_ROWS: usize = 128;

fn record_rel(source_file: &str) -> String {
    format!("{STATE_DIR}/{source_file}.json")
}

/// Exports the dataset at `source` (directory or object-store URL) into `out`.
pub fn export(source: &str, out: &str, opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    let src = Mirror::open(source)?;
    src.pull(MANIFEST_FILE)?;
    let src_dir = src.local().to_path_buf();
    if !src_dir.join(MANIFEST_FILE).is_file() {
        return Err(ExportError::Options(format!(
            "{} has no {MANIFEST_FILE}: export reads a finished dataset (run or finalize it first)",
            src.label()
        )));
    }
    let manifest = Manifest::read(&src_dir)?;
    if opts.axolotl.support == Support::Student && manifest.dataset.student_top_k == 0 {
        return Err(ExportError::Options(format!(
            "--support student needs the student-side columns, and {} was scored with \
             score.student_top_k = 0; re-run it with score.student_top_k > 0 or use --support teacher",
            src.label()
        )));
    }
    if opts.axolotl.max_len == Some(0) {
        return Err(ExportError::Options("--max-len must be at least 1".into()));
    }
    let manifest_bytes = std::fs::read(src_dir.join(MANIFEST_FILE))
        .map_err(io_err("reading", &src_dir.join(MANIFEST_FILE)))?;

    let dst = Mirror::open(out)?;
    let dir = dst.local().to_path_buf();
    if dst.remote().is_none() && same_dir(&dir, &src_dir) {
        return Err(ExportError::Conflict(
            "--out is the source dataset itself; export into another directory".into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let _lock = RunLock::acquire(&dir)?;
    dst.pull_tree(STATE_DIR)?;
    let options_sha256 = opts.sha256();
    let records = read_records(&dir)?;
    check_output_dir(&dir, &records, &options_sha256, &dst.label())?;
    remove_temp_files(&dir)?;

    let mut report = ExportReport {
        output: dst.label(),
        format: opts.format,
        shards_written: 0,
        shards_reused: 0,
        shards_removed: 0,
        totals: ExportTotals::default(),
    };
    let mut shards = Vec::new();
    let mut skipped_rows = Vec::new();
    let listed: BTreeSet<&str> = manifest.shards.iter().map(|s| s.file.as_str()).collect();
    let n = manifest.shards.len();
    for (i, s) in manifest.shards.iter().enumerate() {
        // Named as its source shard: a source that grows keeps every earlier output's name.
        let file = s.file.clone();
        let reuse = records.get(&s.file).filter(|r| {
            r.options_sha256 == options_sha256
                && r.shard.source_sha256 == s.sha256
                && r.shard.file == file
                && (dst.remote().is_some() || dir.join(&file).is_file())
        });
        let record = match reuse {
            Some(r) => {
                report.shards_reused += 1;
                r.clone()
            }
            None => {
                src.pull(&s.file)?;
                let rec = export_shard(&src_dir, &s.file, &s.sha256, &dir, &file, opts)?;
                if src.remote().is_some() {
                    let _ = std::fs::remove_file(src_dir.join(&s.file));
                }
                dst.push_shard(&file)?;
                let rec = ShardRecord {
                    options_sha256: options_sha256.clone(),
                    ..rec
                };
                let rel = record_rel(&s.file);
                write_json(&dir.join(&rel), &rec)?;
                dst.push(&rel)?;
                report.shards_written += 1;
                rec
            }
        };
        tracing::info!(
            shard = i + 1,
            of = n,
            source = %s.file,
            rows = record.shard.rows,
            "exported shard"
        );
        skipped_rows.extend(record.skipped_rows.iter().cloned());
        shards.push(record.shard);
    }
    // Outputs of source shards that are gone (compacted, rewritten): unlisted, then deleted.
    let kept: BTreeSet<String> = shards.iter().map(|s| s.file.clone()).collect();
    for (source_file, r) in &records {
        if listed.contains(source_file.as_str()) {
            continue;
        }
        if !kept.contains(&r.shard.file) {
            remove(&dst, &dir, &r.shard.file)?;
        }
        remove(&dst, &dir, &record_rel(source_file))?;
        report.shards_removed += 1;
    }

    let totals = totals_of(&shards);
    let mut source_meta = serde_json::to_value(&manifest.dataset).unwrap_or_default();
    if let Some(m) = source_meta.as_object_mut() {
        m.remove("pipeline_config");
    }
    let em = ExportManifest {
        format: opts.format,
        options: opts.clone(),
        options_sha256,
        source: serde_json::json!({
            "dataset": src.label(),
            "manifest_sha256": crate::util::sha256_hex(&manifest_bytes),
            "schema_version": manifest.schema_version,
            "meta": source_meta,
        }),
        shards,
        totals: totals.clone(),
        hindsight_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut lines = String::new();
    for r in &skipped_rows {
        lines.push_str(&serde_json::to_string(r).unwrap_or_default());
        lines.push('\n');
    }
    write_bytes(&dir.join(SKIPPED_FILE), lines.as_bytes())?;
    dst.push(SKIPPED_FILE)?;
    write_bytes(
        &dir.join(crate::sink::card::CARD_FILE),
        card(&em).as_bytes(),
    )?;
    dst.push(crate::sink::card::CARD_FILE)?;
    let json = serde_json::to_string_pretty(&em).map_err(|source| ExportError::Json {
        path: dir.join(MANIFEST_FILE),
        source,
    })?;
    write_bytes(&dir.join(MANIFEST_FILE), format!("{json}\n").as_bytes())?;
    dst.push(MANIFEST_FILE)?;
    report.totals = totals;
    Ok(report)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Refuses an output directory that holds another export's options, or anything that is not
/// an export of ours.
fn check_output_dir(
    dir: &Path,
    records: &BTreeMap<String, ShardRecord>,
    options_sha256: &str,
    label: &str,
) -> Result<(), ExportError> {
    if let Some(r) = records
        .values()
        .find(|r| r.options_sha256 != options_sha256)
    {
        return Err(ExportError::Conflict(format!(
            "{label} holds an export made with other options (options sha256 {} there, {} now); \
             use another --out, or delete it to start over",
            &r.options_sha256[..12.min(r.options_sha256.len())],
            &options_sha256[..12]
        )));
    }
    let manifest = dir.join(MANIFEST_FILE);
    if records.is_empty() && manifest.is_file() {
        return Err(ExportError::Conflict(format!(
            "{label} already holds a {MANIFEST_FILE} that no export of this kind wrote (a hindsight \
             dataset?); export into an empty or new --out directory"
        )));
    }
    if records.is_empty() {
        // What a killed first export leaves: shards renamed before their record, temp files.
        let ours = |n: &str| {
            n == ".lock"
                || n == STATE_DIR
                || n.ends_with(".tmp")
                || (n.starts_with("part-") && n.ends_with(".parquet"))
        };
        let foreign = std::fs::read_dir(dir)
            .map_err(io_err("listing", dir))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| !ours(n));
        if let Some(name) = foreign {
            return Err(ExportError::Conflict(format!(
                "{label} is not empty and holds no export (it has '{}'); export into an empty \
                 or new --out directory",
                crate::util::terminal_safe(&name)
            )));
        }
    }
    Ok(())
}

/// Deletes the temporary files a killed export left at the top of `dir` (under the lock, no
/// other export is writing them).
fn remove_temp_files(dir: &Path) -> Result<(), ExportError> {
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let p = e.path();
            std::fs::remove_file(&p).map_err(io_err("removing", &p))?;
        }
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<ShardRecord, ExportError> {
    let bytes = std::fs::read(path).map_err(io_err("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The commit records in `_export/`, by source shard name.
fn read_records(dir: &Path) -> Result<BTreeMap<String, ShardRecord>, ExportError> {
    let state = dir.join(STATE_DIR);
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(&state) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io_err("listing", &state))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(source_file) = name.strip_suffix(".json") else {
            continue;
        };
        out.insert(source_file.to_string(), read_record(&e.path())?);
    }
    Ok(out)
}

fn remove(dst: &Mirror, dir: &Path, rel: &str) -> Result<(), ExportError> {
    let p = dir.join(rel);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &p)(e)),
    }
    Ok(dst.delete_remote(rel)?)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    crate::util::write_atomic(path, bytes).map_err(io_err("writing", path))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), ExportError> {
    let json = serde_json::to_string_pretty(v).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_bytes(path, format!("{json}\n").as_bytes())
}

fn totals_of(shards: &[ExportedShard]) -> ExportTotals {
    let mut t = ExportTotals {
        shards: shards.len() as u64,
        ..ExportTotals::default()
    };
    for s in shards {
        t.rows += s.rows;
        t.input_tokens += s.input_tokens;
        t.trainable_tokens += s.trainable_tokens;
        t.truncated += s.truncated;
        t.bytes += s.bytes;
        let skipped: u64 = s.skipped.values().sum();
        t.rows_in += s.rows + skipped;
        for (k, v) in &s.skipped {
            *t.skipped.entry(k.clone()).or_default() += v;
        }
    }
    t
}

fn sha256_file(path: &Path) -> Result<String, ExportError> {
    let mut f = std::fs::File::open(path).map_err(io_err("opening", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Converts one source shard into `dir/file` (temp file, then rename) and returns its record
/// (without the options hash, which the caller adds).
fn export_shard(
    src_dir: &Path,
    source_file: &str,
    source_sha256: &str,
    dir: &Path,
    file: &str,
    opts: &ExportOptions,
) -> Result<ShardRecord, ExportError> {
    let src_path = src_dir.join(source_file);
    let actual = sha256_file(&src_path)?;
    if actual != source_sha256 {
        return Err(ExportError::Row(format!(
            "{}: sha256 {actual} differs from the source manifest's {source_sha256}; the dataset \
             changed under the export (run `hindsight validate` on it)",
            src_path.display()
        )));
    }
    let f = std::fs::File::open(&src_path).map_err(io_err("opening", &src_path))?;
    let parquet_err = |source| ExportError::Parquet {
        path: src_path.clone(),
        source,
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(64).build())
        .map_err(parquet_err)?;

    let dest = dir.join(file);
    let (tmp, handle) =
        crate::util::create_temp_beside(&dest).map_err(io_err("creating", &dest))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_created_by(crate::sink::shard::created_by())
        .set_compression(parquet::basic::Compression::ZSTD(
            parquet::basic::ZstdLevel::try_new(3).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new(
                "hindsight.export.format".to_string(),
                opts.format.as_str().to_string(),
            ),
            parquet::file::metadata::KeyValue::new(
                "hindsight.export.source_shard".to_string(),
                format!("{source_file} {source_sha256}"),
            ),
        ]))
        .build();
    let write_err = |source| ExportError::Parquet {
        path: dest.clone(),
        source,
    };
    let result = (|| {
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::io::BufWriter::new(handle),
            axolotl::schema(),
            Some(props),
        )
        .map_err(write_err)?;
        let mut shard = ExportedShard {
            file: file.to_string(),
            source_file: source_file.to_string(),
            source_sha256: source_sha256.to_string(),
            rows: 0,
            input_tokens: 0,
            trainable_tokens: 0,
            truncated: 0,
            skipped: BTreeMap::new(),
            bytes: 0,
            sha256: String::new(),
        };
        let mut skipped_rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            let rows: Vec<OutputRow> = crate::sink::batch_to_rows(&batch)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let reason = match opts.min_relevance {
                    Some(min) if row.relevance.is_some_and(|r| r < min) => {
                        Some("below_min_relevance")
                    }
                    _ => match axolotl::convert(row, &opts.axolotl)? {
                        Ok(a) => {
                            shard.rows += 1;
                            shard.input_tokens += a.input_ids.len() as u64;
                            shard.trainable_tokens += a.trainable_tokens() as u64;
                            shard.truncated += u64::from(a.truncated);
                            out.push(a);
                            None
                        }
                        Err(skip) => Some(skip.as_str()),
                    },
                };
                if let Some(reason) = reason {
                    *shard.skipped.entry(reason.to_string()).or_default() += 1;
                    skipped_rows.push(SkippedRow {
                        sample_id: row.sample_id.clone(),
                        source_file: source_file.to_string(),
                        reason: reason.to_string(),
                    });
                }
            }
            if !out.is_empty() {
                w.write(&axolotl::to_batch(&out)?).map_err(write_err)?;
            }
        }
        let mut inner = w.into_inner().map_err(write_err)?;
        inner.flush().map_err(io_err("writing", &tmp))?;
        inner
            .into_inner()
            .map_err(|e| io_err("writing", &tmp)(e.into_error()))?
            .sync_all()
            .map_err(io_err("syncing", &tmp))?;
        std::fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
        shard.bytes = std::fs::metadata(&dest)
            .map_err(io_err("reading", &dest))?
            .len();
        shard.sha256 = sha256_file(&dest)?;
        Ok(ShardRecord {
            options_sha256: String::new(),
            shard,
            skipped_rows,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The dataset card: `load_dataset(OUT)` reads exactly the shards; the body says how to train.
fn card(m: &ExportManifest) -> String {
    let t = &m.totals;
    let meta = &m.source["meta"];
    let mut s = String::new();
    s.push_str("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n");
    s.push_str("    path: \"part-*.parquet\"\n");
    s.push_str("tags:\n- self-distillation\n- knowledge-distillation\n- hindsight\n---\n\n");
    s.push_str("# Knowledge-distillation rows for Axolotl (exported by hindsight)\n\n");
    s.push_str(
        "Pre-tokenized rows for Axolotl's KD plugin (`axolotl.integrations.kd`): `input_ids`, \
         `attention_mask`, `labels` (-100 outside the response) and, per position `j`, the \
         teacher's top-k over `input_ids[j+1]` in `target_token_ids` / `target_logprobs` / \
         `target_mask` (rows before the response and the last row are padding with mask 0). \
         hindsight's docs/CONTRACT.md (\"Axolotl KD export\") has a worked example.\n\n",
    );
    let rows = [
        (
            "source dataset",
            format!("`{}`", m.source["dataset"].as_str().unwrap_or("")),
        ),
        (
            "source manifest sha256",
            format!("`{}`", m.source["manifest_sha256"].as_str().unwrap_or("")),
        ),
        (
            "model",
            format!("`{}`", meta["model_id"].as_str().unwrap_or("")),
        ),
        (
            "weights sha256",
            format!("`{}`", meta["weights_sha256"].as_str().unwrap_or("")),
        ),
        (
            "tokenizer sha256",
            format!("`{}`", meta["tokenizer_sha256"].as_str().unwrap_or("")),
        ),
        ("support", m.options.axolotl.support.as_str().to_string()),
        (
            "teacher log-probs renormalised over the top-k",
            m.options.axolotl.normalize_topk.to_string(),
        ),
        (
            "max length",
            m.options
                .axolotl
                .max_len
                .map_or("none".into(), |v| v.to_string()),
        ),
        (
            "min relevance",
            m.options
                .min_relevance
                .map_or("none".into(), |v| v.to_string()),
        ),
        ("rows", format!("{} of {}", t.rows, t.rows_in)),
        ("trainable tokens", t.trainable_tokens.to_string()),
    ];
    s.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str(
        "\n## Training with Axolotl\n\n```yaml\nplugins:\n  - axolotl.integrations.kd.KDPlugin\n\
         kd_trainer: true\nkd_ce_alpha: 0.0\nkd_alpha: 1.0\nkd_temperature: 1.0\nkd_beta: 0.0\n\
         kd_normalize_topk: true\ndatasets:\n  - path: path/to/this/directory\n    type:\n\
         skip_prepare_dataset: true\nremove_unused_columns: false\nsample_packing: false\n```\n",
    );
    s
}
