//! Dataset-level metadata: what produced the data (model, tokenizer, template, K, dtype,
//! relevance definition, resolved config). Written into every shard's Parquet key-value
//! metadata and into the manifest, so a trainer can refuse data made by another model or
//! tokenizer without reading a row.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encoding::Encoding;
use super::schema::{Layout, SCHEMA_VERSION};
use crate::record::ModelInfo;
use crate::record::RelevanceMethod;

/// Metadata every shard and the manifest carry (`docs/CONTRACT.md`, "File metadata").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Contract version of the rows.
    pub schema_version: u16,
    /// Model name (GGUF `general.name` or file stem).
    pub model_id: String,
    /// sha256 of the weights file.
    pub weights_sha256: String,
    /// Tokenizer fingerprint (sha256).
    pub tokenizer_sha256: String,
    /// sha256 of the chat template text.
    pub chat_template_sha256: String,
    /// Vocabulary size; every token id in the data is below it.
    pub vocab_size: usize,
    /// Width K of the teacher's top-k columns.
    pub top_k: usize,
    /// Width K_s of the student-side columns (0: they are null).
    #[serde(default)]
    pub student_top_k: usize,
    /// How top-k log-probs are stored (`lossless`, `compact`).
    #[serde(default)]
    pub encoding: Encoding,
    /// `f32` or `quantized`.
    pub compute_dtype: String,
    /// Temperature of the stored log-probs (always 1.0: raw model distribution).
    pub teacher_temperature: f64,
    /// Definition of the `relevance` column (`kl`, `control_kl`).
    pub relevance_method: String,
    /// Rows with `relevance` below this were dropped (`None`: no relevance filter).
    pub relevance_threshold: Option<f64>,
    /// The resolved pipeline configuration (keys sorted).
    pub pipeline_config: serde_json::Value,
    /// sha256 of `pipeline_config` serialized compactly with sorted keys.
    pub pipeline_config_sha256: String,
    /// Version of hindsight that wrote the data.
    pub hindsight_version: String,
}

/// Returns `v` with every object's keys in sorted order, so its serialization (and hash) does
/// not depend on insertion order or on serde_json's `preserve_order` feature.
pub fn canonical_json(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), canonical_json(x));
                }
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(canonical_json).collect())
        }
        other => other.clone(),
    }
}

/// sha256 (hex) of the canonical compact serialization of a config.
pub fn config_sha256(config: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(canonical_json(config).to_string().as_bytes());
    hex::encode(h.finalize())
}

impl DatasetMeta {
    /// The shard limits the dataset was made with (`output.shard_max_rows` /
    /// `shard_max_bytes` of its config), for the steps that write shards without a pipeline
    /// file: finalize's dedup rewrites, compaction.
    pub fn shard_config(&self) -> super::ShardConfig {
        let out = &self.pipeline_config["output"];
        let mut cfg = super::ShardConfig::default();
        if let Some(n) = out["shard_max_rows"].as_u64() {
            cfg.max_rows = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = out["shard_max_bytes"].as_u64() {
            cfg.max_bytes = n;
        }
        cfg
    }

    /// Metadata for a run of `model` with top-k width `top_k`, relevance definition `relevance`
    /// (and its filter threshold) and the resolved pipeline `config`; fills in the schema
    /// version, temperature 1.0, the config hash and this crate's version.
    pub fn new(
        model: &ModelInfo,
        top_k: usize,
        relevance: RelevanceMethod,
        relevance_threshold: Option<f64>,
        config: &serde_json::Value,
    ) -> Self {
        let pipeline_config = canonical_json(config);
        DatasetMeta {
            schema_version: SCHEMA_VERSION,
            model_id: model.model_id.clone(),
            weights_sha256: model.weights_sha256.clone(),
            tokenizer_sha256: model.tokenizer_sha256.clone(),
            chat_template_sha256: model.chat_template_sha256.clone(),
            vocab_size: model.vocab_size,
            top_k,
            student_top_k: 0,
            encoding: Encoding::Lossless,
            compute_dtype: model.compute_dtype.clone(),
            teacher_temperature: 1.0,
            relevance_method: relevance.as_str().to_string(),
            relevance_threshold,
            pipeline_config_sha256: config_sha256(&pipeline_config),
            pipeline_config,
            hindsight_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The same metadata with student-side columns of width `student_top_k` and `encoding`.
    pub fn with_layout(mut self, student_top_k: usize, encoding: Encoding) -> Self {
        self.student_top_k = student_top_k;
        self.encoding = encoding;
        self
    }

    /// The column layout of the dataset's shards.
    pub fn layout(&self) -> Layout {
        Layout {
            top_k: self.top_k,
            student_top_k: self.student_top_k,
            encoding: self.encoding,
        }
    }

    /// The Parquet key-value pairs of a shard, in a fixed order. Strings are stored as is; every
    /// other value as its JSON text (`20`, `1.0`, `null`, the config object).
    pub fn key_values(&self) -> Vec<(String, String)> {
        let json = |v: serde_json::Value| v.to_string();
        vec![
            ("schema_version", self.schema_version.to_string()),
            ("model_id", self.model_id.clone()),
            ("weights_sha256", self.weights_sha256.clone()),
            ("tokenizer_sha256", self.tokenizer_sha256.clone()),
            ("chat_template_sha256", self.chat_template_sha256.clone()),
            ("vocab_size", self.vocab_size.to_string()),
            ("top_k", self.top_k.to_string()),
            ("student_top_k", self.student_top_k.to_string()),
            ("encoding", self.encoding.as_str().to_string()),
            ("compute_dtype", self.compute_dtype.clone()),
            ("teacher_temperature", json(self.teacher_temperature.into())),
            ("relevance_method", self.relevance_method.clone()),
            (
                "relevance_threshold",
                json(
                    self.relevance_threshold
                        .map_or(serde_json::Value::Null, Into::into),
                ),
            ),
            (
                "pipeline_config",
                canonical_json(&self.pipeline_config).to_string(),
            ),
            (
                "pipeline_config_sha256",
                self.pipeline_config_sha256.clone(),
            ),
            ("hindsight_version", self.hindsight_version.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
