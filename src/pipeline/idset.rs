//! The sample ids a run must not write again, in memory that does not grow with the dataset's
//! age: the ids of the committed chunks live on disk as one sorted file of 16-byte ids
//! (`_state/idset/<run>/ids.sorted`, searched by binary search), and only the ids this run adds are
//! kept in memory.
//!
//! The sorted file is derived data, rebuilt from the chunks' id lists (`_state/chunks/*.ids`)
//! whenever its `index.json` does not name exactly the chunks it covers; a run on a
//! dataset it covers already reads nothing. New chunks are folded in by an external sort:
//! sorted runs of at most [`BATCH_IDS`] ids, then one k-way merge with the file, so building it
//! takes a fixed buffer whatever the dataset's size, and a night's increment costs one
//! streaming pass over the file (16 bytes per row: 1.6 GB at 100M rows). A sample id is 32 hex digits (128
//! bits) and is stored as that number; anything else (a hand-edited list) is stored as the
//! first 128 bits of its sha256.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{ChunkState, RunState, StateError};
use crate::sink::dataset::chunk_ids_rel;
pub use crate::sink::duplicates::id_key;

/// Most ids sorted in memory at once while the file is built (16 MiB of ids).
pub const BATCH_IDS: usize = 1 << 20;

const DIR: &str = "_state/idset";
const SORTED: &str = "ids.sorted";
const INDEX: &str = "index.json";

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Which chunks the sorted file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    chunks: BTreeSet<String>,
    ids: u64,
}

/// The ids of the committed chunks a run dedups against, plus those it writes.
pub struct IdSet {
    sorted: Option<File>,
    len: u64,
    added: HashSet<u128>,
}

impl IdSet {
    /// An empty set (nothing on disk).
    pub fn empty() -> Self {
        IdSet {
            sorted: None,
            len: 0,
            added: HashSet::new(),
        }
    }

