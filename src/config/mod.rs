//! Pipeline configuration: a TOML file (see `pipelines/`) resolved into typed, validated
//! settings, plus its fingerprint. The resolved config (after `--set` overrides and CLI flags) is
//! what gets hashed into every dataset, so two datasets with the same hash were made the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::episode::{EpisodeConfig, SourceFormat};
use crate::model::ComputeMode;
use crate::score::RelevanceMethod;
use crate::util::sha256_hex;

mod ops;
pub use ops::{DriftGuards, LineageConfig};

/// Errors in a pipeline file or an override; they name the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading pipeline {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pipeline {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--set {0}: expected key=value (e.g. --set score.top_k=10)")]
    BadOverride(String),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

/// The whole pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name (recorded in metadata).
    pub name: String,
    pub input: InputConfig,
    #[serde(default)]
    pub episode: EpisodeConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub score: ScoreConfig,
    /// Sampling for episodes whose response must come from the student (demonstrations).
    #[serde(default)]
    pub rollout: crate::model::generate::GenerationConfig,
    /// How the output contract stores its values.
    #[serde(default)]
    pub contract: ContractConfig,
    pub output: OutputConfig,
    /// Drift guards against the previous night (`[guards]`): they decide whether a night
    /// publishes, not what its rows are, so they are never serialized into the config's
    /// fingerprint or the dataset identity.
    #[serde(default, skip_serializing)]
    pub guards: DriftGuards,
    /// Where OpenLineage run events go (`[lineage]`); like the guards, not serialized.
    #[serde(default, skip_serializing)]
    pub lineage: LineageConfig,
}

/// How the output contract stores its values (docs/CONTRACT.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ContractConfig {
    /// `lossless` (float32 log-probs, the default) or `compact` (one-byte log-prob codes, no
    /// student log-prob snapshots; ≤ 100 B per response token at K=20).
    pub encoding: crate::sink::Encoding,
}

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Paths, directories or globs (relative paths resolve against the working directory).
    pub paths: Vec<String>,
    /// Force one format for every file (`wildchat`, `sharegpt`, `openai`, `demonstration`,
    /// `unit_test`, `hint`); `auto` detects per file.
    #[serde(default = "auto")]
    pub format: String,
    /// Records per resumable work chunk.
    #[serde(default = "default_chunk_records")]
    pub chunk_records: usize,
    /// SQL predicate over the input records' top-level columns (`run --where`), evaluated by
    /// DataFusion before episodes are built; records it does not select are filtered `where`.
    /// It changes which rows a dataset holds, so it is part of the dataset identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#where: Option<String>,
    /// A record (JSONL line, JSON array element, Parquet row) larger than this many bytes is
    /// quarantined `record_too_large` without being held whole; default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_bytes: Option<usize>,
    /// Largest compressed Parquet file or Parquet object spooled to a temporary file (Parquet
    /// needs random access); default 64 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spool_bytes: Option<u64>,
}

impl InputConfig {
    /// The reader limits this config asks for (defaults where it is silent).
    pub fn reader_options(&self) -> crate::ingest::ReaderOptions {
        let mut r = crate::ingest::ReaderOptions::default();
        if let Some(n) = self.max_record_bytes {
            r.max_record_bytes = n;
        }
        if let Some(n) = self.max_spool_bytes {
            r.max_spool_bytes = n;
        }
        r
    }
}

fn auto() -> String {
    "auto".into()
}
fn default_chunk_records() -> usize {
    256
}

/// Which model scores (and later rolls out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// GGUF file or Hugging Face directory; default: the embedded SmolLM2.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub compute: ComputeMode,
    /// Variables handed to the model's chat template, as transformers'
    /// `apply_chat_template(**kwargs)` takes them: `enable_thinking = false` renders Qwen3's
    /// non-thinking turns, `date_string` fixes Llama 3's date line. They change the tokens of
    /// every context, so they are part of the dataset identity (left out when empty, so
    /// datasets made before the setting existed keep their identity).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub chat_template_kwargs: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ModelConfig {
    /// Hands the configured template variables to a loaded model's tokenizer.
    pub fn configure(&self, m: &mut crate::model::LoadedModel) -> crate::error::Result<()> {
        m.tokenizer
            .set_template_vars(self.chat_template_kwargs.clone())
    }
}

