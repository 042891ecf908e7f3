//! The five operations coordination state needs — atomic put, create-only put, get, list,
//! delete — over a local directory or an object store, so the code that coordinates tasks
//! (done records, the finalize claim) is written once instead of once per backend.
//!
//! Both implementations give the guarantees the election relies on: a put is all-or-nothing,
//! a create-only put succeeds for exactly one writer, and a list sees every completed put
//! (POSIX rename and `O_EXCL`; object stores' conditional puts and strong read-after-write and
//! list-after-write consistency).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{io_err, Remote, StoreError};

/// A key–value view of a dataset's state, keyed by relative paths (`_state/tasks/…`).
pub trait StateStore {
    /// Writes `bytes` at `rel`, replacing what was there, atomically.
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Writes `bytes` at `rel` only if nothing is there; `false` when something was.
    fn put_new(&self, rel: &str, bytes: &[u8]) -> Result<bool, StoreError>;
    /// The bytes at `rel`, or `None` when absent.
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The relative names of the entries directly or transitively under `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes `rel`; absent is not an error.
    fn delete(&self, rel: &str) -> Result<(), StoreError>;
}

/// State in a local (or shared, POSIX) directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// State under `root` (the dataset directory).
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn parent_dir(&self, path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(parent) => std::fs::create_dir_all(parent).map_err(io_err("creating", parent)),
            None => Ok(()),
        }
    }
}

impl StateStore for LocalStore {
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(rel);
        self.parent_dir(&path)?;
        crate::util::write_atomic(&path, bytes).map_err(io_err("writing", &path))
    }

    fn put_new(&self, rel: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let path = self.path(rel);
        self.parent_dir(&path)?;
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err("creating", &path)(e)),
        };
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_err("writing", &path))?;
        Ok(true)
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut pending = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(rel) = pending.pop() {
            let dir = self.path(&rel);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("listing", &dir)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("listing", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let is_dir = entry.file_type().map_err(io_err("listing", &dir))?.is_dir();
                if is_dir {
                    pending.push(child);
                } else {
                    out.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let path = self.path(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }
}

impl StateStore for Remote {
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_bytes(rel, bytes.to_vec())
    }

    fn put_new(&self, rel: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        Remote::put_new(self, rel, bytes.to_vec())
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_bytes(rel)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = Remote::list(self, prefix)?
            .iter()
            .filter_map(|o| self.relative(&o.location))
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, rel: &str) -> Result<(), StoreError> {
        Remote::delete(self, rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_store_puts_once_lists_recursively_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        assert_eq!(s.get("a/b/c").unwrap(), None);
        assert!(s.put_new("a/b/claim", b"1").unwrap());
        assert!(!s.put_new("a/b/claim", b"2").unwrap());
        assert_eq!(s.get("a/b/claim").unwrap().as_deref(), Some(&b"1"[..]));
        s.put("a/b/0.done", b"0").unwrap();
        s.put("a/b/0.done", b"00").unwrap();
        s.put("a/x", b"x").unwrap();
        assert_eq!(s.get("a/b/0.done").unwrap().as_deref(), Some(&b"00"[..]));
        assert_eq!(s.list("a").unwrap(), ["a/b/0.done", "a/b/claim", "a/x"]);
        assert_eq!(s.list("a/b/").unwrap(), ["a/b/0.done", "a/b/claim"]);
        assert!(s.list("nothing").unwrap().is_empty());
        s.delete("a/b/claim").unwrap();
        s.delete("a/b/claim").unwrap();
        assert_eq!(s.get("a/b/claim").unwrap(), None);
    }
}
