//! Finalize: merging the tasks' chunks (dedup across tasks in input order), joining their
//! quarantines and reports, then the audit and the publish.

use super::*;

/// What `finalize` did; written to `run_report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalizeReport {
    /// The dataset (path or URL).
    pub output: String,
    pub num_tasks: u32,
    /// Chunks of this sharded run merged now.
    pub chunks_merged: u64,
    /// Rows dropped because an earlier chunk (of another task or an earlier run) has them.
    pub duplicates_removed: u64,
    /// Leftover files of interrupted work deleted.
    pub orphans_removed: u64,
    /// Ingest statistics of the input: the sum of the tasks' shares.
    pub ingest: IngestStats,
    /// What the scoring steps did over the merged chunks, after dedup.
    pub counts: crate::pipeline::StepCounts,
    /// Wall-clock seconds of each task.
    pub task_seconds: Vec<f64>,
    /// What the audit before the publish found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::pipeline::publish::AuditSummary>,
}

impl FinalizeReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "finalized {} tasks: {} chunks merged, {} duplicate rows removed across tasks, \
             rows written {}, episodes scored {}\ndataset: {}",
            self.num_tasks,
            self.chunks_merged,
            self.duplicates_removed,
            c.rows_written,
            c.episodes_scored,
            self.output
        )
    }
}

