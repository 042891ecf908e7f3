//! `validate`: checks a dataset directory against every invariant of the contract and reports
//! each violation with where it is (file, row, column), instead of stopping at the first.
//!
//! Shards are streamed one row group (64 rows by default) at a time, so memory stays bounded by
//! a batch plus one sample id per row (for the uniqueness check).
//!
//! The checks come in four parts: the directory listing and the manifest ([`listing`]), each
//! shard's schema, metadata and totals ([`shard`]), and each row: the checks every column of
//! `sink::columns::CONTRACT` declares by its shape and domain, plus the invariants between
//! columns ([`row`], [`relevance`]).

mod listing;
mod relevance;
mod row;
mod shard;

use listing::{check_listing, check_manifest};
use shard::check_shard;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::batch::batch_to_rows;
use super::columns::{Values, CONTRACT};
use super::duplicates::DuplicateFinder;
use super::encoding::{self, Encoding};
use super::error::{SinkError, SinkResult};
use super::manifest::{Manifest, Totals, MANIFEST_FILE};
use super::row::OutputRow;
use super::schema::{contract_schema, type_name, Layout, RELEVANCE_COLUMNS, SCHEMA_VERSION};
use crate::record::{pmi_control, RelevanceMethod};

/// At most this many violations are kept; the rest are only counted (a broken dataset of a
/// million rows should not produce a million-line report).
pub const MAX_VIOLATIONS: usize = 1000;

/// Rows per record batch when streaming a shard.
const READ_BATCH_ROWS: usize = 64;

/// Tolerance of Σ exp(top-k) + exp(tail) = 1.
pub const MASS_TOLERANCE: f64 = 1e-3;
/// Tolerance between a top-k log-prob and `teacher_logprobs` for the same token.
pub const TOPK_MATCH_TOLERANCE: f64 = 1e-4;
/// Tolerance of `advantages = teacher − student`.
pub const ADVANTAGE_TOLERANCE: f64 = 1e-5;
/// |Σ exp(top-k) + exp(tail) − 1| allowed in the compact encoding: the decoded log-probs carry
/// the code's error (measured at most 0.012 on the sample data's 1 428 positions).
pub const COMPACT_MASS_TOLERANCE: f64 = 0.05;

/// One broken invariant and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// File it concerns (`manifest.json`, a shard), if any.
    pub file: Option<String>,
    /// Row index inside the shard (0-based), for row-level checks.
    pub row: Option<u64>,
    /// Column it concerns, for column- and row-level checks.
    pub column: Option<String>,
    /// What is wrong, with the values involved.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut loc = Vec::new();
        if let Some(x) = &self.file {
            loc.push(x.clone());
        }
        if let Some(r) = self.row {
            loc.push(format!("row {r}"));
        }
        if let Some(c) = &self.column {
            loc.push(format!("column {c}"));
        }
        if loc.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", loc.join(", "), self.message)
        }
    }
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The dataset directory.
    pub dir: PathBuf,
    /// Shards opened and read.
    pub shards_checked: u64,
    /// Rows read.
    pub rows_checked: u64,
    /// Response tokens read.
    pub response_tokens: u64,
    /// Violations found (at most [`MAX_VIOLATIONS`]).
    pub violations: Vec<Violation>,
    /// Violations beyond [`MAX_VIOLATIONS`], counted only.
    pub suppressed: u64,
}

impl ValidationReport {
    /// True when the dataset satisfies the contract.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.suppressed == 0
    }

    /// The violations concerning `column` (`None`: file-level ones) whose message contains
    /// `needle`; lets callers and tests look for a specific failure.
    pub fn find(&self, column: Option<&str>, needle: &str) -> Vec<&Violation> {
        self.violations
            .iter()
            .filter(|v| v.column.as_deref() == column && v.message.contains(needle))
            .collect()
    }

    fn push(
        &mut self,
        file: Option<&str>,
        row: Option<u64>,
        column: Option<&str>,
        message: String,
    ) {
        if self.violations.len() >= MAX_VIOLATIONS {
            self.suppressed += 1;
            return;
        }
        self.violations.push(Violation {
            file: file.map(str::to_string),
            row,
            column: column.map(str::to_string),
            message,
        });
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        if self.suppressed > 0 {
            writeln!(f, "  ... and {} more", self.suppressed)?;
        }
        write!(
            f,
            "{}: {} shards, {} rows, {} response tokens checked; {}",
            self.dir.display(),
            self.shards_checked,
            self.rows_checked,
            self.response_tokens,
            if self.is_ok() {
                "no violations".to_string()
            } else {
                format!(
                    "{} violations",
                    self.violations.len() as u64 + self.suppressed
                )
            }
        )
    }
}

