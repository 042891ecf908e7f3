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

/// A fixed-width histogram; values outside `[lo, hi]` are counted in the end bins.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub key: String,
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    pub n: u64,
    pub mean: f64,
    /// Values clipped into the end bins.
    pub clipped: u64,
    /// Rows dropped by the relevance filter, in the same bins (the relevance histogram only:
    /// kept rows are in `counts`, dropped ones here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Vec<u64>>,
    /// The dataset's relevance threshold, drawn as a line (the relevance histogram only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

impl Histogram {
    fn new(key: &str, label: &str, lo: f64, hi: f64, bins: usize) -> Self {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Self {
            key: key.into(),
            label: label.into(),
            lo,
            hi,
            counts: vec![0; bins.max(1)],
            n: 0,
            mean: 0.0,
            clipped: 0,
            dropped: None,
            threshold: None,
        }
    }

    /// The bin of `x` (clamped into the end bins).
    fn bin(&self, x: f64) -> usize {
        let bins = self.counts.len();
        let pos = (x - self.lo) / (self.hi - self.lo) * bins as f64;
        (pos.floor().max(0.0) as usize).min(bins - 1)
    }

    /// The relevance of kept rows (`kept`) against the rows the filter dropped: one range over
    /// both, kept rows in `counts`, dropped ones in `dropped` (each stored value stands for
    /// `count / values.len()` rows, see [`crate::sink::DroppedRelevance`]).
    fn kept_vs_dropped(
        kept: &[f64],
        dropped: &crate::sink::DroppedRelevance,
        threshold: Option<f64>,
        bins: usize,
    ) -> Self {
        let d: Vec<f64> = dropped.values.iter().map(|&x| f64::from(x)).collect();
        let all = kept.iter().chain(&d).copied().chain(threshold);
        let lo = all.clone().fold(f64::INFINITY, f64::min);
        let hi = all.fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let mut h = Self::new(
            "relevance",
            "relevance per row: kept and dropped by the filter",
            lo,
            hi,
            bins,
        );
        for &v in kept {
            h.add(v);
        }
        let weight = dropped.count as f64 / d.len().max(1) as f64;
        let mut sums = vec![0.0f64; h.counts.len()];
        for &v in &d {
            sums[h.bin(v)] += weight;
        }
        h.dropped = Some(sums.iter().map(|x| x.round() as u64).collect());
        h.threshold = threshold;
        h
    }

    fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.clipped += 1;
            return;
        }
        if x < self.lo || x > self.hi {
            self.clipped += 1;
        }
        let i = self.bin(x);
        self.counts[i] += 1;
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
    }

    fn of(key: &str, label: &str, values: &[f64], bins: usize) -> Self {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let mut h = Self::new(key, label, lo, hi, bins);
        for &v in values {
            h.add(v);
        }
        h
    }
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

