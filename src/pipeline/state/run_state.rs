//! A run's state: opening (and binding) a dataset directory, committing chunks, compactions, orphans.

use super::*;

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

    pub(super) fn open_with(
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
pub(super) fn refuse_foreign_directory(dir: &Path) -> Result<(), StateError> {
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

pub(super) fn short(h: &str) -> String {
    if h.is_empty() {
        return "none recorded, an older build".into();
    }
    h.chars().take(12).collect()
}
