//! Crash-safe run state in the output directory: the lock that keeps two runs apart, and the
//! record of committed chunks that lets a killed run resume without redoing finished work.
//!
//! Layout: `DIR/.lock` (held with an OS file lock for the whole run; released by the kernel even
//! on `kill -9`), `DIR/_state/dataset.json` (config and model fingerprints the directory is bound
//! to) and `DIR/_state/chunks/<chunk_id>.json` (one per committed chunk: its shards and counts).
//! A chunk's state file is written (temp + rename) only after its shards are renamed into place,
//! so a chunk is either committed with all its shards or not at all.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::sink::ShardInfo;

mod run_state;

/// Errors of the run-state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another hindsight run is writing to {0} (a plain run, the same sharded task or a finalize holds its lock); wait for it to finish or use another --output")]
    Locked(PathBuf),
    #[error("{path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{dir} holds a dataset made with a different {what} ({existing} here, {requested} now){changes}; \
         use a new --output directory (datasets never mix configs or models)"
    )]
    Mismatch {
        dir: PathBuf,
        what: &'static str,
        existing: String,
        requested: String,
        /// For a config: the keys that differ, as `; changed: key: old -> new, ...`.
        changes: String,
    },
    #[error(
        "{dir} is not empty and is not a hindsight dataset (no _state/ or manifest.json; it holds \
         {sample}); refusing to write there, since resuming cleans up part-* and *.tmp files: \
         use an empty or new --output directory"
    )]
    Foreign { dir: PathBuf, sample: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Ownership of an output directory for the duration of a run.
///
/// `DIR/.lock` is held exclusively by a plain run and by `finalize`, and *shared* by sharded
/// tasks, which also hold `DIR/.lock-task-<I>` exclusively: tasks of one run share a directory
/// with each other, never with a second copy of themselves, a plain run or a finalize.
pub struct RunLock {
    _files: Vec<File>,
}

impl RunLock {
    /// Takes `DIR/.lock` exclusively or fails at once with [`StateError::Locked`].
    pub fn acquire(dir: &Path) -> Result<Self, StateError> {
        Ok(Self {
            _files: vec![lock_file(dir, ".lock", false)?],
        })
    }

    /// Takes the lock file `dir/name` exclusively (without `DIR/.lock`): finalize uses it to
    /// check that no task of the run is still writing.
    pub fn acquire_named(dir: &Path, name: &str) -> Result<Self, StateError> {
        Ok(Self {
            _files: vec![lock_file(dir, name, false)?],
        })
    }

    /// A sharded task's locks: `DIR/.lock` shared, then `DIR/.lock-task-<I>` (`name`)
    /// exclusively.
    pub fn acquire_task(dir: &Path, name: &str) -> Result<Self, StateError> {
        let shared = lock_file(dir, ".lock", true)?;
        let own = lock_file(dir, name, false)?;
        Ok(Self {
            _files: vec![shared, own],
        })
    }
}

fn lock_file(dir: &Path, name: &str, shared: bool) -> Result<File, StateError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("opening", &path))?;
    let got = if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match got {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StateError::Locked(dir.to_path_buf()))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", &path)(e)),
    }
    if !shared {
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
    }
    Ok(file)
}

/// Where the dataset's binding ([`DatasetBinding`]) is kept.
pub const BINDING_REL: &str = "_state/dataset.json";

/// What an output directory is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetBinding {
    pub config_sha256: String,
    pub weights_sha256: String,
    pub tokenizer_sha256: String,
    /// [`crate::sink::schema::contract_sha256`] of the build that wrote the directory, so a
    /// newer build with other columns never appends shards of another layout (empty in
    /// directories written before it was recorded: they are refused too).
    #[serde(default)]
    pub contract_sha256: String,
    /// The dataset identity itself (the config the hash is of), so a refused run and `plan`
    /// can name the keys that changed (absent in directories written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// A committed chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkState {
    pub chunk_id: String,
    pub source_uri: String,
    /// The input's identity (size + mtime, or ETag) when the chunk was read; absent in chunks
    /// committed before content ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    pub chunk_index: u64,
    pub shards: Vec<ShardInfo>,
    /// Per-chunk counters (episodes scored, filtered by reason, rows written, tokens).
    pub counts: super::StepCounts,
    /// KL sums over the written rows' response tokens: what top-k + tail captures of the exact
    /// KL (the report's top-k coverage needs the exact value, which the shards cannot give).
    #[serde(default)]
    pub kl: KlTotals,
    /// `relevance` of the rows this chunk dropped under the threshold (the report's histogram).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_relevance: Vec<f32>,
    /// `relevance` of every row scored (kept or dropped by the threshold), log-binned: the
    /// drift guards compare nights' distributions with it.
    #[serde(
        default,
        skip_serializing_if = "super::drift::RelevanceHistogram::is_empty"
    )]
    pub relevance: super::drift::RelevanceHistogram,
    /// Set while the chunk was written by a sharded task and not yet merged by `finalize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskTag>,
}