/// First examples per quarantine reason, from `quarantine.jsonl`.
fn quarantine_examples(
    path: &Path,
    per_reason: usize,
) -> ReportResult<BTreeMap<String, Vec<Example>>> {
    let mut out: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(ReportError::Io {
                action: "opening",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| ReportError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let list = out.entry(s("reason")).or_default();
        if list.len() < per_reason {
            let record = v.get("record_index").and_then(|x| x.as_i64()).unwrap_or(-1);
            list.push(Example {
                location: format!("{}#{record}", s("source_uri")),
                detail: format!("{}\n{}", s("detail"), s("snippet")),
            });
        }
    }
    Ok(out)
}

fn counts_of(v: Option<&serde_json::Value>) -> BTreeMap<String, u64> {
    v.and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The stage funnel: the last run's ingest counts (every run re-reads all its inputs) and the
/// committed chunks' scoring counts (cumulative over runs).
fn funnel(
    manifest: &Manifest,
    run_report: Option<&serde_json::Value>,
    quarantine: &BTreeMap<String, Vec<Example>>,
    opts: &ReportOptions,
) -> Vec<FunnelStep> {
    let ingest = manifest
        .stats
        .get("ingest_last_run")
        .filter(|v| !v.is_null())
        .or_else(|| run_report.and_then(|r| r.get("ingest")));
    let get = |k: &str| {
        ingest
            .and_then(|i| i.get(k))
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    };
    let examples: BTreeMap<String, Vec<String>> = ingest
        .and_then(|i| i.get("filtered_examples"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let located = |reason: &str| -> Vec<Example> {
        examples
            .get(reason)
            .map(|v| {
                v.iter()
                    .take(opts.examples_per_reason)
                    .map(|l| Example {
                        location: l.clone(),
                        detail: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let filtered = |map: BTreeMap<String, u64>| -> Vec<DropReason> {
        map.into_iter()
            .map(|(reason, count)| DropReason {
                kind: "filtered".into(),
                examples: located(&reason),
                reason,
                count,
            })
            .collect()
    };
    let mut record_drops = filtered(counts_of(ingest.and_then(|i| i.get("records_filtered"))));
    for (reason, count) in counts_of(ingest.and_then(|i| i.get("records_quarantined"))) {
        record_drops.push(DropReason {
            kind: "quarantined".into(),
            examples: quarantine.get(&reason).cloned().unwrap_or_default(),
            reason,
            count,
        });
    }
    let episodes = counts_of(manifest.stats.get("episodes"));
    let ep = |k: &str| episodes.get(k).copied().unwrap_or(0);
    let low_relevance: Vec<Example> = run_report
        .and_then(|r| r.get("low_relevance_examples"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .take(opts.examples_per_reason)
                .map(|x| {
                    let s = |k: &str| x.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let record = x
                        .get("source_record")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(-1);
                    let rel = x
                        .get("relevance")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(f64::NAN);
                    Example {
                        location: format!("{}#{record}", s("source_uri")),
                        detail: format!("relevance {rel:.4}: {}", s("privileged_context")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (mut scoring_drops, mut row_drops) = (Vec::new(), Vec::new());
    for (key, count) in &episodes {
        let Some(reason) = key.strip_prefix("filtered:") else {
            continue;
        };
        let d = DropReason {
            kind: "filtered".into(),
            reason: reason.to_string(),
            count: *count,
            examples: if reason == "low_relevance" {
                low_relevance.clone()
            } else {
                Vec::new()
            },
        };
        if reason == "low_relevance" || reason == "duplicate_across_runs" {
            row_drops.push(d);
        } else {
            scoring_drops.push(d);
        }
    }
    let step = |key: &str, label: &str, count: u64, drops: Vec<DropReason>| FunnelStep {
        key: key.into(),
        label: label.into(),
        count,
        drops,
    };
    let mut steps = vec![
        step(
            "records_read",
            "records read",
            get("records_read"),
            Vec::new(),
        ),
        step(
            "records_with_episodes",
            "records with episodes",
            get("records_with_episodes"),
            record_drops,
        ),
        step(
            "episodes_built",
            "episodes built",
            get("episodes_built"),
            Vec::new(),
        ),
        step(
            "episodes_emitted",
            "episodes past prefilters",
            get("episodes_emitted"),
            filtered(counts_of(ingest.and_then(|i| i.get("episodes_filtered")))),
        ),
    ];
    if ep("rollouts") > 0 {
        steps.push(step(
            "rollouts",
            "rollout samples",
            ep("rollouts"),
            Vec::new(),
        ));
    }
    steps.push(step(
        "episodes_scored",
        "episodes scored",
        ep("episodes_scored"),
        scoring_drops,
    ));
    steps.push(step(
        "rows_written",
        "rows kept",
        manifest.totals.rows,
        row_drops,
    ));
    steps
}

/// Streaming accumulation over all rows: histograms, coverage sums and the sample choice.
struct Scan {
    per_group: usize,
    relevance: Vec<f64>,
    lengths: Vec<f64>,
    prompt_lengths: Vec<f64>,
    advantages: Histogram,
    coverage_ks: Vec<usize>,
    coverage_sums: Vec<f64>,
    /// Rows sorted by relevance, highest first (at most `per_group`).
    highest: Vec<OutputRow>,
    lowest: Vec<OutputRow>,
    /// Rows with the smallest hash of their sample_id: a deterministic "random" pick.
    random: Vec<(u64, OutputRow)>,
}

impl Scan {
    fn new(per_group: usize, k: usize) -> Self {
        let mut ks: Vec<usize> = [1, 2, 5, 10, 20, 50, 100]
            .into_iter()
            .filter(|&x| x < k)
            .collect();
        if k > 0 {
            ks.push(k);
        }
        Self {
            per_group,
            relevance: Vec::new(),
            lengths: Vec::new(),
            prompt_lengths: Vec::new(),
            advantages: Histogram::new("advantages", "per-token advantage (nats)", -8.0, 8.0, 32),
            coverage_sums: vec![0.0; ks.len()],
            coverage_ks: ks,
            highest: Vec::new(),
            lowest: Vec::new(),
            random: Vec::new(),
        }
    }

    fn add(&mut self, row: OutputRow) {
        if let Some(r) = row.relevance {
            self.relevance.push(f64::from(r));
        }
        self.lengths.push(f64::from(row.num_completion_tokens));
        self.prompt_lengths.push(row.prompt_ids.len() as f64);
        for &a in &row.advantages {
            self.advantages.add(f64::from(a));
        }
        let k = row.k;
        // The coverage needs the student's log-probs at the teacher's top-k (not stored in the
        // compact encoding).
        if let (true, Some(student_topk)) = (k > 0, row.student_topk_logprobs.as_deref()) {
            let mut lp = Vec::with_capacity(k);
            let mut lq = Vec::with_capacity(k);
            let teacher = row.teacher_topk_logprobs.chunks_exact(k);
            let student = student_topk.chunks_exact(k);
            for (tp, sp) in teacher.zip(student) {
                lp.clear();
                lq.clear();
                lp.extend(tp.iter().map(|&x| f64::from(x)));
                lq.extend(sp.iter().map(|&x| f64::from(x)));
                for (i, &kk) in self.coverage_ks.iter().enumerate() {
                    let kk = kk.min(k);
                    self.coverage_sums[i] += kl_topk_tail(&lp[..kk], &lq[..kk]);
                }
            }
        }
        self.choose(row);
    }

    fn choose(&mut self, row: OutputRow) {
        let n = self.per_group;
        if n == 0 {
            return;
        }
        // Rows without a relevance (the method does not apply) are only drawn at random.
        let ranked = row.relevance.is_some();
        // Ties are broken by sample_id so the choice does not depend on shard order.
        let higher = |a: &OutputRow, b: &OutputRow| {
            a.relevance > b.relevance || (a.relevance == b.relevance && a.sample_id < b.sample_id)
        };
        let pos = self
            .highest
            .iter()
            .position(|r| higher(&row, r))
            .unwrap_or(self.highest.len());
        if ranked && pos < n {
            self.highest.insert(pos, row.clone());
            self.highest.truncate(n);
        }
        let pos = self
            .lowest
            .iter()
            .position(|r| higher(r, &row))
            .unwrap_or(self.lowest.len());
        if ranked && pos < n {
            self.lowest.insert(pos, row.clone());
            self.lowest.truncate(n);
        }
        let h = xxh3_64(row.sample_id.as_bytes());
        let pos = self
            .random
            .iter()
            .position(|(x, _)| h < *x)
            .unwrap_or(self.random.len());
        // Keep extra candidates: rows already shown as highest/lowest are skipped at the end.
        if pos < 3 * n {
            self.random.insert(pos, (h, row));
            self.random.truncate(3 * n);
        }
    }

    fn chosen(&self) -> Vec<(&'static str, OutputRow)> {
        let mut out: Vec<(&'static str, OutputRow)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &self.highest {
            if seen.insert(r.sample_id.clone()) {
                out.push(("highest", r.clone()));
            }
        }
        for r in &self.lowest {
            if seen.insert(r.sample_id.clone()) {
                out.push(("lowest", r.clone()));
            }
        }
        let mut random = 0;
        for (_, r) in &self.random {
            if random < self.per_group && seen.insert(r.sample_id.clone()) {
                out.push(("random", r.clone()));
                random += 1;
            }
        }
        out
    }

    fn histograms(
        &self,
        dropped: &crate::sink::DroppedRelevance,
        threshold: Option<f64>,
    ) -> Vec<Histogram> {
        vec![
            Histogram::kept_vs_dropped(&self.relevance, dropped, threshold, 24),
            self.advantages.clone(),
            Histogram::of(
                "completion_tokens",
                "response length (tokens)",
                &self.lengths,
                24,
            ),
            Histogram::of(
                "prompt_tokens",
                "student prompt length (tokens)",
                &self.prompt_lengths,
                24,
            ),
        ]
    }
}