/// Scoring settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    pub top_k: usize,
    /// Width K_s of the student-side columns (the student's own top-k and the teacher's
    /// log-probs there, for reverse-KL losses); 0 = off.
    pub student_top_k: usize,
    pub token_budget: usize,
    pub prefix_sharing: bool,
    pub relevance: RelevanceMethod,
    /// Response tokens, from the first, over which `relevance_control_kl` is measured (the
    /// control context is scored on those only); 0: the whole response, as datasets made
    /// before this setting did (0 is left out of the identity, so such datasets keep theirs).
    #[serde(skip_serializing_if = "is_zero")]
    pub control_tokens: usize,
    /// Feedback tokens, from the first, that the PMI probes score; 0: the whole feedback (left
    /// out of the identity, as `control_tokens`).
    #[serde(skip_serializing_if = "is_zero")]
    pub pmi_tokens: usize,
    /// Rows whose relevance is below this are dropped (counted, with examples in the report).
    /// Unset, the method's measured default ([`RelevanceMethod::default_threshold`]); a loaded
    /// config always holds the resolved value, so the dataset identity records it.
    pub relevance_threshold: Option<f32>,
    /// Episodes per scoring batch handed to the scorer (bounds memory and latency).
    pub batch_episodes: usize,
}

impl ScoreConfig {
    /// The threshold in effect: the configured one, else the method's default.
    pub fn threshold(&self) -> f32 {
        self.relevance_threshold
            .unwrap_or_else(|| self.relevance.default_threshold())
    }
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            top_k: 20,
            student_top_k: 0,
            token_budget: 4096,
            prefix_sharing: true,
            relevance: RelevanceMethod::default(),
            control_tokens: crate::record::DEFAULT_CONTROL_TOKENS,
            pmi_tokens: crate::record::DEFAULT_PMI_TOKENS,
            relevance_threshold: None,
            batch_episodes: 32,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where and how the dataset is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub dir: PathBuf,
    #[serde(default = "default_shard_rows")]
    pub shard_max_rows: usize,
    #[serde(default = "default_shard_bytes")]
    pub shard_max_bytes: u64,
}

fn default_shard_rows() -> usize {
    10_000
}
fn default_shard_bytes() -> u64 {
    128 << 20
}