/// The task counts that have markers under `_state/tasks/`.
pub(super) fn task_counts(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(dir.join("_state/tasks"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Merges the chunks of a finished sharded run at `target` (a directory or a URL) and writes the
/// manifest. Refuses, naming them, while any task's marker is missing or stale.
/// `accept_drift` publishes even when the drift guards of the tasks' pipeline fail.
pub fn finalize(
    target: &str,
    num_tasks: Option<u32>,
    accept_drift: bool,
) -> Result<FinalizeReport, PipelineError> {
    let mirror = Arc::new(Mirror::open(target)?);
    let dir = mirror.local().to_path_buf();
    let label = mirror.label();
    let _lock = RunLock::acquire(&dir)?;
    mirror.pull_tree("_state")?;

    let n = match num_tasks {
        Some(n) => n,
        None => match task_counts(&dir).as_slice() {
            [] => {
                return Err(PipelineError::Tasks(format!(
                    "{label}: no sharded task has finished here (no _state/tasks/<N>/<I>.json); \
                     run `hindsight run … --task-index I --num-tasks N` first \
                     (a plain run finalizes itself)"
                )))
            }
            [n] => *n,
            many => {
                return Err(PipelineError::Tasks(format!(
                    "{label}: markers of runs with {many:?} tasks exist; pass --num-tasks"
                )))
            }
        },
    };
    TaskSlice::new(0, n).map_err(PipelineError::Tasks)?;
    // Local datasets: a task still running holds its lock; finalizing under it would race.
    let mut _task_locks = Vec::new();
    if mirror.remote().is_none() {
        for i in 0..n {
            _task_locks.push(
                RunLock::acquire_named(&dir, &format!(".lock-task-{i}")).map_err(|_| {
                    PipelineError::NotReady(format!(
                        "finalize refused: task {i} of {n} is still running on {label}"
                    ))
                })?,
            );
        }
    }

    let mut markers = Vec::new();
    let mut missing = Vec::new();
    for i in 0..n {
        let path = dir.join(marker_rel(n, i));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let m: TaskMarker =
                    serde_json::from_slice(&bytes).map_err(|e| state::StateError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                markers.push(m);
            }
            Err(_) => missing.push(i),
        }
    }
    if !missing.is_empty() {
        return Err(PipelineError::NotReady(format!(
            "finalize refused: {} of {n} tasks have not finished on {label}: task index(es) {} \
             (no {}); run them with --task-index I --num-tasks {n}, then finalize again",
            missing.len(),
            join(&missing),
            marker_rel(n, missing[0]),
        )));
    }
    let first = &markers[0];
    let stale: Vec<u32> = markers
        .iter()
        .filter(|m| {
            m.inputs_sha256 != first.inputs_sha256 || m.config_sha256 != first.config_sha256
        })
        .map(|m| m.task_index)
        .collect();
    if !stale.is_empty() {
        return Err(PipelineError::Tasks(format!(
            "finalize refused: the markers of task(s) {} on {label} disagree with task 0 on the \
             input chunks or the config (left by another run); rerun those tasks on the same input",
            join(&stale)
        )));
    }
    let meta = first.dataset.clone();
    // Shares are consecutive in task order: summing (and joining) in that order keeps the
    // examples and the quarantine in input order.
    let mut ingest = IngestStats::default();
    for m in &markers {
        ingest.absorb(&m.report.ingest);
    }
    let quarantine = join_quarantines(&dir, n)?;

    let bind_path = dir.join(state::BINDING_REL);
    let binding: DatasetBinding =
        serde_json::from_slice(&std::fs::read(&bind_path).map_err(|source| {
            state::StateError::Io {
                action: "reading",
                path: bind_path.clone(),
                source,
            }
        })?)
        .map_err(|e| state::StateError::Corrupt {
            path: bind_path.clone(),
            message: e.to_string(),
        })?;
    let mut st = RunState::open(&dir, &binding)?;
    let listed: HashSet<String> = st
        .committed()
        .iter()
        .flat_map(|c| c.shards.iter().map(|s| s.file.clone()))
        .collect();
    let orphans_removed = (st.clean_orphans()? + mirror.clean_remote_orphans(&listed)?) as u64;

    let dataset = DatasetWriter::new(mirror.clone(), meta.clone(), meta.shard_config());
    let merged = merge(&dataset, &mut st, &markers)?;

    // Counts over this run's chunks, after dedup.
    let mut counts = crate::pipeline::StepCounts::default();
    for c in st.committed() {
        if merged.chunks.contains(&c.chunk_id) {
            counts.add(&c.counts);
        }
    }
    let report = FinalizeReport {
        output: label.clone(),
        num_tasks: n,
        chunks_merged: merged.chunks_merged,
        duplicates_removed: merged.duplicates_removed,
        orphans_removed,
        ingest: ingest.clone(),
        counts,
        task_seconds: markers.iter().map(|m| m.report.seconds).collect(),
        audit: None,
    };
    let manifest = build_manifest(&meta, &st, Some(&ingest));
    let mut guards = first.guards.clone();
    if accept_drift {
        guards.enforce = false;
    }
    let audit = crate::pipeline::publish::audit_then_publish(
        &dataset,
        Some(&quarantine),
        manifest,
        &guards,
        |audit| {
            let mut r = report.clone();
            r.audit = Some(audit.clone());
            serde_json::to_vec_pretty(&r).map_err(|e| PipelineError::Stage(e.to_string()))
        },
    )?;
    let mut report = report;
    report.audit = Some(audit);
    Ok(report)
}

/// Joins the tasks' quarantines, in task order, into `_state/tasks/<N>/quarantine.jsonl`.
pub(super) fn join_quarantines(dir: &Path, n: u32) -> Result<std::path::PathBuf, PipelineError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| state::StateError::Io {
            action,
            path,
            source,
        }
    };
    let joined = dir.join(format!("_state/tasks/{n}/quarantine.jsonl"));
    let tmp = joined.with_extension("jsonl.tmp");
    let mut out = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    for i in 0..n {
        let part = dir.join(TaskSlice { index: i, count: n }.quarantine_rel());
        match std::fs::File::open(&part) {
            Ok(mut f) => {
                std::io::copy(&mut f, &mut out).map_err(io("reading", &part))?;
            }
            // A task whose share quarantined nothing may have no file on a store.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &part)(e).into()),
        }
    }
    out.sync_all().map_err(io("writing", &tmp))?;
    drop(out);
    std::fs::rename(&tmp, &joined).map_err(io("renaming", &joined))?;
    Ok(joined)
}

/// What [`merge`] did.
pub(in crate::pipeline) struct Merged {
    /// Every chunk the tasks own (the run's chunks, merged now or before).
    pub chunks: HashSet<String>,
    /// Chunks merged now.
    pub chunks_merged: u64,
    /// Rows dropped because an earlier chunk (of another task or an earlier run) has them.
    pub duplicates_removed: u64,
}

