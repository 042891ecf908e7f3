//! `validate`: checks a dataset directory against every invariant of the contract and reports
//! each violation with where it is (file, row, column), instead of stopping at the first.
//!
//! Shards are streamed one row group (64 rows by default) at a time, so memory stays bounded by
//! a batch plus one sample id per row (for the uniqueness check).

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
use crate::score::{pmi_control, RelevanceMethod};

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

/// Leftover temporary files and shards the manifest does not list.
fn check_listing(
    dir: &Path,
    listed: &HashSet<String>,
    rep: &mut ValidationReport,
) -> SinkResult<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| SinkError::io("listing", dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        if name.ends_with(".tmp") {
            rep.push(
                Some(&name),
                None,
                None,
                "leftover temporary file (an interrupted write)".into(),
            );
        } else if name.starts_with("part-") && name.ends_with(".parquet") && !listed.contains(&name)
        {
            rep.push(
                Some(&name),
                None,
                None,
                "unlisted shard: present in the directory but not in the manifest".into(),
            );
        }
    }
    Ok(())
}

fn check_manifest(m: &Manifest, rep: &mut ValidationReport) {
    let f = Some(MANIFEST_FILE);
    if m.schema_version != SCHEMA_VERSION {
        rep.push(
            f,
            None,
            None,
            format!(
                "schema_version is {}, expected {SCHEMA_VERSION}",
                m.schema_version
            ),
        );
    }
    if m.dataset.schema_version != SCHEMA_VERSION {
        rep.push(
            f,
            None,
            None,
            format!(
                "dataset.schema_version is {}, expected {SCHEMA_VERSION}",
                m.dataset.schema_version
            ),
        );
    }
    if m.dataset.top_k == 0 {
        rep.push(f, None, None, "dataset.top_k is 0".into());
    }
    let totals = Totals::of(&m.shards);
    if totals != m.totals {
        rep.push(
            f,
            None,
            None,
            format!(
                "totals {:?} do not match the sum over shards {:?}",
                m.totals, totals
            ),
        );
    }
    let mut seen = HashSet::new();
    for s in &m.shards {
        if !seen.insert(&s.file) {
            rep.push(f, None, None, format!("shard '{}' listed twice", s.file));
        }
    }
}

/// sha256 and size of a file, streamed.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