impl PipelineConfig {
    /// Reads a pipeline file and applies `--set key=value` overrides (TOML values; bare words are
    /// strings), before typed validation, so overrides are checked like the file itself.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, overrides)
    }

    /// Parses pipeline text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: origin.to_path_buf(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let mut cfg: PipelineConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        cfg.score.relevance_threshold = Some(cfg.score.threshold());
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.input.paths.is_empty() {
            return Err(ConfigError::Invalid("input.paths is empty".into()));
        }
        if !self.score.threshold().is_finite() {
            return Err(ConfigError::Invalid(
                "score.relevance_threshold must be a finite number".into(),
            ));
        }
        if self.input.chunk_records == 0 {
            return Err(ConfigError::Invalid(
                "input.chunk_records must be > 0".into(),
            ));
        }
        self.format()?;
        if self
            .input
            .r#where
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err(ConfigError::Invalid("input.where is empty".into()));
        }
        if let Some(k) = self
            .model
            .chat_template_kwargs
            .keys()
            .find(|k| crate::tokenize::chat_template::RESERVED_VARS.contains(&k.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "model.chat_template_kwargs.{k}: set by the renderer itself, not configurable"
            )));
        }
        self.guards.validate().map_err(ConfigError::Invalid)?;
        if self.score.top_k == 0 {
            return Err(ConfigError::Invalid("score.top_k must be > 0".into()));
        }
        if self.output.shard_max_rows == 0 {
            return Err(ConfigError::Invalid(
                "output.shard_max_rows must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The forced input format, if any.
    pub fn format(&self) -> Result<Option<SourceFormat>, ConfigError> {
        if self.input.format == "auto" {
            return Ok(None);
        }
        SourceFormat::parse(&self.input.format).map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "input.format '{}' is not one of auto, wildchat, sharegpt, openai, demonstration, unit_test, hint",
                self.input.format
            ))
        })
    }

    /// Canonical JSON of the resolved config (stable key order), recorded in every shard.
    pub fn canonical_json(&self) -> String {
        // serde_json::Value keeps maps sorted (BTreeMap), so this is stable.
        serde_json::to_value(self)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// sha256 of the canonical JSON: the config fingerprint.
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.canonical_json().as_bytes())
    }

    /// The settings that determine what a dataset's rows are: everything except where inputs are
    /// read from and where the output goes (the input predicate `input.where` is included). A
    /// dataset directory is bound to this identity, so nightly increments may add inputs but
    /// never change how rows are made. [`PipelineConfig::identity_json`] also leaves out the
    /// performance-only settings.
    pub fn dataset_identity(&self) -> PipelineConfig {
        let mut c = self.clone();
        c.input.paths.clear();
        c.output.dir = PathBuf::new();
        c
    }

    /// The dataset identity as recorded in datasets: [`PipelineConfig::dataset_identity`] without
    /// [`PERFORMANCE_KEYS`], so a GPU pod may use another token budget or batch size on the
    /// same dataset.
    pub fn identity_json(&self) -> serde_json::Value {
        let mut v = self.legacy_identity_json();
        for key in PERFORMANCE_KEYS {
            if let Some((table, field)) = key.split_once('.') {
                if let Some(t) = v.get_mut(table).and_then(|t| t.as_object_mut()) {
                    t.remove(field);
                }
            }
        }
        v
    }

    /// The identity as earlier builds recorded it (performance settings included): datasets made
    /// then stay bound to it.
    pub fn legacy_identity_json(&self) -> serde_json::Value {
        serde_json::to_value(self.dataset_identity()).unwrap_or_default()
    }
}

/// Settings that change how fast a run goes, not what its rows are: they are not part of a
/// dataset's identity (see [`PipelineConfig::identity_json`]).
pub const PERFORMANCE_KEYS: [&str; 3] = [
    "score.token_budget",
    "score.batch_episodes",
    "score.prefix_sharing",
];

/// One setting that differs between two configs (dotted key; `None` where a side lacks it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConfigChange {
    /// Dotted key, e.g. `score.top_k`.
    pub key: String,
    /// The value in the existing dataset.
    pub existing: Option<serde_json::Value>,
    /// The value now.
    pub requested: Option<serde_json::Value>,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<serde_json::Value>| match v {
            Some(v) => v.to_string(),
            None => "(unset)".to_string(),
        };
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.existing),
            show(&self.requested)
        )
    }
}

/// The settings that differ between two dataset identities (as JSON), key by key, sorted, so a
/// refused run names what changed instead of showing two hashes.
pub fn config_diff(
    existing: &serde_json::Value,
    requested: &serde_json::Value,
) -> Vec<ConfigChange> {
    fn flatten(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, x, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let (mut a, mut b) = (Default::default(), Default::default());
    flatten("", existing, &mut a);
    flatten("", requested, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| ConfigChange {
            key: k.clone(),
            existing: a.get(k).cloned(),
            requested: b.get(k).cloned(),
        })
        .collect()
}

/// Sets `a.b.c = value` in a TOML tree, creating tables as needed.
fn apply_override(root: &mut toml::Value, assignment: &str) -> Result<(), ConfigError> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| ConfigError::BadOverride(assignment.to_string()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(ConfigError::BadOverride(assignment.to_string()));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for part in &parts[..parts.len() - 1] {
        let table = node
            .as_table_mut()
            .ok_or_else(|| ConfigError::BadOverride(assignment.to_string()))?;
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let table = node
        .as_table_mut()
        .ok_or_else(|| ConfigError::BadOverride(assignment.to_string()))?;
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