/// Merges the tasks' chunks into the dataset, walking them in input order: a row whose
/// `sample_id` an earlier chunk (merged, or earlier in this walk) already has is dropped as
/// `duplicate_across_runs`, exactly the row a single task would have dropped, and its chunk's
/// shards are rewritten without it; every merged chunk loses its task tag. For a plain run
/// (one task, which deduplicates as it goes) nothing is dropped and only the tags go.
pub(in crate::pipeline) fn merge(
    dataset: &DatasetWriter,
    st: &mut RunState,
    markers: &[TaskMarker],
) -> Result<Merged, PipelineError> {
    let label = dataset.label();
    let n = markers.first().map_or(1, |m| m.num_tasks);
    // Chunk order of this run, from the markers (authoritative for the current input).
    let mut ordinal: HashMap<String, u64> = HashMap::new();
    for m in markers {
        for (id, o) in &m.chunks {
            if !st.is_committed(id) {
                return Err(PipelineError::Tasks(format!(
                    "task {} of {n} lists chunk {id} but its state is missing on {label}; \
                     rerun task {} and finalize again",
                    m.task_index, m.task_index
                )));
            }
            ordinal.insert(id.clone(), *o);
        }
    }

    // The merged chunks' ids, on disk (bounded memory whatever the dataset's age).
    let mut seen =
        crate::pipeline::idset::IdSet::open(dataset.dir(), "merge", st, |c| c.task.is_none())?;
    let mut pending = Vec::new();
    for c in st.committed() {
        let Some(tag) = c.task else {
            continue;
        };
        let o = match ordinal.get(&c.chunk_id) {
            Some(o) => *o,
            // An interrupted plain run's chunk of an input that has changed since: the chunks
            // after it were deduplicated against it, so it goes first.
            None if n == 1 && tag.num_tasks == 1 => 0,
            None => {
                return Err(PipelineError::Tasks(format!(
                    "chunk {} on {label} was written by a sharded task that is not part of this \
                     {n}-task run; rerun the tasks of one run on the same input, then finalize",
                    c.chunk_id
                )))
            }
        };
        pending.push((o, (*c).clone()));
    }
    pending.sort_by_key(|(o, _)| *o);

    let mut duplicates_removed = 0u64;
    let chunks_merged = pending.len() as u64;
    for (_, chunk) in pending {
        let ids_file = dataset.dir().join(chunk_ids_rel(&chunk.chunk_id));
        let text = std::fs::read_to_string(&ids_file).map_err(|source| state::StateError::Io {
            action: "reading",
            path: ids_file.clone(),
            source,
        })?;
        let ids: Vec<&str> = text.lines().collect();
        let dups: HashSet<&str> = ids.iter().copied().filter(|i| seen.contains(i)).collect();
        let mut merged = chunk.clone();
        merged.task = None;
        if dups.is_empty() {
            dataset.recommit(&chunk.chunk_id, || {
                st.commit(merged).map_err(PipelineError::from)
            })?;
            for id in &ids {
                seen.insert(id);
            }
            continue;
        }
        // Rewrite the chunk's shards without the rows an earlier chunk already has.
        let mut kept = Vec::new();
        let mut dropped_tokens = 0u64;
        // Counted from the rows, not the id list: a damaged id file must not underflow.
        let mut dropped = 0u64;
        for s in &chunk.shards {
            for row in dataset.read_shard(&s.file)? {
                if dups.contains(row.sample_id.as_str()) {
                    dropped_tokens += row.response_tokens() as u64;
                    dropped += 1;
                } else {
                    kept.push(row);
                }
            }
        }
        duplicates_removed += dropped;
        let kept_ids: Vec<String> = kept.iter().map(|r| r.sample_id.clone()).collect();
        let counts = &mut merged.counts;
        counts.rows_written = counts.rows_written.saturating_sub(dropped);
        counts.response_tokens = counts.response_tokens.saturating_sub(dropped_tokens);
        // Per-row exact KL is not stored: the chunk's KL sums are prorated by the tokens kept.
        let kl_tokens = merged.kl.tokens;
        merged.kl.tokens = kl_tokens.saturating_sub(dropped_tokens);
        if kl_tokens > 0 {
            let share = merged.kl.tokens as f64 / kl_tokens as f64;
            merged.kl.exact *= share;
            merged.kl.topk_tail *= share;
        }
        merged
            .counts
            .drop_n(crate::pipeline::DropReason::DuplicateAcrossRuns, dropped);
        dataset.rewrite(&chunk.chunk_id, &chunk.shards, kept, |shards| {
            merged.shards = shards;
            st.commit(merged).map_err(PipelineError::from)
        })?;
        for id in &kept_ids {
            seen.insert(id);
        }
    }
    Ok(Merged {
        chunks: ordinal.into_keys().collect(),
        chunks_merged,
        duplicates_removed,
    })
}