/// Checks every invariant of the contract on the dataset in `dir`. Returns `Err` only when `dir`
/// itself is unusable (missing, not a directory, unreadable); everything wrong *inside* it is a
/// [`Violation`] in the report.
pub fn validate(dir: &Path) -> SinkResult<ValidationReport> {
    let meta = std::fs::metadata(dir).map_err(|e| SinkError::io("opening", dir, e))?;
    if !meta.is_dir() {
        return Err(SinkError::io(
            "opening",
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    let mut rep = ValidationReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    let manifest = match Manifest::read(dir) {
        Ok(m) => Some(m),
        Err(e) => {
            rep.push(
                Some(MANIFEST_FILE),
                None,
                None,
                format!("unusable manifest: {e}"),
            );
            None
        }
    };
    let listed: HashSet<String> = manifest
        .as_ref()
        .map(|m| m.shards.iter().map(|s| s.file.clone()).collect())
        .unwrap_or_default();
    check_listing(dir, &listed, &mut rep)?;
    let Some(m) = manifest else {
        return Ok(rep);
    };
    check_manifest(&m, &mut rep);
    check_shards(dir, &m, m.shards.iter(), &mut rep);
    Ok(rep)
}

/// The row checks of `shards` (a part of `m`'s), with duplicate ids (in bounded memory:
/// [`DuplicateFinder`])
/// looked for among them.
fn check_shards<'a>(
    dir: &Path,
    m: &Manifest,
    shards: impl Iterator<Item = &'a super::shard::ShardInfo>,
    rep: &mut ValidationReport,
) {
    let mut ids = DuplicateFinder::default();
    let mut names: Vec<&str> = Vec::new();
    for shard in shards {
        if !crate::util::is_plain_name(&shard.file) {
            rep.push(
                Some(MANIFEST_FILE),
                None,
                None,
                format!("shard name '{}' is not a plain file name", shard.file),
            );
            continue;
        }
        check_shard(dir, m, shard, (&mut ids, names.len() as u32), rep);
        names.push(&shard.file);
    }
    match ids.repeats() {
        Ok(repeats) => {
            for r in repeats {
                let (file, first) = (names[r.shard as usize], names[r.first_shard as usize]);
                let msg = format!(
                    "duplicate sample_id {} (first in {first} row {})",
                    r.id, r.first_row
                );
                rep.push(Some(file), Some(r.row), Some("sample_id"), msg);
            }
        }
        Err(e) => rep.push(
            None,
            None,
            Some("sample_id"),
            format!("cannot check sample ids for duplicates: {e}"),
        ),
    }
}

/// The audit of write–audit–publish: the contract checks of [`validate`] on the manifest about
/// to be published and on the given shards of it (those the run wrote), before readers see
/// them. Duplicate ids are checked among those shards only (the run's dedup covers the rest).
pub fn audit_shards(dir: &Path, next: &Manifest, files: &[String]) -> ValidationReport {
    let mut rep = ValidationReport {
        dir: dir.to_path_buf(),
        ..Default::default()
    };
    check_manifest(next, &mut rep);
    let shards = next.shards.iter().filter(|s| files.contains(&s.file));
    check_shards(dir, next, shards, &mut rep);
    rep
}

/// |x| ≤ tol, false for NaN (so a NaN is always reported).
pub(super) fn within(x: f64, tol: f64) -> bool {
    x.abs() <= tol
}
