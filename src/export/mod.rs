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

mod files;
mod shard;
use files::*;
use shard::*;

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