/// Sums of per-token KL(teacher || student) over response tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct KlTotals {
    /// Response tokens summed over.
    pub tokens: u64,
    /// Σ exact KL over the full vocabulary.
    pub exact: f64,
    /// Σ KL over the teacher's top-k plus one tail bucket (what the stored columns give).
    pub topk_tail: f64,
}

impl KlTotals {
    /// Adds another chunk's sums.
    pub fn add(&mut self, other: &KlTotals) {
        self.tokens += other.tokens;
        self.exact += other.exact;
        self.topk_tail += other.topk_tail;
    }
}

/// Which sharded task wrote a chunk, and the chunk's place in the input order (finalize keeps
/// the earliest copy of a duplicate row, as a single-task run would).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskTag {
    pub index: u32,
    pub num_tasks: u32,
    /// 0-based position of the chunk among all chunks of the input, in reading order.
    pub ordinal: u64,
}

/// The `_state` directory.
pub struct RunState {
    dir: PathBuf,
    chunks: BTreeMap<String, ChunkState>,
    /// Chunks whose rows live in compacted shards (`hindsight compact`).
    compacted: std::collections::HashSet<String>,
}

/// A compaction (`_state/compactions/<id>.json`, the commit point of `hindsight compact`): the
/// rows of `chunks` now live in `shards`. Chunk records keep their own (deleted) shard lists;
/// the state applies the record on load, so the chunks' shards read as these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// Names the new shards (`part-<id>-NNNNN.parquet`) and the record.
    pub id: String,
    /// The chunks compacted, in the order their rows were written.
    pub chunks: Vec<String>,
    /// The compacted shards.
    pub shards: Vec<ShardInfo>,
}

/// Refuses a state record (at `path`) naming a file that is not a plain name inside the
/// dataset: names from records are joined to the dataset directory to read and delete.
fn check_plain_names<'a>(
    path: &Path,
    mut names: impl Iterator<Item = &'a String>,
) -> Result<(), StateError> {
    match names.find(|n| !crate::util::is_plain_name(n)) {
        None => Ok(()),
        Some(bad) => Err(StateError::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "'{}' is not a plain file name inside the dataset",
                crate::util::terminal_safe(bad)
            ),
        }),
    }
}

/// Where a compaction's record lives.
pub fn compaction_rel(id: &str) -> String {
    format!("_state/compactions/{id}.json")
}

/// Reads the compaction records of `dir` (checking their names, like chunk records') and
/// applies them: a compacted chunk lists no shards of its own, and the first chunk of each
/// compaction that is still committed lists the compaction's shards. Returns the compacted ids.
fn apply_compactions(
    dir: &Path,
    chunks: &mut BTreeMap<String, ChunkState>,
) -> Result<std::collections::HashSet<String>, StateError> {
    let mut compacted = std::collections::HashSet::new();
    let cdir = dir.join("_state/compactions");
    if !cdir.is_dir() {
        return Ok(compacted);
    }
    let mut records = Vec::new();
    for e in std::fs::read_dir(&cdir).map_err(io("listing", &cdir))? {
        let path = e.map_err(io("listing", &cdir))?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let c: Compaction = read_json(&path)?;
            let names = std::iter::once(&c.id)
                .chain(&c.chunks)
                .chain(c.shards.iter().map(|s| &s.file));
            check_plain_names(&path, names)?;
            records.push(c);
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for c in records {
        let mut holder = None;
        for id in &c.chunks {
            if let Some(chunk) = chunks.get_mut(id) {
                chunk.shards.clear();
                compacted.insert(id.clone());
                holder.get_or_insert_with(|| id.clone());
            }
        }
        match holder.and_then(|h| chunks.get_mut(&h)) {
            Some(chunk) => chunk.shards = c.shards,
            None => tracing::warn!(compaction = %c.id, "compaction of chunks no longer committed"),
        }
    }
    Ok(compacted)
}

/// Writes `bytes` to `path` atomically and durably ([`crate::util::write_atomic`]: unguessable
/// `create_new` temp file, fsync, rename, directory fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::util::write_atomic(path, bytes).map_err(io("writing", path))
}

fn write_binding(path: &Path, binding: &DatasetBinding) -> Result<(), StateError> {
    let json = serde_json::to_vec_pretty(binding).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &json)
}

/// The identity a dataset was made with: its binding's copy, or, for a dataset whose binding
/// predates that copy, the one every shard (and so the manifest) records.
pub fn recorded_identity(dir: &Path, binding: &DatasetBinding) -> Option<serde_json::Value> {
    if let Some(c) = &binding.config {
        return Some(c.clone());
    }
    let bytes = std::fs::read(dir.join(crate::sink::MANIFEST_FILE)).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let config = manifest.get("dataset")?.get("pipeline_config")?;
    (crate::sink::meta::config_sha256(config) == binding.config_sha256).then(|| config.clone())
}

