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

impl RunState {
    /// Opens (or creates) the state of `dir` and checks it is bound to the same config and model.
    pub fn open(dir: &Path, binding: &DatasetBinding) -> Result<Self, StateError> {
        Self::open_with(dir, binding, true)
    }

    /// [`RunState::open`] for a directory other processes (sharded tasks) write at the same
    /// time: their in-flight temp files are left alone.
    pub fn open_shared(dir: &Path, binding: &DatasetBinding) -> Result<Self, StateError> {
        Self::open_with(dir, binding, false)
    }

    fn open_with(
        dir: &Path,
        binding: &DatasetBinding,
        exclusive: bool,
    ) -> Result<Self, StateError> {
        let state_dir = dir.join("_state");
        refuse_foreign_directory(dir)?;
        let chunks_dir = state_dir.join("chunks");
        std::fs::create_dir_all(&chunks_dir).map_err(io("creating", &chunks_dir))?;
        let bind_path = dir.join(BINDING_REL);
        if bind_path.exists() {
            let existing: DatasetBinding = read_json(&bind_path)?;
            // The contract first: a dataset of another schema version also has another config
            // identity (new settings), and the version is the cause to name.
            let checks = [
                (
                    "output contract (columns)",
                    &existing.contract_sha256,
                    &binding.contract_sha256,
                ),
                (
                    "pipeline config",
                    &existing.config_sha256,
                    &binding.config_sha256,
                ),
                ("model", &existing.weights_sha256, &binding.weights_sha256),
                (
                    "tokenizer",
                    &existing.tokenizer_sha256,
                    &binding.tokenizer_sha256,
                ),
            ];
            for (what, a, b) in checks {
                if a != b {
                    let recorded = recorded_identity(dir, &existing);
                    let changes = match (&recorded, &binding.config, what) {
                        (Some(old), Some(new), "pipeline config") => {
                            let d = crate::config::config_diff(old, new);
                            let shown: Vec<String> =
                                d.iter().take(8).map(ToString::to_string).collect();
                            let more = d.len().saturating_sub(8);
                            let tail = if more > 0 {
                                format!(" and {more} more")
                            } else {
                                String::new()
                            };
                            format!("; changed: {}{tail}", shown.join(", "))
                        }
                        _ => String::new(),
                    };
                    return Err(StateError::Mismatch {
                        dir: dir.to_path_buf(),
                        what,
                        existing: short(a),
                        requested: short(b),
                        changes,
                    });
                }
            }
            if existing.config.is_none() && binding.config.is_some() {
                // Written before the identity was recorded: record it now (same hash).
                write_binding(&bind_path, binding)?;
            }
        } else {
            write_binding(&bind_path, binding)?;
        }
        let mut chunks = BTreeMap::new();
        let entries = std::fs::read_dir(&chunks_dir).map_err(io("listing", &chunks_dir))?;
        for e in entries {
            let path = e.map_err(io("listing", &chunks_dir))?.path();
            if path.extension().is_some_and(|x| x == "json") {
                let c: ChunkState = read_json(&path)?;
                // Names from here are joined to the dataset directory (shards to read, merge
                // and delete; the chunk's id list), so a crafted file cannot point outside it.
                let names = std::iter::once(&c.chunk_id).chain(c.shards.iter().map(|s| &s.file));
                check_plain_names(&path, names)?;
                chunks.insert(c.chunk_id.clone(), c);
            } else if exclusive && path.extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(&path);
            }
        }
        let compacted = apply_compactions(dir, &mut chunks)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            chunks,
            compacted,
        })
    }

    /// Whether a chunk's rows were compacted into shards shared with other chunks.
    pub fn is_compacted(&self, chunk_id: &str) -> bool {
        self.compacted.contains(chunk_id)
    }

    /// Records a compaction (after its shards are in place): writes its record, the commit
    /// point, and applies it.
    pub fn commit_compaction(&mut self, c: Compaction) -> Result<(), StateError> {
        let path = self.dir.join(compaction_rel(&c.id));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let json = serde_json::to_vec_pretty(&c).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &json)?;
        self.compacted = apply_compactions(&self.dir, &mut self.chunks)?;
        Ok(())
    }

    /// Whether a chunk is already committed.
    pub fn is_committed(&self, chunk_id: &str) -> bool {
        self.chunks.contains_key(chunk_id)
    }

    /// All committed chunks, in a deterministic order (source uri, then chunk index).
    pub fn committed(&self) -> Vec<&ChunkState> {
        let mut v: Vec<&ChunkState> = self.chunks.values().collect();
        v.sort_by(|a, b| {
            a.source_uri
                .cmp(&b.source_uri)
                .then(a.chunk_index.cmp(&b.chunk_index))
        });
        v
    }

    /// Records a chunk as committed (after its shards are in place).
    pub fn commit(&mut self, chunk: ChunkState) -> Result<(), StateError> {
        let path = self
            .dir
            .join(crate::sink::dataset::chunk_state_rel(&chunk.chunk_id));
        let json = serde_json::to_vec_pretty(&chunk).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &json)?;
        self.chunks.insert(chunk.chunk_id.clone(), chunk);
        Ok(())
    }

    /// Deletes leftovers of interrupted work: temp files, and shards of chunks never committed.
    /// Returns how many files were removed.
    pub fn clean_orphans(&self) -> Result<usize, StateError> {
        let listed: std::collections::HashSet<&str> = self
            .chunks
            .values()
            .flat_map(|c| c.shards.iter().map(|s| s.file.as_str()))
            .collect();
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.dir).map_err(io("listing", &self.dir))?;
        for e in entries {
            let path = e.map_err(io("listing", &self.dir))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let orphan_shard = name.starts_with("part-") && !listed.contains(name.as_str());
            if name.ends_with(".tmp") || orphan_shard {
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A directory we may turn into a dataset: missing, empty (but for our own lock files), or
/// already a dataset. Anything else belongs to someone else, and resume cleanup would delete
/// their `part-*` and `*.tmp` files.
fn refuse_foreign_directory(dir: &Path) -> Result<(), StateError> {
    if dir.join("_state").is_dir() || dir.join(crate::sink::manifest::MANIFEST_FILE).is_file() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut foreign: Vec<String> = Vec::new();
    for e in entries {
        let name = e
            .map_err(io("listing", dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        // Checked again here, not only above: a concurrent task of the same run may have
        // created `_state/` between the first check and this listing.
        if name == "_state" || name == crate::sink::manifest::MANIFEST_FILE {
            return Ok(());
        }
        if !name.starts_with(".lock") {
            foreign.push(name);
        }
    }
    if foreign.is_empty() {
        return Ok(());
    }
    foreign.sort();
    let more = foreign.len().saturating_sub(3);
    let mut sample: Vec<String> = foreign
        .into_iter()
        .take(3)
        .map(|n| format!("{n:?}"))
        .collect();
    if more > 0 {
        sample.push(format!("and {more} more"));
    }
    Err(StateError::Foreign {
        dir: dir.to_path_buf(),
        sample: sample.join(", "),
    })
}

fn short(h: &str) -> String {
    if h.is_empty() {
        return "none recorded, an older build".into();
    }
    h.chars().take(12).collect()
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