    /// The set of the committed chunks `include` selects, bringing the sorted file up to date
    /// first. `name` keeps the files of runs that select differently apart (each sharded task
    /// has its own); they are local to `dir` and never uploaded.
    pub fn open(
        dir: &Path,
        name: &str,
        state: &RunState,
        include: impl Fn(&ChunkState) -> bool,
    ) -> Result<Self, StateError> {
        let chunks: BTreeSet<String> = state
            .committed()
            .into_iter()
            .filter(|c| include(c))
            .map(|c| c.chunk_id.clone())
            .collect();
        let base = dir.join(DIR).join(name);
        std::fs::create_dir_all(&base).map_err(io("creating", &base))?;
        let sorted_path = base.join(SORTED);
        let index_path = base.join(INDEX);
        let mut index: Index = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let sorted_len = std::fs::metadata(&sorted_path).map(|m| m.len()).ok();
        // Stale (a chunk it holds is gone, e.g. another task's, or the file does not match its
        // index): start over.
        if !index.chunks.is_subset(&chunks) || sorted_len != Some(index.ids * 16) {
            index = Index::default();
            write_new(&sorted_path, &[])?;
        }
        let missing: Vec<String> = chunks.difference(&index.chunks).cloned().collect();
        if !missing.is_empty() {
            // An external sort: sorted runs of at most BATCH_IDS ids, then one k-way merge with
            // the file, so memory stays one batch whatever the dataset's size.
            let mut batch: Vec<u128> = Vec::new();
            let mut runs: Vec<PathBuf> = Vec::new();
            for chunk in &missing {
                let path = dir.join(chunk_ids_rel(chunk));
                let f = File::open(&path).map_err(io("opening", &path))?;
                for line in BufReader::new(f).lines() {
                    let line = line.map_err(io("reading", &path))?;
                    if !line.is_empty() {
                        batch.push(id_key(&line));
                    }
                    if batch.len() >= BATCH_IDS {
                        runs.push(write_run(&base, runs.len(), std::mem::take(&mut batch))?);
                    }
                }
            }
            if !batch.is_empty() {
                runs.push(write_run(&base, runs.len(), batch)?);
            }
            index.ids = merge_runs(&sorted_path, &runs)?;
            index.chunks.extend(missing);
            let json = serde_json::to_vec(&index).map_err(|e| StateError::Corrupt {
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            crate::util::write_atomic(&index_path, &json).map_err(io("writing", &index_path))?;
        }
        let file = File::open(&sorted_path).map_err(io("opening", &sorted_path))?;
        Ok(IdSet {
            sorted: Some(file),
            len: index.ids,
            added: HashSet::new(),
        })
    }

    /// Whether the dataset (or this run) has a row with this id.
    pub fn contains(&mut self, id: &str) -> bool {
        let key = id_key(id);
        self.added.contains(&key) || self.on_disk(key)
    }

    /// Records a row this run writes; false when the id was there already.
    pub fn insert(&mut self, id: &str) -> bool {
        let key = id_key(id);
        !self.on_disk(key) && self.added.insert(key)
    }

    /// Ids on disk (committed chunks), not counting this run's.
    pub fn committed_len(&self) -> u64 {
        self.len
    }

    fn on_disk(&mut self, key: u128) -> bool {
        let Some(f) = self.sorted.as_mut() else {
            return false;
        };
        let (mut lo, mut hi) = (0u64, self.len);
        let mut buf = [0u8; 16];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // A read error (the file vanished under the run) reads as "not there": the
            // after-scoring dedup and finalize still catch a duplicate.
            if f.seek(SeekFrom::Start(mid * 16)).is_err() || f.read_exact(&mut buf).is_err() {
                return false;
            }
            let v = u128::from_be_bytes(buf);
            match v.cmp(&key) {
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        false
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::util::write_atomic(path, bytes).map_err(io("writing", path))
}

/// One sorted, deduplicated run of ids in a temporary file beside the sorted file.
fn write_run(base: &Path, n: usize, mut batch: Vec<u128>) -> Result<PathBuf, StateError> {
    batch.sort_unstable();
    batch.dedup();
    let path = base.join(format!("run-{n}.tmp"));
    let f = File::create(&path).map_err(io("creating", &path))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    for v in batch {
        w.write_all(&v.to_be_bytes())
            .map_err(io("writing", &path))?;
    }
    w.flush().map_err(io("writing", &path))?;
    Ok(path)
}

/// Sorted ids read back one at a time.
struct Sorted {
    reader: BufReader<File>,
    path: PathBuf,
}

impl Sorted {
    fn open(path: &Path) -> Result<Self, StateError> {
        let f = File::open(path).map_err(io("opening", path))?;
        Ok(Sorted {
            reader: BufReader::with_capacity(1 << 16, f),
            path: path.to_path_buf(),
        })
    }

    fn next(&mut self) -> Result<Option<u128>, StateError> {
        let mut buf = [0u8; 16];
        match self.reader.read_exact(&mut buf) {
            Ok(()) => Ok(Some(u128::from_be_bytes(buf))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(io("reading", &self.path)(e)),
        }
    }
}

/// Merges the sorted file and the sorted `runs` into the sorted file (one pass, a heap of one
/// id per input), deletes the runs and returns the number of ids the file then holds.
fn merge_runs(path: &Path, runs: &[PathBuf]) -> Result<u64, StateError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut inputs = vec![Sorted::open(path)?];
    for r in runs {
        inputs.push(Sorted::open(r)?);
    }
    let mut heap = BinaryHeap::new();
    for (i, input) in inputs.iter_mut().enumerate() {
        if let Some(v) = input.next()? {
            heap.push(Reverse((v, i)));
        }
    }
    let tmp: PathBuf = path.with_extension("merge.tmp");
    let out = File::create(&tmp).map_err(io("creating", &tmp))?;
    let mut writer = BufWriter::with_capacity(1 << 20, out);
    let mut last: Option<u128> = None;
    let mut written = 0u64;
    while let Some(Reverse((v, i))) = heap.pop() {
        if last != Some(v) {
            writer
                .write_all(&v.to_be_bytes())
                .map_err(io("writing", &tmp))?;
            written += 1;
            last = Some(v);
        }
        if let Some(next) = inputs[i].next()? {
            heap.push(Reverse((next, i)));
        }
    }
    writer.flush().map_err(io("writing", &tmp))?;
    drop(writer);
    std::fs::rename(&tmp, path).map_err(io("renaming", &tmp))?;
    for r in runs {
        std::fs::remove_file(r).map_err(io("removing", r))?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_batches_stay_sorted_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids.sorted");
        write_new(&p, &[]).unwrap();
        let run = |n, v| write_run(dir.path(), n, v).unwrap();
        assert_eq!(merge_runs(&p, &[run(0, vec![5, 1, 9, 5])]).unwrap(), 3);
        let runs = [run(0, vec![2, 9]), run(1, vec![0, 12, 2])];
        assert_eq!(merge_runs(&p, &runs).unwrap(), 6);
        assert!(!runs[0].exists(), "runs are deleted");
        let bytes = std::fs::read(&p).unwrap();
        let got: Vec<u128> = bytes
            .chunks(16)
            .map(|c| u128::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 5, 9, 12]);
        let mut s = IdSet {
            sorted: Some(File::open(&p).unwrap()),
            len: 6,
            added: HashSet::new(),
        };
        for v in [0u128, 1, 2, 5, 9, 12] {
            assert!(s.on_disk(v));
        }
        for v in [3u128, 4, 13, u128::MAX] {
            assert!(!s.on_disk(v));
        }
    }

    #[test]
    fn hex_ids_are_their_number_and_others_are_hashed() {
        assert_eq!(id_key("0000000000000000000000000000000f"), 15);
        assert_ne!(id_key("not-an-id"), id_key("not-an-id2"));
        let mut s = IdSet::empty();
        assert!(s.insert("00000000000000000000000000000001"));
        assert!(!s.insert("00000000000000000000000000000001"));
        assert!(s.contains("00000000000000000000000000000001"));
        assert!(!s.contains("00000000000000000000000000000002"));
    }
}