fn check_shard(
    dir: &Path,
    m: &Manifest,
    shard: &super::shard::ShardInfo,
    (ids, shard_index): (&mut DuplicateFinder, u32),
    rep: &mut ValidationReport,
) {
    let name = shard.file.as_str();
    let f = Some(name);
    let path = dir.join(name);
    if !path.exists() {
        rep.push(
            f,
            None,
            None,
            "missing shard: listed in the manifest but not on disk".into(),
        );
        return;
    }
    match hash_file(&path) {
        Ok((sha, bytes)) => {
            if sha != shard.sha256 {
                rep.push(
                    f,
                    None,
                    None,
                    format!(
                        "sha256 mismatch: file has {sha}, manifest says {}",
                        shard.sha256
                    ),
                );
            }
            if bytes != shard.bytes {
                rep.push(
                    f,
                    None,
                    None,
                    format!(
                        "byte size mismatch: file has {bytes}, manifest says {}",
                        shard.bytes
                    ),
                );
            }
        }
        Err(e) => {
            rep.push(f, None, None, format!("unreadable: {e}"));
            return;
        }
    }
    let reader = File::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|file| ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string()));
    let builder = match reader {
        Ok(b) => b,
        Err(e) => {
            rep.push(f, None, None, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    rep.shards_checked += 1;
    let layout = m.dataset.layout();
    let k = layout.top_k;
    // Schema.
    let expected = contract_schema(&layout);
    let actual = builder.schema().clone();
    let mut schema_ok = true;
    for field in expected.fields() {
        match actual.field_with_name(field.name()) {
            Err(_) => {
                schema_ok = false;
                rep.push(f, None, Some(field.name()), "column missing".into());
            }
            Ok(a)
                if a.data_type() != field.data_type() || a.is_nullable() != field.is_nullable() =>
            {
                schema_ok = false;
                rep.push(
                    f,
                    None,
                    Some(field.name()),
                    format!(
                        "type {}{} differs from the contract's {}{} (K={k}, K_s={}, {})",
                        type_name(a.data_type()),
                        if a.is_nullable() { " (nullable)" } else { "" },
                        type_name(field.data_type()),
                        if field.is_nullable() {
                            " (nullable)"
                        } else {
                            ""
                        },
                        layout.student_top_k,
                        layout.encoding.as_str(),
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    for a in actual.fields() {
        if expected.field_with_name(a.name()).is_err() {
            schema_ok = false;
            rep.push(f, None, Some(a.name()), "column not in the contract".into());
        }
    }
    let names: Vec<&str> = actual.fields().iter().map(|x| x.name().as_str()).collect();
    let order: Vec<&str> = expected
        .fields()
        .iter()
        .map(|x| x.name().as_str())
        .collect();
    if schema_ok && names != order {
        rep.push(f, None, None, "columns are not in contract order".into());
    }
    // Key-value metadata.
    let kv: BTreeMap<String, Option<String>> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|x| (x.key.clone(), x.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (key, want) in m.dataset.key_values() {
        match kv.get(&key) {
            None => rep.push(f, None, None, format!("metadata key '{key}' missing")),
            Some(got) if got.as_deref() != Some(want.as_str()) => rep.push(
                f,
                None,
                None,
                format!(
                    "metadata '{key}' is {:?}, manifest says {want:?}",
                    got.as_deref().unwrap_or("")
                ),
            ),
            Some(_) => {}
        }
    }
    let file_rows = builder.metadata().file_metadata().num_rows();
    if file_rows != shard.rows as i64 {
        rep.push(
            f,
            None,
            None,
            format!(
                "row count mismatch: file has {file_rows}, manifest says {}",
                shard.rows
            ),
        );
    }
    if !schema_ok {
        return;
    }
    // Rows.
    let reader = match builder.with_batch_size(READ_BATCH_ROWS).build() {
        Ok(r) => r,
        Err(e) => {
            rep.push(f, None, None, format!("not a readable Parquet file: {e}"));
            return;
        }
    };
    let mut row_idx = 0u64;
    let mut tokens = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                rep.push(
                    f,
                    Some(row_idx),
                    None,
                    format!("cannot decode row group: {e}"),
                );
                return;
            }
        };
        let rows = match batch_to_rows(&batch) {
            Ok(r) => r,
            Err(e) => {
                rep.push(f, Some(row_idx), None, format!("cannot decode rows: {e}"));
                return;
            }
        };
        for r in &rows {
            check_row(r, &layout, m.dataset.vocab_size, name, row_idx, rep);
            check_relevance(r, &m.dataset, name, row_idx, rep);
            if let Err(e) = ids.add(&r.sample_id, shard_index, row_idx) {
                rep.push(
                    f,
                    Some(row_idx),
                    Some("sample_id"),
                    format!("cannot record the id: {e}"),
                );
            }
            tokens += r.completion_ids.len() as u64;
            row_idx += 1;
        }
    }
    rep.rows_checked += row_idx;
    rep.response_tokens += tokens;
    if tokens != shard.response_tokens {
        rep.push(
            f,
            None,
            None,
            format!(
                "response token count mismatch: file has {tokens}, manifest says {}",
                shard.response_tokens
            ),
        );
    }
}

/// The relevance columns: finite values; `relevance` is the column of the dataset's
/// `relevance_method` (null exactly where that one is); no kept row is under the threshold;
/// `relevance_pmi` and `relevance_pmi_mean` are null together and share their sign (one is the
/// other divided by a token count); no PMI for a demonstration (it has no feedback to probe).
fn check_relevance(
    r: &OutputRow,
    meta: &super::meta::DatasetMeta,
    file: &str,
    row: u64,
    rep: &mut ValidationReport,
) {
    let mut bad =
        |column: &str, message: String| rep.push(Some(file), Some(row), Some(column), message);
    let by_column = |name: &str| match name {
        "relevance_kl" => Some(r.relevance_kl),
        "relevance_control_kl" => r.relevance_control_kl,
        "relevance_pmi" => r.relevance_pmi,
        "relevance_pmi_mean" => r.relevance_pmi_mean,
        _ => r.relevance_pmi_answer,
    };
    for (column, _) in RELEVANCE_COLUMNS {
        if let Some(x) = by_column(column).filter(|x| !x.is_finite()) {
            bad(column, format!("{x} is not finite"));
        }
    }
    if let Some(x) = r.relevance.filter(|x| !x.is_finite()) {
        bad("relevance", format!("{x} is not finite"));
    }
    if meta.relevance_method == RelevanceMethod::PmiControl.as_str() {
        // The combination has no column of its own: recompute it from the two it combines.
        let want = r
            .relevance_pmi
            .zip(r.relevance_control_kl)
            .map(|(p, kl)| pmi_control(f64::from(p), f64::from(kl)));
        let agrees = match (want, r.relevance) {
            (Some(w), Some(x)) => within(f64::from(x) - w, 1e-4 * w.abs().max(1.0)),
            (None, None) => true,
            _ => false,
        };
        if !agrees {
            bad(
                "relevance",
                format!(
                    "is {:?}, but relevance_method is 'pmi_control' and relevance_pmi + \
                     ln(max(relevance_control_kl, 1e-6)) is {want:?}",
                    r.relevance
                ),
            );
        }
    } else {
        match RELEVANCE_COLUMNS
            .iter()
            .find(|(_, m)| m.as_str() == meta.relevance_method)
        {
            None => bad(
                "relevance",
                format!(
                    "the dataset's relevance_method '{}' is not a known method",
                    meta.relevance_method
                ),
            ),
            Some((column, _)) => {
                let want = by_column(column);
                if want.map(f32::to_bits) != r.relevance.map(f32::to_bits) {
                    bad(
                        "relevance",
                        format!(
                            "is {:?}, but relevance_method is '{}' and {column} is {want:?}",
                            r.relevance, meta.relevance_method
                        ),
                    );
                }
            }
        }
    }
    if let (Some(x), Some(t)) = (r.relevance, meta.relevance_threshold) {
        if f64::from(x) < t {
            bad(
                "relevance",
                format!("{x} is under the dataset's relevance_threshold {t}: the row should have been dropped"),
            );
        }
    }
    match (r.relevance_pmi, r.relevance_pmi_mean) {
        (Some(s), Some(m)) if s.signum() != m.signum() && s != 0.0 && m != 0.0 => bad(
            "relevance_pmi_mean",
            format!("{m} has another sign than relevance_pmi {s} (it is its mean over tokens)"),
        ),
        (Some(_), None) | (None, Some(_)) => bad(
            "relevance_pmi_mean",
            "relevance_pmi and relevance_pmi_mean must be null together".into(),
        ),
        _ => {}
    }
    if r.relevance_pmi_answer.is_some() && r.relevance_pmi.is_none() {
        bad(
            "relevance_pmi_answer",
            "set while relevance_pmi is null (both come from the same feedback probe)".into(),
        );
    }
    if r.source_kind == "demonstration" && r.relevance_pmi.is_some() {
        bad(
            "relevance_pmi",
            "set on a demonstration (a demonstration is no reaction to a response)".into(),
        );
    }
}

/// |x| ≤ tol, false for NaN (so a NaN is always reported).
fn within(x: f64, tol: f64) -> bool {
    x.abs() <= tol
}

/// Row-level invariants. Per-token checks report the first offending position per column.
/// Compact datasets are checked on the decoded values, with the code's error bound added to
/// each tolerance.
fn check_row(
    r: &OutputRow,
    layout: &Layout,
    vocab: usize,
    file: &str,
    row: u64,
    rep: &mut ValidationReport,
) {
    let (k, ks) = (layout.top_k, layout.student_top_k);
    let compact = layout.encoding == Encoding::Compact;
    let mut bad =
        |column: &str, message: String| rep.push(Some(file), Some(row), Some(column), message);
    if r.schema_version != SCHEMA_VERSION {
        bad(
            "schema_version",
            format!("is {}, expected {SCHEMA_VERSION}", r.schema_version),
        );
    }
    // Label columns may only take the values the column table allows.
    for c in &CONTRACT {
        let (Some(allowed), Values::Text(_, get, _)) = (c.allowed, c.values) else {
            continue;
        };
        let v = get(r);
        if !allowed.contains(&v) {
            bad(c.name, format!("unknown value '{v}'"));
        }
    }
    // Columns the layout leaves null must be null; the others must not be.
    for c in &CONTRACT {
        let present = match c.values {
            Values::OptTopKI32(get, _) => get(r).is_some(),
            Values::OptTopKF32(get, _) => get(r).is_some(),
            _ => continue,
        };
        let omitted = layout.omitted(c);
        if present == omitted {
            let why = if omitted {
                format!(
                    "is set, but the dataset's layout (K_s={ks}, {}) leaves it null",
                    layout.encoding.as_str()
                )
            } else {
                format!(
                    "is null, but the dataset's layout (K_s={ks}, {}) stores it",
                    layout.encoding.as_str()
                )
            };
            bad(c.name, why);
        }
    }
    let t = r.completion_ids.len();
    if t == 0 {
        bad("completion_ids", "empty completion".into());
    }
    if r.num_completion_tokens as i64 != t as i64 {
        bad(
            "num_completion_tokens",
            format!(
                "is {}, but completion_ids has {t} tokens",
                r.num_completion_tokens
            ),
        );
    }
    let per_token: [(&str, usize); 7] = [
        ("loss_mask", r.loss_mask.len()),
        ("student_logprobs", r.student_logprobs.len()),
        ("teacher_logprobs", r.teacher_logprobs.len()),
        ("advantages", r.advantages.len()),
        ("teacher_tail_logmass", r.teacher_tail_logmass.len()),
        ("teacher_logz", r.teacher_logz.len()),
        ("student_logz", r.student_logz.len()),
    ];
    let none: &[f32] = &[];
    let student_topk = r.student_topk_logprobs.as_deref();
    let s_ids = r.student_topk_ids.as_deref();
    let s_self = r.student_topk_logprobs_self.as_deref();
    let t_at_s = r.teacher_logprobs_at_student_topk.as_deref();
    let topk: [(&str, Option<usize>, usize); 6] = [
        ("teacher_topk_ids", Some(r.teacher_topk_ids.len()), k),
        (
            "teacher_topk_logprobs",
            Some(r.teacher_topk_logprobs.len()),
            k,
        ),
        ("student_topk_logprobs", student_topk.map(<[_]>::len), k),
        ("student_topk_ids", s_ids.map(<[_]>::len), ks),
        ("student_topk_logprobs_self", s_self.map(<[_]>::len), ks),
        (
            "teacher_logprobs_at_student_topk",
            t_at_s.map(<[_]>::len),
            ks,
        ),
    ];
    let mut aligned = true;
    for (column, len) in per_token {
        if len != t {
            aligned = false;
            bad(
                column,
                format!("length {len} != T = {t} (len(completion_ids))"),
            );
        }
    }
    for (column, len, width) in topk {
        match len {
            Some(len) if len != t * width => {
                aligned = false;
                bad(
                    column,
                    format!("{len} values != T × K = {t} × {width} (len(completion_ids) × width)"),
                );
            }
            _ => {}
        }
    }
    if let Some(i) = r.loss_mask.iter().position(|&x| x > 1) {
        bad(
            "loss_mask",
            format!("value {} at t={i} is not 0 or 1", r.loss_mask[i]),
        );
    }
    for (column, ids) in [
        ("prompt_ids", r.prompt_ids.as_slice()),
        ("teacher_prompt_ids", &r.teacher_prompt_ids),
        ("completion_ids", &r.completion_ids),
        ("teacher_topk_ids", &r.teacher_topk_ids),
        ("student_topk_ids", s_ids.unwrap_or_default()),
    ] {
        if let Some(i) = ids.iter().position(|&x| x < 0 || x as usize >= vocab) {
            bad(
                column,
                format!(
                    "token id {} at index {i} is outside the vocabulary ({vocab})",
                    ids[i]
                ),
            );
        }
    }
    for (column, xs) in [
        ("student_logprobs", r.student_logprobs.as_slice()),
        ("teacher_logprobs", &r.teacher_logprobs),
        ("teacher_topk_logprobs", &r.teacher_topk_logprobs),
        ("student_topk_logprobs", student_topk.unwrap_or(none)),
        ("teacher_tail_logmass", &r.teacher_tail_logmass),
        ("student_topk_logprobs_self", s_self.unwrap_or(none)),
        ("teacher_logprobs_at_student_topk", t_at_s.unwrap_or(none)),
    ] {
        if let Some(i) = xs.iter().position(|x| !x.is_finite() || *x > 0.0) {
            bad(
                column,
                format!("log-prob {} at index {i} is not finite and <= 0", xs[i]),
            );
        }
    }
    for (column, xs) in [
        ("teacher_logz", &r.teacher_logz),
        ("student_logz", &r.student_logz),
    ] {
        if let Some(i) = xs.iter().position(|x| !x.is_finite()) {
            bad(
                column,
                format!("log-normaliser {} at t={i} is not finite", xs[i]),
            );
        }
    }
    if !aligned || k == 0 {
        return;
    }
    // A stored log-prob equals the exact one within this tolerance: float32 rounding, plus the
    // code's error bound in the compact encoding.
    let tol = |exact: f32| {
        if compact && exact as f64 >= encoding::CODE_FLOOR {
            TOPK_MATCH_TOLERANCE + encoding::error_bound(exact)
        } else if compact {
            f64::INFINITY
        } else {
            TOPK_MATCH_TOLERANCE
        }
    };
    let mass_tol = if compact {
        COMPACT_MASS_TOLERANCE
    } else {
        MASS_TOLERANCE
    };
    let mut sorted_bad = None;
    let mut mass_bad = None;
    let mut match_bad = None;
    let mut adv_bad = None;
    for i in 0..t {
        let lp = &r.teacher_topk_logprobs[i * k..(i + 1) * k];
        let ids = &r.teacher_topk_ids[i * k..(i + 1) * k];
        if sorted_bad.is_none() && lp.windows(2).any(|w| w[0] < w[1]) {
            sorted_bad = Some(i);
        }
        if mass_bad.is_none() {
            let mass: f64 = lp.iter().map(|&x| (x as f64).exp()).sum::<f64>()
                + (r.teacher_tail_logmass[i] as f64).exp();
            if !within(mass - 1.0, mass_tol) {
                mass_bad = Some((i, mass));
            }
        }
        if match_bad.is_none() {
            if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
                let d = (lp[j] as f64 - r.teacher_logprobs[i] as f64).abs();
                if !within(d, tol(r.teacher_logprobs[i])) {
                    match_bad = Some((i, lp[j], r.teacher_logprobs[i]));
                }
            }
        }
        if adv_bad.is_none() {
            let want = r.teacher_logprobs[i] as f64 - r.student_logprobs[i] as f64;
            if !within(r.advantages[i] as f64 - want, ADVANTAGE_TOLERANCE) {
                adv_bad = Some((i, r.advantages[i], want));
            }
        }
    }
    if let Some(i) = sorted_bad {
        bad(
            "teacher_topk_logprobs",
            format!("top-k not sorted descending at t={i}"),
        );
    }
    if let Some((i, mass)) = mass_bad {
        bad(
            "teacher_tail_logmass",
            format!(
                "sum exp(top-k) + exp(tail) = {mass:.6} at t={i}, expected 1 within {mass_tol}"
            ),
        );
    }
    if let Some((i, a, b)) = match_bad {
        bad("teacher_topk_logprobs", format!("top-k log-prob {a} of the completion token at t={i} differs from teacher_logprobs {b}"));
    }
    if let Some((i, a, want)) = adv_bad {
        bad(
            "advantages",
            format!("advantages[{i}] = {a} != teacher - student = {want}"),
        );
    }
    if let (Some(s_ids), Some(t_at_s)) = (s_ids, t_at_s) {
        check_student_side(r, k, ks, s_ids, s_self, t_at_s, &tol, &mut bad);
    }
}

/// The student-side columns agree with the rest of the row: the student's own top-k is sorted
/// and holds at most all the mass; where its id is the response token, its log-prob is
/// `student_logprobs` and the teacher's there is `teacher_logprobs`; where its id is also in the
/// teacher's top-k, the teacher's log-prob there is the same in both columns.
#[allow(clippy::too_many_arguments)]
fn check_student_side(
    r: &OutputRow,
    k: usize,
    ks: usize,
    s_ids: &[i32],
    s_self: Option<&[f32]>,
    t_at_s: &[f32],
    tol: &dyn Fn(f32) -> f64,
    bad: &mut dyn FnMut(&str, String),
) {
    if ks == 0 {
        return;
    }
    let t = r.completion_ids.len();
    let mut sorted_bad = None;
    let mut mass_bad = None;
    let mut self_bad = None;
    let mut teacher_bad = None;
    let mut cross_bad = None;
    for i in 0..t {
        let ids = &s_ids[i * ks..(i + 1) * ks];
        let tl = &t_at_s[i * ks..(i + 1) * ks];
        if let Some(sl) = s_self.map(|s| &s[i * ks..(i + 1) * ks]) {
            if sorted_bad.is_none() && sl.windows(2).any(|w| w[0] < w[1]) {
                sorted_bad = Some(i);
            }
            let mass: f64 = sl.iter().map(|&x| (x as f64).exp()).sum();
            if mass_bad.is_none() && mass > 1.0 + MASS_TOLERANCE {
                mass_bad = Some((i, mass));
            }
            if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
                let d = (sl[j] as f64 - r.student_logprobs[i] as f64).abs();
                if self_bad.is_none() && !within(d, TOPK_MATCH_TOLERANCE) {
                    self_bad = Some((i, sl[j], r.student_logprobs[i]));
                }
            }
        }
        if let Some(j) = ids.iter().position(|&id| id == r.completion_ids[i]) {
            let d = (tl[j] as f64 - r.teacher_logprobs[i] as f64).abs();
            if teacher_bad.is_none() && !within(d, tol(r.teacher_logprobs[i])) {
                teacher_bad = Some((i, tl[j], r.teacher_logprobs[i]));
            }
        }
        let t_ids = &r.teacher_topk_ids[i * k..(i + 1) * k];
        let t_lp = &r.teacher_topk_logprobs[i * k..(i + 1) * k];
        for (j, id) in ids.iter().enumerate() {
            if let Some(m) = t_ids.iter().position(|x| x == id) {
                // Both are stored approximations of one exact value in the compact encoding.
                let d = (tl[j] as f64 - t_lp[m] as f64).abs();
                let allowed = tol(tl[j].min(t_lp[m])) * 2.0;
                if cross_bad.is_none() && !within(d, allowed) {
                    cross_bad = Some((i, *id, tl[j], t_lp[m]));
                }
            }
        }
    }
    if let Some(i) = sorted_bad {
        bad(
            "student_topk_logprobs_self",
            format!("student top-k not sorted descending at t={i}"),
        );
    }
    if let Some((i, mass)) = mass_bad {
        bad(
            "student_topk_logprobs_self",
            format!("sum exp(student top-k) = {mass:.6} > 1 at t={i}"),
        );
    }
    if let Some((i, a, b)) = self_bad {
        bad(
            "student_topk_logprobs_self",
            format!(
                "log-prob {a} of the response token at t={i} differs from student_logprobs {b}"
            ),
        );
    }
    if let Some((i, a, b)) = teacher_bad {
        bad("teacher_logprobs_at_student_topk", format!("teacher log-prob {a} of the response token at t={i} differs from teacher_logprobs {b}"));
    }
    if let Some((i, id, a, b)) = cross_bad {
        bad("teacher_logprobs_at_student_topk", format!("teacher log-prob {a} of token {id} at t={i} differs from its teacher_topk_logprobs entry {b}"));
    }
}
