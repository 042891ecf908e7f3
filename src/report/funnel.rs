//! The funnel: records read → quarantined → episodes → dropped per reason → rows, with examples at each step.

use super::*;

/// First examples per quarantine reason, from `quarantine.jsonl`.
pub(super) fn quarantine_examples(
    path: &Path,
    per_reason: usize,
) -> ReportResult<BTreeMap<String, Vec<Example>>> {
    let mut out: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(ReportError::Io {
                action: "opening",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| ReportError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let list = out.entry(s("reason")).or_default();
        if list.len() < per_reason {
            let record = v.get("record_index").and_then(|x| x.as_i64()).unwrap_or(-1);
            list.push(Example {
                location: format!("{}#{record}", s("source_uri")),
                detail: format!("{}\n{}", s("detail"), s("snippet")),
            });
        }
    }
    Ok(out)
}

pub(super) fn counts_of(v: Option<&serde_json::Value>) -> BTreeMap<String, u64> {
    v.and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The stage funnel: the last run's ingest counts (every run re-reads all its inputs) and the
/// committed chunks' scoring counts (cumulative over runs).
pub(super) fn funnel(
    manifest: &Manifest,
    run_report: Option<&serde_json::Value>,
    quarantine: &BTreeMap<String, Vec<Example>>,
    opts: &ReportOptions,
) -> Vec<FunnelStep> {
    let ingest = manifest
        .stats
        .get("ingest_last_run")
        .filter(|v| !v.is_null())
        .or_else(|| run_report.and_then(|r| r.get("ingest")));
    let get = |k: &str| {
        ingest
            .and_then(|i| i.get(k))
            .and_then(|x| x.as_u64())
            .unwrap_or(0)
    };
    let examples: BTreeMap<String, Vec<String>> = ingest
        .and_then(|i| i.get("filtered_examples"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let located = |reason: &str| -> Vec<Example> {
        examples
            .get(reason)
            .map(|v| {
                v.iter()
                    .take(opts.examples_per_reason)
                    .map(|l| Example {
                        location: l.clone(),
                        detail: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let filtered = |map: BTreeMap<String, u64>| -> Vec<DropReason> {
        map.into_iter()
            .map(|(reason, count)| DropReason {
                kind: "filtered".into(),
                examples: located(&reason),
                reason,
                count,
            })
            .collect()
    };
    let mut record_drops = filtered(counts_of(ingest.and_then(|i| i.get("records_filtered"))));
    for (reason, count) in counts_of(ingest.and_then(|i| i.get("records_quarantined"))) {
        record_drops.push(DropReason {
            kind: "quarantined".into(),
            examples: quarantine.get(&reason).cloned().unwrap_or_default(),
            reason,
            count,
        });
    }
    let episodes = counts_of(manifest.stats.get("episodes"));
    let ep = |k: &str| episodes.get(k).copied().unwrap_or(0);
    let low_relevance: Vec<Example> = run_report
        .and_then(|r| r.get("low_relevance_examples"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .take(opts.examples_per_reason)
                .map(|x| {
                    let s = |k: &str| x.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let record = x
                        .get("source_record")
                        .and_then(|v| v.as_i64())
                        .unwrap_or(-1);
                    let rel = x
                        .get("relevance")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(f64::NAN);
                    Example {
                        location: format!("{}#{record}", s("source_uri")),
                        detail: format!("relevance {rel:.4}: {}", s("privileged_context")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (mut scoring_drops, mut row_drops) = (Vec::new(), Vec::new());
    for (key, count) in &episodes {
        let Some(reason) = key.strip_prefix("filtered:") else {
            continue;
        };
        let d = DropReason {
            kind: "filtered".into(),
            reason: reason.to_string(),
            count: *count,
            examples: if reason == "low_relevance" {
                low_relevance.clone()
            } else {
                Vec::new()
            },
        };
        if reason == "low_relevance" || reason == "duplicate_across_runs" {
            row_drops.push(d);
        } else {
            scoring_drops.push(d);
        }
    }
    let step = |key: &str, label: &str, count: u64, drops: Vec<DropReason>| FunnelStep {
        key: key.into(),
        label: label.into(),
        count,
        drops,
    };
    let mut steps = vec![
        step(
            "records_read",
            "records read",
            get("records_read"),
            Vec::new(),
        ),
        step(
            "records_with_episodes",
            "records with episodes",
            get("records_with_episodes"),
            record_drops,
        ),
        step(
            "episodes_built",
            "episodes built",
            get("episodes_built"),
            Vec::new(),
        ),
        step(
            "episodes_emitted",
            "episodes past prefilters",
            get("episodes_emitted"),
            filtered(counts_of(ingest.and_then(|i| i.get("episodes_filtered")))),
        ),
    ];
    if ep("rollouts") > 0 {
        steps.push(step(
            "rollouts",
            "rollout samples",
            ep("rollouts"),
            Vec::new(),
        ));
    }
    steps.push(step(
        "episodes_scored",
        "episodes scored",
        ep("episodes_scored"),
        scoring_drops,
    ));
    steps.push(step(
        "rows_written",
        "rows kept",
        manifest.totals.rows,
        row_drops,
    ));
    steps
}