/// The dataset's binding, if `dir` is a dataset (read only).
pub fn read_binding(dir: &Path) -> Result<Option<DatasetBinding>, StateError> {
    let path = dir.join(BINDING_REL);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// The identity a run over `dir` binds to: `current`, or, for a dataset made by an earlier build
/// whose identity still included the performance-only settings, `legacy` (when that is what
/// it is bound to), so old datasets keep their shards' metadata and are not refused.
pub fn choose_identity(
    dir: &Path,
    current: serde_json::Value,
    legacy: serde_json::Value,
) -> Result<serde_json::Value, StateError> {
    let hash = |v: &serde_json::Value| crate::sink::meta::config_sha256(v);
    let Some(b) = read_binding(dir)? else {
        return Ok(current);
    };
    if b.config_sha256 == hash(&current) {
        return Ok(current);
    }
    // Bound to the legacy form (or to another config recorded in it: compare like with like,
    // so a refusal names the keys that changed, not the performance settings).
    let legacy_shaped = b.config_sha256 == hash(&legacy)
        || recorded_identity(dir, &b).is_some_and(|r| {
            crate::config::PERFORMANCE_KEYS.iter().any(|k| {
                k.split_once('.')
                    .is_some_and(|(t, f)| r.get(t).and_then(|t| t.get(f)).is_some())
            })
        });
    Ok(if legacy_shaped { legacy } else { current })
}

/// What a dataset directory holds, read without creating, locking or changing anything
/// (`hindsight plan`): its binding and committed chunks, or `None` when it is not a dataset yet.
pub fn peek(dir: &Path) -> Result<Option<(DatasetBinding, Vec<ChunkState>)>, StateError> {
    let bind_path = dir.join(BINDING_REL);
    if !bind_path.exists() {
        return Ok(None);
    }
    let binding: DatasetBinding = read_json(&bind_path)?;
    let chunks_dir = dir.join("_state/chunks");
    let mut chunks = Vec::new();
    if chunks_dir.is_dir() {
        for e in std::fs::read_dir(&chunks_dir).map_err(io("listing", &chunks_dir))? {
            let path = e.map_err(io("listing", &chunks_dir))?.path();
            if path.extension().is_some_and(|x| x == "json") {
                chunks.push(read_json::<ChunkState>(&path)?);
            }
        }
    }
    let mut by_id: BTreeMap<String, ChunkState> = chunks
        .into_iter()
        .map(|c| (c.chunk_id.clone(), c))
        .collect();
    apply_compactions(dir, &mut by_id)?;
    let mut chunks: Vec<ChunkState> = by_id.into_values().collect();
    chunks.sort_by(|a, b| {
        a.source_uri
            .cmp(&b.source_uri)
            .then(a.chunk_index.cmp(&b.chunk_index))
    });
    Ok(Some((binding, chunks)))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run rebuilds the manifest from the chunk files it parses back; their f64 sums
    /// must keep every bit (this value came back 1 ULP off before `float_roundtrip`).
    #[test]
    fn kl_sums_survive_the_chunk_file_bit_for_bit() {
        let kl = KlTotals {
            tokens: 37,
            exact: 31.123_456_789_012_345,
            topk_tail: 29.940_672_810_189_426,
        };
        let text = serde_json::to_string(&kl).unwrap();
        let back: KlTotals = serde_json::from_str(&text).unwrap();
        assert_eq!(back.topk_tail.to_bits(), kl.topk_tail.to_bits(), "{text}");
        assert_eq!(back.exact.to_bits(), kl.exact.to_bits(), "{text}");
    }

    /// OS file locks (flock) conflict between open files even in one process, so this is the
    /// real exclusion two processes get.
    #[test]
    fn plain_runs_tasks_and_finalize_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t0 = RunLock::acquire_task(d, ".lock-task-0").unwrap();
        let t1 = RunLock::acquire_task(d, ".lock-task-1").unwrap();
        assert!(matches!(
            RunLock::acquire_task(d, ".lock-task-0"),
            Err(StateError::Locked(_))
        ));
        // A plain run (or finalize) while tasks write.
        assert!(matches!(RunLock::acquire(d), Err(StateError::Locked(_))));
        drop((t0, t1));
        let plain = RunLock::acquire(d).unwrap();
        assert!(matches!(
            RunLock::acquire_task(d, ".lock-task-2"),
            Err(StateError::Locked(_))
        ));
        drop(plain);
        assert!(RunLock::acquire_task(d, ".lock-task-2").is_ok());
    }
}
