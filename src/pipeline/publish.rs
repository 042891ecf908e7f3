//! Write–audit–publish: before a manifest makes new shards visible, the contract checks of
//! `validate` run on them and the drift guards compare the increment with the previous night's.
//! Only a clean audit publishes; a failed one keeps the previous manifest, so readers (trainers,
//! the next night's job) never see what failed.

use serde::{Deserialize, Serialize};

use super::drift::{DriftCheck, DriftGuards, IncrementProfile};
use super::{state, PipelineError};
use crate::sink::{DatasetWriter, Manifest};

/// Manifest statistics key of the profile the next night is compared with.
pub const BASELINE_KEY: &str = "drift_baseline";

/// What the audit before a publish found: the contract checks on the new shards and the
/// drift checks; the run report, lineage events and orchestrators carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// Whether the manifest was published.
    pub passed: bool,
    /// New shards checked against the contract.
    pub shards_checked: u64,
    /// Rows of those shards.
    pub rows_checked: u64,
    /// Bytes of those shards.
    #[serde(default)]
    pub bytes_checked: u64,
    /// The dataset as the manifest publishes it (all shards).
    #[serde(default)]
    pub totals: crate::sink::Totals,
    /// Contract violations found (first few, as text).
    pub violations: Vec<String>,
    /// All contract violations, counted.
    pub violations_total: u64,
    /// The drift checks (empty when no `[guards]` threshold is set).
    pub drift: Vec<DriftCheck>,
    /// A drift was found but not enforced (`--accept-drift`).
    #[serde(default)]
    pub drift_accepted: bool,
    /// What this publish adds to the dataset (`None` when the dataset was rebuilt).
    pub increment: Option<IncrementProfile>,
}

impl AuditSummary {
    /// Whether the contract checks passed (whatever the drift guards say).
    pub fn contract_ok(&self) -> bool {
        self.violations_total == 0
    }

    /// Whether every drift check passed or was skipped.
    pub fn drift_ok(&self) -> bool {
        self.drift.iter().all(|c| c.passed)
    }
}

/// A publish refused by its audit: the message, the run's report and the audit's findings
/// (the exit status is the quality guard's).
#[derive(Debug)]
pub struct AuditFailure {
    /// What failed, for a human.
    pub message: String,
    /// The audit's findings.
    pub audit: AuditSummary,
}

/// Audits `manifest` (contract checks on the shards readers have not seen, drift guards on the
/// increment), records tonight's profile as the next night's baseline, and publishes only a
/// clean result. `report` renders the run report with the audit in it (written in either
/// case). A failed audit also writes `audit_report.txt` and returns
/// [`PipelineError::AuditFailed`]; the committed chunks stay, so the next run re-audits them.
pub fn audit_then_publish(
    dataset: &DatasetWriter,
    quarantine: Option<&std::path::Path>,
    mut manifest: Manifest,
    guards: &DriftGuards,
    report: impl FnOnce(&AuditSummary) -> Result<Vec<u8>, PipelineError>,
) -> Result<AuditSummary, PipelineError> {
    let contract = dataset.audit(&manifest)?;
    // `audit` pulled the manifest readers see now; none on a first run.
    let previous = Manifest::read(dataset.dir()).ok();
    let seen: std::collections::HashSet<&str> = previous
        .iter()
        .flat_map(|p| p.shards.iter().map(|s| s.file.as_str()))
        .collect();
    let bytes_checked = manifest
        .shards
        .iter()
        .filter(|s| !seen.contains(s.file.as_str()))
        .map(|s| s.bytes)
        .sum();
    let now = IncrementProfile::of_manifest_stats(&manifest.stats);
    let increment = match (&now, &previous) {
        (Some(now), Some(prev)) => IncrementProfile::of_manifest_stats(&prev.stats)
            .and_then(|p| now.minus(&p))
            .or_else(|| {
                tracing::warn!(
                    "the dataset's statistics are not a continuation of the published ones \
                     (rebuilt?): drift guards compare nothing tonight"
                );
                None
            }),
        (Some(now), None) => Some(now.clone()),
        _ => None,
    };
    let baseline: Option<IncrementProfile> = previous
        .as_ref()
        .and_then(|p| p.stats.get(BASELINE_KEY))
        .and_then(|b| serde_json::from_value(b.clone()).ok());
    let drift = match &increment {
        Some(inc) => super::drift::check(guards, inc, baseline.as_ref()),
        None => Vec::new(),
    };
    // The next night compares with tonight, unless tonight is too small to compare with and
    // the current baseline is not.
    let next_baseline = match (&increment, &baseline) {
        (Some(inc), Some(b))
            if inc.rows == 0 || (inc.rows < guards.min_rows && b.rows >= guards.min_rows) =>
        {
            Some(b.clone())
        }
        (Some(inc), _) if inc.rows > 0 => Some(inc.clone()),
        _ => baseline.clone(),
    };
    if let (Some(b), Some(stats)) = (next_baseline, manifest.stats.as_object_mut()) {
        if let Ok(v) = serde_json::to_value(b) {
            stats.insert(BASELINE_KEY.to_string(), v);
        }
        manifest.stats = crate::sink::meta::canonical_json(&manifest.stats);
    }
    let mut audit = AuditSummary {
        passed: false,
        shards_checked: contract.shards_checked,
        rows_checked: contract.rows_checked,
        bytes_checked,
        totals: manifest.totals.clone(),
        violations: contract
            .violations
            .iter()
            .take(20)
            .map(|v| v.to_string())
            .collect(),
        violations_total: contract.violations.len() as u64 + contract.suppressed,
        drift,
        drift_accepted: false,
        increment,
    };
    let drift_blocks = !audit.drift_ok() && guards.enforce;
    audit.drift_accepted = !audit.drift_ok() && !guards.enforce;
    audit.passed = audit.contract_ok() && !drift_blocks;
    for c in &audit.drift {
        if c.passed {
            tracing::info!(check = %c, "drift guard");
        } else {
            tracing::warn!(check = %c, enforced = guards.enforce, "drift guard failed");
        }
    }
    let report_json = report(&audit)?;
    if audit.passed {
        dataset.publish(quarantine, &report_json, &manifest)?;
        return Ok(audit);
    }
    dataset.write_partial_report(&report_json)?;
    let mut text = if audit.contract_ok() {
        String::new()
    } else {
        format!("{contract}")
    };
    if drift_blocks {
        text.push_str("drift against the previous night:\n");
        for c in &audit.drift {
            text.push_str(&format!("  {c}\n"));
        }
    }
    let path = dataset.dir().join("audit_report.txt");
    crate::util::write_atomic(&path, text.as_bytes()).map_err(|source| state::StateError::Io {
        action: "writing",
        path: path.clone(),
        source,
    })?;
    let mut why = Vec::new();
    if !audit.contract_ok() {
        why.push(format!(
            "{} contract violation(s) in the shards about to be published ({})",
            audit.violations_total,
            audit
                .violations
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if drift_blocks {
        let failed: Vec<String> = audit
            .drift
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.to_string())
            .collect();
        why.push(format!(
            "drift against the previous night: {} (rerun with --accept-drift to publish it)",
            failed.join("; ")
        ));
    }
    Err(PipelineError::AuditFailed(Box::new(AuditFailure {
        message: format!(
            "audit failed: {}; the previous manifest is kept, see {}",
            why.join("; "),
            path.display()
        ),
        audit,
    })))
}
