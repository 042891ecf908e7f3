//! `hindsight compact DIR`: rewrites the shards of a dataset's chunks into few large shards, so
//! a dataset built from thousands of small chunks (nightly increments, `chunk_records` small
//! for resumability) is not thousands of small files for its readers.
//!
//! Chunks stay the unit of resume and dedup (their records and id lists are untouched); only
//! where their rows live changes. The steps keep the dataset consistent after a kill at any
//! moment, like every other write ([`crate::sink::DatasetWriter`]):
//!
//! ```text
//!  new shards (part-<compaction>-NNNNN) ─→ compaction record (commit point)
//!    ─→ dataset card, manifest (readers switch) ─→ old shards deleted
//! ```
//!
//! Before the record, the new shards are unlisted leftovers that the next run or compaction
//! deletes; after it, the old shards are. Rows keep their order (the manifest's: shards by
//! file name, each shard's rows in order) and their values (the same contract columns, the same Parquet
//! settings), so every column of every row reads back the same.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{self, Compaction, RunLock, RunState};
use super::{build_manifest, PipelineError};
use crate::episode::IngestStats;
use crate::sink::{Manifest, ShardConfig, ShardWriter};
use crate::store::Mirror;
use crate::util::sha256_hex;

/// How `compact` sizes the shards it writes.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Roll to a new shard past this many bytes (default: 256 MiB, as `output.shard_max_bytes`).
    pub max_shard_bytes: u64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            max_shard_bytes: ShardConfig::default().max_bytes,
        }
    }
}

/// What `compact` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactReport {
    /// The dataset (path or URL).
    pub output: String,
    /// The compaction's id (`None` when there was nothing to compact).
    pub compaction: Option<String>,
    /// Chunks whose rows were moved.
    pub chunks_compacted: u64,
    /// Shards in the manifest before and after.
    pub shards_before: u64,
    pub shards_after: u64,
    /// Rows moved.
    pub rows: u64,
    /// Bytes of the shards replaced, and of the shards written.
    pub bytes_replaced: u64,
    pub bytes_written: u64,
}

impl CompactReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        match &self.compaction {
            None => format!(
                "nothing to compact: {} shard(s) in {}",
                self.shards_before, self.output
            ),
            Some(id) => format!(
                "compacted {} chunks ({} rows) as {id}: {} -> {} shards in the dataset, \
                 {} -> {} bytes\ndataset: {}",
                self.chunks_compacted,
                self.rows,
                self.shards_before,
                self.shards_after,
                self.bytes_replaced,
                self.bytes_written,
                self.output
            ),
        }
    }
}

/// Compacts the shards of every chunk not compacted yet into shards of up to
/// `opts.max_shard_bytes`, and republishes the manifest. Refuses while a sharded run is not
/// finalized (its chunks may still be rewritten by finalize's dedup).
pub fn compact(target: &str, opts: &CompactOptions) -> Result<CompactReport, PipelineError> {
    let mirror = Arc::new(Mirror::open(target)?);
    let dir = mirror.local().to_path_buf();
    let label = mirror.label();
    let _lock = RunLock::acquire(&dir)?;
    mirror.pull_tree("_state")?;
    mirror.pull(crate::sink::manifest::MANIFEST_FILE)?;
    if !dir.join(crate::sink::manifest::MANIFEST_FILE).is_file() {
        return Err(PipelineError::Tasks(format!(
            "{label} has no manifest.json: run (or finalize) the dataset before compacting it"
        )));
    }
    let manifest = Manifest::read(&dir)?;
    let binding = state::read_binding(&dir)?.ok_or_else(|| {
        PipelineError::Tasks(format!("{label} has no _state/dataset.json: not a dataset"))
    })?;
    let mut st = RunState::open(&dir, &binding)?;
    if st.committed().iter().any(|c| c.task.is_some()) {
        return Err(PipelineError::Tasks(format!(
            "{label} holds chunks of a run that is not finalized; run `hindsight run` to finish \
             it (a plain run) or `hindsight finalize {label}` (a sharded run), then compact"
        )));
    }
    let candidates: Vec<state::ChunkState> = st
        .committed()
        .into_iter()
        .filter(|c| !st.is_compacted(&c.chunk_id) && !c.shards.is_empty())
        .cloned()
        .collect();
    // In manifest order (by file name), so readers see the rows in the order they did.
    let mut old: Vec<crate::sink::ShardInfo> = candidates
        .iter()
        .flat_map(|c| c.shards.iter().cloned())
        .collect();
    old.sort_by(|a, b| a.file.cmp(&b.file));
    let mut report = CompactReport {
        output: label.clone(),
        compaction: None,
        chunks_compacted: 0,
        shards_before: manifest.shards.len() as u64,
        shards_after: manifest.shards.len() as u64,
        rows: 0,
        bytes_replaced: 0,
        bytes_written: 0,
    };
    if old.len() < 2 {
        return Ok(report);
    }

    // 1. The new shards, streamed one old shard at a time.
    let ids: Vec<String> = candidates.iter().map(|c| c.chunk_id.clone()).collect();
    let id = format!("c{}", &sha256_hex(ids.join("\n").as_bytes())[..15]);
    let mut cfg = manifest.dataset.shard_config();
    cfg.max_bytes = opts.max_shard_bytes.max(1);
    let mut writer = ShardWriter::new(&dir, &id, manifest.dataset.clone(), cfg)?;
    let reader = crate::sink::DatasetWriter::new(
        mirror.clone(),
        manifest.dataset.clone(),
        ShardConfig::default(),
    );
    for s in &old {
        let rows = reader.read_shard(&s.file)?;
        report.rows += rows.len() as u64;
        writer.write_rows(rows)?;
    }
    let shards = writer.finish()?;
    for s in &shards {
        mirror.push_shard(&s.file)?;
    }

    // 2. The commit point: the compaction record, locally then on the store.
    st.commit_compaction(Compaction {
        id: id.clone(),
        chunks: ids,
        shards: shards.clone(),
    })?;
    mirror.push(&state::compaction_rel(&id))?;

    // 3. Readers switch to the new shards with the manifest (the run statistics are kept).
    let ingest: Option<IngestStats> =
        serde_json::from_value(manifest.stats["ingest_last_run"].clone()).ok();
    let mut next = build_manifest(&manifest.dataset, &st, ingest.as_ref());
    next.created_at = manifest.created_at.clone();
    // The next night's drift baseline stays what the last publish recorded.
    let key = super::publish::BASELINE_KEY;
    if let (Some(b), Some(stats)) = (manifest.stats.get(key), next.stats.as_object_mut()) {
        stats.insert(key.to_string(), b.clone());
    }
    reader.republish(&next)?;

    // 4. The old shards, no longer listed anywhere.
    for s in &old {
        remove_local(&dir, &s.file)?;
        mirror.delete_remote(&s.file)?;
    }
    report.compaction = Some(id);
    report.chunks_compacted = candidates.len() as u64;
    report.shards_after = next.shards.len() as u64;
    report.bytes_replaced = old.iter().map(|s| s.bytes).sum();
    report.bytes_written = shards.iter().map(|s| s.bytes).sum();
    Ok(report)
}

fn remove_local(dir: &Path, file: &str) -> Result<(), PipelineError> {
    let p = dir.join(file);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(state::StateError::Io {
            action: "removing",
            path: p,
            source,
        }
        .into()),
    }
}
