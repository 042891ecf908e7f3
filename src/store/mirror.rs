//! A dataset directory that may live in an object store. The pipeline always works on a local
//! directory; for a dataset at a URL that directory is a staging area, and the [`Mirror`] moves
//! files between it and the store in the order that keeps the remote dataset consistent:
//! shards (multipart) → chunk ids → chunk state → manifest (one put, last).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::state_store::{LocalStore, StateStore};
use super::{io_err, Location, Remote, StoreError};

/// A dataset location plus the local directory the pipeline reads and writes.
#[derive(Debug)]
pub struct Mirror {
    local: PathBuf,
    remote: Option<Remote>,
    /// The local directory as a state store (used when there is no remote).
    local_state: LocalStore,
    _staging: Option<tempfile::TempDir>,
}

impl Mirror {
    /// Opens a dataset location: a local directory is used in place; a URL gets a fresh staging
    /// directory (under `$HINDSIGHT_STAGING` if set, else the system temp directory).
    pub fn open(target: &str) -> Result<Mirror, StoreError> {
        match Location::parse(target)? {
            Location::Local(local) => Ok(Mirror {
                local_state: LocalStore::new(&local),
                local,
                remote: None,
                _staging: None,
            }),
            Location::Remote(remote) => {
                let base = std::env::var_os("HINDSIGHT_STAGING")
                    .map(PathBuf::from)
                    .unwrap_or_else(std::env::temp_dir);
                std::fs::create_dir_all(&base).map_err(io_err("creating", &base))?;
                let staging = tempfile::Builder::new()
                    .prefix("hindsight-staging-")
                    .tempdir_in(&base)
                    .map_err(io_err("creating a staging directory in", &base))?;
                Ok(Mirror {
                    local_state: LocalStore::new(staging.path()),
                    local: staging.path().to_path_buf(),
                    remote: Some(remote),
                    _staging: Some(staging),
                })
            }
        }
    }

    /// The local directory (the dataset itself, or the staging area of a remote one).
    pub fn local(&self) -> &Path {
        &self.local
    }

    /// The object-store side, if the dataset is remote.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// Where coordination state (task done records, claims) is read and written directly: the
    /// object store for a remote dataset, the directory itself for a local one. Unlike the
    /// staged files, these are never mirrored: every task must see the others' at once.
    pub fn state(&self) -> &dyn StateStore {
        match &self.remote {
            Some(r) => r,
            None => &self.local_state,
        }
    }

    /// The dataset's name for messages: its URL, or its local path.
    pub fn label(&self) -> String {
        match &self.remote {
            Some(r) => r.url.clone(),
            None => self.local.display().to_string(),
        }
    }

    /// The staging path of a relative name, refused unless every segment is a plain name:
    /// object listings and dataset files name what is downloaded, and a crafted key must not
    /// write outside the staging directory.
    fn staged(&self, rel: &str) -> Result<PathBuf, StoreError> {
        if !crate::util::is_safe_relative(rel) {
            return Err(StoreError::BadUrl {
                url: self.label(),
                message: format!(
                    "object name '{}' is not a plain relative path; refusing to stage it",
                    crate::util::terminal_safe(rel)
                ),
            });
        }
        Ok(self.local.join(rel))
    }

    /// Downloads every object under `rel` (e.g. `_state`) into the local directory, so a run
    /// resumes from the remote state. Returns how many objects were fetched (0 when local).
    pub fn pull_tree(&self, rel: &str) -> Result<usize, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(0);
        };
        let mut n = 0;
        for m in remote.list(rel)? {
            let Some(name) = remote.relative(&m.location) else {
                continue;
            };
            if name.ends_with(".tmp") {
                continue;
            }
            remote.download_file(&name, &self.staged(&name)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Downloads one file (remote datasets only; a no-op for local ones).
    pub fn pull(&self, rel: &str) -> Result<(), StoreError> {
        if let Some(remote) = &self.remote {
            remote.download_file(rel, &self.staged(rel)?)?;
        }
        Ok(())
    }

    /// Uploads one local file to the same relative name. Parquet shards go by multipart upload;
    /// everything else (small JSON, id lists) by a single atomic put. A no-op for local datasets.
    pub fn push(&self, rel: &str) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let path = self.local.join(rel);
        if rel.ends_with(".parquet") {
            remote.put_file_multipart(rel, &path)
        } else {
            let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
            remote.put_bytes(rel, bytes)
        }
    }

    /// Uploads a shard and then deletes the local copy, so staging holds at most one chunk's
    /// shards (remote datasets only; local shards stay where they are).
    pub fn push_shard(&self, rel: &str) -> Result<(), StoreError> {
        if self.remote.is_none() {
            return Ok(());
        }
        self.push(rel)?;
        let path = self.local.join(rel);
        std::fs::remove_file(&path).map_err(io_err("removing", &path))
    }

    /// Deletes one object of a remote dataset (a no-op for local ones).
    pub fn delete_remote(&self, rel: &str) -> Result<(), StoreError> {
        match &self.remote {
            Some(r) => r.delete(rel),
            None => Ok(()),
        }
    }

    /// Deletes remote `part-*` objects at the dataset's top level that no committed chunk lists
    /// (uploads of a chunk whose state never made it). Returns how many were removed.
    pub fn clean_remote_orphans(&self, listed: &HashSet<String>) -> Result<usize, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(0);
        };
        let mut removed = 0;
        for m in remote.list("")? {
            let Some(name) = remote.relative(&m.location) else {
                continue;
            };
            if !name.contains('/') && name.starts_with("part-") && !listed.contains(&name) {
                remote.delete(&name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Downloads a whole remote dataset (every top-level object: manifest, shards, reports, and
    /// any stray file, so `validate` sees what a reader would) into the staging directory. The
    /// `_state/` tree is not needed to read a dataset and is skipped. A no-op for local datasets.
    pub fn pull_dataset(&self) -> Result<usize, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(0);
        };
        let mut n = 0;
        for m in remote.list("")? {
            let Some(name) = remote.relative(&m.location) else {
                continue;
            };
            if name.starts_with("_state/") || name.contains('/') {
                continue;
            }
            remote.download_file(&name, &self.staged(&name)?)?;
            n += 1;
        }
        Ok(n)
    }
}
