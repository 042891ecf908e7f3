//! What a written dataset looks like, for people deciding whether to trust it: the stage funnel
//! with drop reasons and examples, distributions, the top-k coverage of the exact KL, the
//! relevance self-check, and token-level heatmaps of sample rows. [`build`] gathers it (one pass
//! over the shards, bounded memory); [`html::render`] and [`ansi`] draw it.

pub mod ansi;
pub mod html;
pub mod relevance_eval;
pub mod tokens;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use crate::score::logprobs::kl_topk_tail;
use crate::sink::{batch_to_rows, Manifest, OutputRow, SinkError};
use crate::tokenize::Tokenizer;
use tokens::{token_views, TokenView};

mod funnel;
mod histogram;
mod scan;
use funnel::*;
pub use histogram::*;
use scan::*;

/// Errors of the dataset views.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Parquet {
        path: std::path::PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("no row with sample_id {0} in this dataset")]
    NoSuchSample(String),
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this module.
pub type ReportResult<T> = std::result::Result<T, ReportError>;

/// What to include.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Rows shown per group (highest, lowest and random relevance).
    pub samples_per_group: usize,
    /// Teacher alternatives shown per token.
    pub alternatives: usize,
    /// Examples shown per drop reason.
    pub examples_per_reason: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            samples_per_group: 3,
            alternatives: 5,
            examples_per_reason: 3,
        }
    }
}

/// Everything the report shows; serialised into the HTML page as one JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub dataset: DatasetSummary,
    pub funnel: Vec<FunnelStep>,
    pub histograms: Vec<Histogram>,
    pub coverage: Option<Coverage>,
    pub samples: Vec<SampleView>,
    /// The output of `eval-relevance`, when one is given or found next to the dataset.
    pub relevance_eval: Option<serde_json::Value>,
    /// Why token texts are missing, when no matching tokenizer was available.
    pub tokenizer_note: Option<String>,
}

/// Identity and totals of the dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub dir: String,
    pub model_id: String,
    pub top_k: usize,
    pub relevance_method: String,
    pub relevance_threshold: Option<f64>,
    pub rows: u64,
    pub response_tokens: u64,
    pub shards: usize,
    pub bytes: u64,
}

/// One stage of the funnel and what was dropped on the way to it.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelStep {
    /// Stable key (`records_read`, `rows_written`, ...), used as the element id in the page.
    pub key: String,
    pub label: String,
    pub count: u64,
    /// Drops between the previous stage and this one.
    pub drops: Vec<DropReason>,
}

/// A reason things were dropped, with examples.
#[derive(Debug, Clone, Serialize)]
pub struct DropReason {
    /// `filtered` or `quarantined`.
    pub kind: String,
    pub reason: String,
    pub count: u64,
    pub examples: Vec<Example>,
}

/// Where a dropped item came from and, when known, what it looked like.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub location: String,
    pub detail: String,
}

/// How much of the exact KL(teacher ‖ student) the stored top-k + tail representation keeps, for
/// several k ≤ K: users pick K from this.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Response tokens summed over.
    pub tokens: u64,
    /// Σ exact KL over the full vocabulary (recorded by the scorer).
    pub exact_kl: f64,
    /// (k, share of the exact KL captured by the first k teacher entries + one tail bucket).
    pub by_k: Vec<(usize, f64)>,
}

/// One sample row drawn as a heatmap.
#[derive(Debug, Clone, Serialize)]
pub struct SampleView {
    /// `highest`, `lowest` or `random` relevance.
    pub group: String,
    pub sample_id: String,
    pub source_kind: String,
    pub source: String,
    pub teacher_template: String,
    /// Null where the dataset's method does not apply to the row.
    pub relevance: Option<f32>,
    pub relevance_kl: f32,
    /// The student's last message (what the response answers).
    pub last_user: String,
    pub privileged_context: String,
    pub tokens: Vec<TokenView>,
}

