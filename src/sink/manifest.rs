//! `manifest.json`: the dataset's table of contents. It lists every shard with its row count,
//! token count, size and sha256, carries the dataset metadata and the run statistics, so a
//! trainer can check a dataset in O(manifest) and `validate` can check it completely.
//!
//! Serialization is deterministic (fixed field order, object keys sorted, no clock reads): the
//! same run gives the same bytes. A timestamp is included only if the caller sets one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{SinkError, SinkResult};
use super::meta::{canonical_json, DatasetMeta};
use super::schema::SCHEMA_VERSION;
use super::shard::ShardInfo;

/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Sums over all shards (redundant with the shard list, so a reader need not add them up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Number of shards.
    pub shards: u64,
    /// Rows in all shards.
    pub rows: u64,
    /// Response tokens in all shards.
    pub response_tokens: u64,
    /// Bytes of all shards.
    pub bytes: u64,
}

impl Totals {
    /// Totals of a shard list.
    pub fn of(shards: &[ShardInfo]) -> Self {
        Totals {
            shards: shards.len() as u64,
            // Saturating: a crafted manifest's counts must not overflow (validate reports
            // the mismatch instead).
            rows: saturating_sum(shards.iter().map(|s| s.rows)),
            response_tokens: saturating_sum(shards.iter().map(|s| s.response_tokens)),
            bytes: saturating_sum(shards.iter().map(|s| s.bytes)),
        }
    }
}

/// Σ values, stopping at `u64::MAX` instead of overflowing.
pub fn saturating_sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0u64, u64::saturating_add)
}

/// Largest top-k a manifest may declare: far above any useful K (vocabularies are ~10^5), far
/// below what would overflow Arrow's i32 list sizes.
pub const MAX_TOP_K: usize = 1 << 20;

/// The manifest of one dataset directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Contract version of the rows.
    pub schema_version: u16,
    /// Metadata shared with every shard.
    pub dataset: DatasetMeta,
    /// Every shard, sorted by file name.
    pub shards: Vec<ShardInfo>,
    /// Sums over `shards`.
    pub totals: Totals,
    /// Run statistics supplied by the pipeline (records in, episodes built, filtered per reason,
    /// quarantined, rows written, ...); stored with sorted keys.
    pub stats: serde_json::Value,
    /// When the run finished, if the caller wants it recorded (RFC 3339); `None` keeps the file
    /// reproducible byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl Manifest {
    /// A manifest for `shards` (sorted by file name, totals computed) with run `stats`.
    pub fn new(dataset: DatasetMeta, mut shards: Vec<ShardInfo>, stats: serde_json::Value) -> Self {
        shards.sort_by(|a, b| a.file.cmp(&b.file));
        Manifest {
            schema_version: SCHEMA_VERSION,
            totals: Totals::of(&shards),
            dataset,
            shards,
            stats: canonical_json(&stats),
            created_at: None,
        }
    }

    /// The deterministic JSON text of the manifest (pretty, sorted keys, trailing newline).
    pub fn to_json(&self) -> SinkResult<String> {
        let v = serde_json::to_value(self).map_err(|e| SinkError::Json {
            path: MANIFEST_FILE.into(),
            source: e,
        })?;
        let mut s =
            serde_json::to_string_pretty(&canonical_json(&v)).map_err(|e| SinkError::Json {
                path: MANIFEST_FILE.into(),
                source: e,
            })?;
        s.push('\n');
        Ok(s)
    }

    /// Writes `dir/manifest.json` atomically and durably (temp file, fsync, rename, dir fsync).
    pub fn write(&self, dir: &Path) -> SinkResult<()> {
        let text = self.to_json()?;
        let path = dir.join(MANIFEST_FILE);
        crate::util::write_atomic(&path, text.as_bytes())
            .map_err(|e| SinkError::io("writing", &path, e))
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> SinkResult<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| SinkError::io("reading", &path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| SinkError::Json {
            path: path.clone(),
            source: e,
        })?;
        // K sizes Arrow fixed-size lists (an i32) and buffers; a crafted value must not reach them.
        if m.dataset.top_k > MAX_TOP_K {
            return Err(SinkError::InvalidManifest {
                path,
                message: format!(
                    "dataset.top_k = {} is out of range (at most {MAX_TOP_K})",
                    m.dataset.top_k
                ),
            });
        }
        if let Some(bad) = m
            .shards
            .iter()
            .find(|s| !crate::util::is_plain_name(&s.file))
        {
            return Err(SinkError::UnsafeName {
                path,
                name: crate::util::terminal_safe(&bad.file),
            });
        }
        Ok(m)
    }
}
