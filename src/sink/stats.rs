//! `stats`: what is in a written dataset (rows, tokens, bytes per response token, relevance and
//! length distributions, counts by kind and template) plus the run statistics from the manifest.
//! Reads only the few scalar columns it needs, one row group at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, DictionaryArray, Float32Array, Int32Array, LargeListArray, RecordBatch, StringArray,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

use super::error::{SinkError, SinkResult};
use super::manifest::{Manifest, MANIFEST_FILE};

/// Order statistics of one quantity (nearest-rank quantiles).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarizes `values` (non-finite values are left out; an empty input gives all zeros).
    pub fn of(mut values: Vec<f64>) -> Self {
        values.retain(|x| x.is_finite());
        if values.is_empty() {
            return Summary::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        let n = values.len();
        let q = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Summary {
            count: n as u64,
            min: values[0],
            p10: q(0.10),
            median: q(0.50),
            p90: q(0.90),
            max: values[n - 1],
            mean: values.iter().sum::<f64>() / n as f64,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "min {:.4}  p10 {:.4}  median {:.4}  p90 {:.4}  max {:.4}  mean {:.4}",
            self.min, self.p10, self.median, self.p90, self.max, self.mean
        )
    }
}

/// The `relevance` of every row dropped under the threshold, for the report's histogram of
/// dropped vs kept rows (kept rows are in the shards). Bounded: beyond
/// [`DroppedRelevance::MAX_VALUES`] rows, evenly spaced order statistics stand for the rest,
/// each `count / values.len()` rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DroppedRelevance {
    /// Rows dropped as `low_relevance`.
    pub count: u64,
    /// Their values, ascending (all of them, or evenly spaced order statistics).
    pub values: Vec<f32>,
}

impl DroppedRelevance {
    /// Most values kept in the manifest.
    pub const MAX_VALUES: usize = 4096;

    /// Summarises the dropped values (any order).
    pub fn of(mut values: Vec<f32>) -> Self {
        values.retain(|x| x.is_finite());
        values.sort_by(f32::total_cmp);
        let count = values.len() as u64;
        if values.len() > Self::MAX_VALUES {
            let n = values.len();
            values = (0..Self::MAX_VALUES)
                .map(|i| values[i * (n - 1) / (Self::MAX_VALUES - 1)])
                .collect();
        }
        DroppedRelevance { count, values }
    }
}

/// What a dataset holds, for humans (`Display`) and scripts (serde).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// The dataset directory.
    pub dir: PathBuf,
    /// Model that produced it.
    pub model_id: String,
    /// Top-k width K.
    pub top_k: usize,
    /// Definition of `relevance`.
    pub relevance_method: String,
    /// Shards listed in the manifest.
    pub shards: u64,
    /// Rows read.
    pub rows: u64,
    /// Σ T.
    pub response_tokens: u64,
    /// Σ len(prompt_ids) (student contexts).
    pub prompt_tokens: u64,
    /// Σ len(teacher_prompt_ids).
    pub teacher_prompt_tokens: u64,
    /// Bytes of the shard files.
    pub shard_bytes: u64,
    /// Bytes of shards plus manifest.
    pub bytes_on_disk: u64,
    /// Shard bytes per response token (the storage cost of the per-token columns).
    pub bytes_per_response_token: f64,
    /// `relevance` distribution.
    pub relevance: Summary,
    /// `relevance_kl` distribution.
    pub relevance_kl: Summary,
    /// The other per-method columns (`relevance_control_kl`, `relevance_pmi`, ...): the
    /// distribution of their non-null values (`count` says how many rows have one).
    pub relevance_by_method: BTreeMap<String, Summary>,
    /// Response length (T) distribution.
    pub completion_tokens: Summary,
    /// Student prompt length distribution.
    pub prompt_length: Summary,
    /// Rows per `source_kind`.
    pub by_source_kind: BTreeMap<String, u64>,
    /// Rows per `teacher_template`.
    pub by_template: BTreeMap<String, u64>,
    /// Run statistics recorded by the pipeline in the manifest.
    pub run: serde_json::Value,
}

