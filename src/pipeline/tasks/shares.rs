//! Shares: which input files each task of a sharded run reads.

use super::*;

/// One task's share of a sharded run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSlice {
    /// This task, 0-based.
    pub index: u32,
    /// How many tasks share the run.
    pub count: u32,
}

impl TaskSlice {
    /// A plain run: the only task of one.
    pub const SINGLE: TaskSlice = TaskSlice { index: 0, count: 1 };

    /// Whether this is a plain run (it finalizes itself).
    pub fn is_single(&self) -> bool {
        self.count == 1
    }

    /// Checks `0 <= index < count`.
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 {
            return Err("--num-tasks must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "--task-index {index} is out of range for --num-tasks {count} (0..={})",
                count - 1
            ));
        }
        Ok(TaskSlice { index, count })
    }

    /// This task's share of the input files, given their sizes in input order: the files whose
    /// byte midpoint falls in the task's `1/N` of the total (all files by position when they
    /// are all empty). Shares of the N tasks are disjoint, contiguous and cover every file.
    pub fn share(&self, sizes: &[u64]) -> Range<usize> {
        let owners = share_owners(sizes, self.count);
        let index = self.index;
        let first = owners
            .iter()
            .position(|&o| o >= index)
            .unwrap_or(owners.len());
        let end = owners
            .iter()
            .position(|&o| o > index)
            .unwrap_or(owners.len());
        first..end
    }

    /// Whether a committed chunk was written by this task (of a run with the same N).
    pub fn owns_tag(&self, tag: &TaskTag) -> bool {
        tag.index == self.index && tag.num_tasks == self.count
    }

    /// The task's lock file in the dataset directory.
    pub fn lock_name(&self) -> String {
        format!(".lock-task-{}", self.index)
    }

    /// Where the task writes the quarantine of its share (finalize joins them in task order); a
    /// plain run writes the dataset's own.
    pub fn quarantine_rel(&self) -> String {
        if self.is_single() {
            return QUARANTINE_FILE.to_string();
        }
        format!(
            "_state/tasks/{}/quarantine-{}.jsonl",
            self.count, self.index
        )
    }

    /// The completion marker.
    pub fn marker_rel(&self) -> String {
        marker_rel(self.count, self.index)
    }
}

/// The task of each file: the one in whose `1/n` of the total bytes the file's midpoint lies
/// (by position when every file is empty). Non-decreasing, so every share is contiguous.
pub(super) fn share_owners(sizes: &[u64], n: u32) -> Vec<u32> {
    let n = u128::from(n.max(1));
    let total: u128 = sizes.iter().map(|&s| u128::from(s)).sum();
    let len = (sizes.len() as u128).max(1);
    let mut before = 0u128;
    sizes
        .iter()
        .enumerate()
        .map(|(j, &size)| {
            let size = u128::from(size);
            let owner = if total == 0 {
                j as u128 * n / len
            } else {
                n * (2 * before + size) / (2 * total)
            };
            before += size;
            // Below n by construction; the cast cannot truncate.
            owner.min(n - 1) as u32
        })
        .collect()
}

/// The part of the input a task read: a contiguous run of the expanded input files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShare {
    /// Position of the share's first file among all input files (0-based)...
    pub first_file: usize,
    /// ...and one past its last (`first_file == end_file`: an empty share).
    pub end_file: usize,
    /// How many files the whole input has.
    pub files_total: usize,
    /// Bytes of the share's files (file or object sizes, compressed).
    pub bytes: u64,
    /// Bytes of the whole input.
    pub bytes_total: u64,
    /// The share's files, by URI, in input order.
    pub files: Vec<String>,
}