/// Reads a dataset and gathers the report. `tokenizer` gives token texts (ids are shown without
/// one); `relevance_eval` is the JSON written by `eval-relevance`.
pub fn build(
    dir: &Path,
    tokenizer: Option<&Tokenizer>,
    relevance_eval: Option<serde_json::Value>,
    opts: &ReportOptions,
) -> ReportResult<ReportData> {
    let manifest = Manifest::read(dir)?;
    let run_report = read_json_opt(&dir.join("run_report.json"))?;
    let quarantine = quarantine_examples(&dir.join("quarantine.jsonl"), opts.examples_per_reason)?;
    let funnel = funnel(&manifest, run_report.as_ref(), &quarantine, opts);

    let mut scan = Scan::new(opts.samples_per_group, manifest.dataset.top_k);
    for_each_batch(dir, &manifest, |rows| {
        for row in rows {
            scan.add(row);
        }
        true
    })?;
    let coverage = manifest
        .stats
        .get("kl")
        .and_then(|kl| Some((kl.get("tokens")?.as_u64()?, kl.get("exact")?.as_f64()?)))
        .filter(|&(tokens, _)| tokens > 0)
        .map(|(tokens, exact)| Coverage {
            tokens,
            exact_kl: exact,
            by_k: scan
                .coverage_ks
                .iter()
                .zip(&scan.coverage_sums)
                .map(|(&k, &sum)| (k, if exact > 0.0 { sum / exact } else { 1.0 }))
                .collect(),
        });

    let samples = scan
        .chosen()
        .into_iter()
        .map(|(group, row)| SampleView {
            group: group.to_string(),
            tokens: token_views(tokenizer, &row, opts.alternatives),
            sample_id: row.sample_id.clone(),
            source_kind: row.source_kind.clone(),
            source: format!("{}#{}", row.source_uri, row.source_record),
            teacher_template: row.teacher_template.clone(),
            relevance: row.relevance,
            relevance_kl: row.relevance_kl,
            last_user: crate::episode::last_user(&row.prompt).to_string(),
            privileged_context: row.privileged_context.clone(),
        })
        .collect();

    let d = &manifest.dataset;
    // Datasets written before the dropped values were recorded show kept rows only.
    let dropped: crate::sink::DroppedRelevance = manifest
        .stats
        .get("dropped_relevance")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    Ok(ReportData {
        dataset: DatasetSummary {
            dir: dir.display().to_string(),
            model_id: d.model_id.clone(),
            top_k: d.top_k,
            relevance_method: d.relevance_method.clone(),
            relevance_threshold: d.relevance_threshold,
            rows: manifest.totals.rows,
            response_tokens: manifest.totals.response_tokens,
            shards: manifest.shards.len(),
            bytes: manifest.totals.bytes,
        },
        funnel,
        histograms: scan.histograms(&dropped, d.relevance_threshold),
        coverage,
        samples,
        relevance_eval,
        tokenizer_note: None,
    })
}

/// Finds one row by `sample_id`, reading shards until it appears.
pub fn find_row(dir: &Path, sample_id: &str) -> ReportResult<OutputRow> {
    let manifest = Manifest::read(dir)?;
    let mut found = None;
    for_each_batch(dir, &manifest, |rows| {
        found = rows.into_iter().find(|r| r.sample_id == sample_id);
        found.is_none()
    })?;
    found.ok_or_else(|| ReportError::NoSuchSample(sample_id.to_string()))
}

/// Decodes the manifest's shards batch by batch (bounded memory) until `f` returns false.
fn for_each_batch(
    dir: &Path,
    manifest: &Manifest,
    mut f: impl FnMut(Vec<OutputRow>) -> bool,
) -> ReportResult<()> {
    for shard in &manifest.shards {
        let path = dir.join(&shard.file);
        let parquet_err = |source| ReportError::Parquet {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(|source| ReportError::Io {
            action: "opening",
            path: path.clone(),
            source,
        })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(256).build())
            .map_err(parquet_err)?;
        for batch in reader {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            if !f(batch_to_rows(&batch)?) {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn read_json_opt(path: &Path) -> ReportResult<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ReportError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReportError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}