const STATS_COLUMNS: [&str; 11] = [
    "source_kind",
    "teacher_template",
    "prompt_ids",
    "teacher_prompt_ids",
    "num_completion_tokens",
    "relevance_kl",
    "relevance",
    "relevance_control_kl",
    "relevance_pmi",
    "relevance_pmi_mean",
    "relevance_pmi_answer",
];

/// The per-method columns summarised in [`DatasetStats::relevance_by_method`].
const METHOD_COLUMNS: [&str; 4] = [
    "relevance_control_kl",
    "relevance_pmi",
    "relevance_pmi_mean",
    "relevance_pmi_answer",
];

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> SinkResult<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| SinkError::column(name, "missing or of an unexpected type"))
}

fn list_lengths(b: &RecordBatch, name: &str) -> SinkResult<Vec<u64>> {
    let a = col::<LargeListArray>(b, name)?;
    Ok(a.offsets()
        .windows(2)
        .map(|w| (w[1] - w[0]) as u64)
        .collect())
}

/// Reads the manifest and the scalar columns of every shard of the dataset in `dir`. Fails on
/// an unreadable manifest or shard (run `validate` for a full diagnosis).
pub fn dataset_stats(dir: &Path) -> SinkResult<DatasetStats> {
    let m = Manifest::read(dir)?;
    let manifest_bytes = std::fs::metadata(dir.join(MANIFEST_FILE))
        .map_err(|e| SinkError::io("reading", dir.join(MANIFEST_FILE), e))?
        .len();
    let mut s = DatasetStats {
        dir: dir.to_path_buf(),
        model_id: m.dataset.model_id.clone(),
        top_k: m.dataset.top_k,
        relevance_method: m.dataset.relevance_method.clone(),
        shards: m.shards.len() as u64,
        run: m.stats.clone(),
        ..Default::default()
    };
    let (mut rel, mut rel_kl, mut lens, mut plens) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut by_method: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for shard in &m.shards {
        let path = dir.join(&shard.file);
        let file = File::open(&path).map_err(|e| SinkError::io("opening", &path, e))?;
        s.shard_bytes += file
            .metadata()
            .map_err(|e| SinkError::io("reading", &path, e))?
            .len();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| SinkError::parquet(&path, e))?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), STATS_COLUMNS);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(1024)
            .build()
            .map_err(|e| SinkError::parquet(&path, e))?;
        for batch in reader {
            let b = batch?;
            s.rows += b.num_rows() as u64;
            let kinds = col::<DictionaryArray<Int32Type>>(&b, "source_kind")?;
            let kind_values = kinds
                .values()
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    SinkError::column("source_kind", "dictionary values are not utf8")
                })?;
            for key in kinds.keys().iter().flatten() {
                let v = usize::try_from(key)
                    .ok()
                    .filter(|&k| k < kind_values.len())
                    .map_or("?", |k| kind_values.value(k));
                *s.by_source_kind.entry(v.to_string()).or_default() += 1;
            }
            let templates = col::<StringArray>(&b, "teacher_template")?;
            for t in templates.iter().flatten() {
                *s.by_template.entry(t.to_string()).or_default() += 1;
            }
            let p = list_lengths(&b, "prompt_ids")?;
            s.prompt_tokens += p.iter().sum::<u64>();
            plens.extend(p.iter().map(|&x| x as f64));
            s.teacher_prompt_tokens += list_lengths(&b, "teacher_prompt_ids")?.iter().sum::<u64>();
            let n = col::<Int32Array>(&b, "num_completion_tokens")?;
            for x in n.iter().flatten() {
                s.response_tokens += x.max(0) as u64;
                lens.push(x as f64);
            }
            rel.extend(
                col::<Float32Array>(&b, "relevance")?
                    .iter()
                    .flatten()
                    .map(f64::from),
            );
            rel_kl.extend(
                col::<Float32Array>(&b, "relevance_kl")?
                    .iter()
                    .flatten()
                    .map(f64::from),
            );
            for name in METHOD_COLUMNS {
                by_method.entry(name).or_default().extend(
                    col::<Float32Array>(&b, name)?
                        .iter()
                        .flatten()
                        .map(f64::from),
                );
            }
        }
    }
    s.bytes_on_disk = s.shard_bytes + manifest_bytes;
    s.bytes_per_response_token = if s.response_tokens > 0 {
        s.shard_bytes as f64 / s.response_tokens as f64
    } else {
        0.0
    };
    s.relevance = Summary::of(rel);
    s.relevance_kl = Summary::of(rel_kl);
    s.relevance_by_method = by_method
        .into_iter()
        .map(|(k, v)| (k.to_string(), Summary::of(v)))
        .collect();
    s.completion_tokens = Summary::of(lens);
    s.prompt_length = Summary::of(plens);
    Ok(s)
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dataset {}", self.dir.display())?;
        writeln!(
            f,
            "  model {}  K={}  relevance={}",
            self.model_id, self.top_k, self.relevance_method
        )?;
        writeln!(f, "  shards {}  rows {}", self.shards, self.rows)?;
        writeln!(
            f,
            "  tokens: response {}  prompt {}  teacher prompt {}",
            self.response_tokens, self.prompt_tokens, self.teacher_prompt_tokens
        )?;
        writeln!(
            f,
            "  bytes: shards {}  on disk {}  per response token {:.1}",
            self.shard_bytes, self.bytes_on_disk, self.bytes_per_response_token
        )?;
        writeln!(f, "  relevance     {}", self.relevance)?;
        writeln!(f, "  relevance_kl  {}", self.relevance_kl)?;
        for (name, summary) in &self.relevance_by_method {
            if summary.count > 0 {
                writeln!(f, "  {name}  {summary}")?;
            }
        }
        writeln!(f, "  response len  {}", self.completion_tokens)?;
        writeln!(f, "  prompt len    {}", self.prompt_length)?;
        let counts = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "  by source_kind: {}", counts(&self.by_source_kind))?;
        writeln!(f, "  by template:    {}", counts(&self.by_template))?;
        match &self.run {
            serde_json::Value::Object(m) if !m.is_empty() => {
                writeln!(f, "  run:")?;
                for (k, v) in m {
                    match serde_json::from_value::<DroppedRelevance>(v.clone()) {
                        // Up to 4096 values: summarised here, drawn by the report.
                        Ok(d) if k == "dropped_relevance" => {
                            let values = d.values.iter().map(|&x| f64::from(x)).collect();
                            writeln!(f, "    {k}: {} rows, {}", d.count, Summary::of(values))?;
                        }
                        _ => writeln!(f, "    {k}: {v}")?,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::DroppedRelevance;

    #[test]
    fn dropped_relevance_keeps_all_values_or_evenly_spaced_order_statistics() {
        let small = DroppedRelevance::of(vec![3.0, f32::NAN, -1.0, 2.0]);
        assert_eq!(small.count, 3);
        assert_eq!(small.values, [-1.0, 2.0, 3.0]);
        let n = 3 * DroppedRelevance::MAX_VALUES + 7;
        let big = DroppedRelevance::of((0..n).rev().map(|i| i as f32).collect());
        assert_eq!(big.count, n as u64);
        assert_eq!(big.values.len(), DroppedRelevance::MAX_VALUES);
        // The smallest and largest values are kept; the rest are evenly spaced ranks.
        assert_eq!(big.values[0], 0.0);
        assert_eq!(big.values[DroppedRelevance::MAX_VALUES - 1], (n - 1) as f32);
        let mid = big.values[DroppedRelevance::MAX_VALUES / 2];
        assert!((mid - (n / 2) as f32).abs() <= 3.0, "{mid}");
    }
}
