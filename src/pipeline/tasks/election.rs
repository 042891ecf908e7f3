//! The last-task election: the task whose done record completes the set finalizes, by a
//! create-only claim.

use super::*;

/// What [`finalize_if_last`] found after a task finished.
#[derive(Debug)]
pub enum LastTask {
    /// Other tasks of the run have not finished yet (this many of N have).
    Waiting { done: u32 },
    /// Every task has finished and another one claimed the finalize.
    OtherFinalizes { by: u32 },
    /// This task was the one to finalize, and did.
    Finalized(Box<FinalizeReport>),
}

/// A run id as a path segment: kept when it is short and plain, else its hash.
pub fn run_id_segment(run_id: &str) -> String {
    let plain = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !run_id.starts_with('.');
    if plain {
        run_id.to_string()
    } else {
        crate::util::sha256_hex(run_id.as_bytes())[..32].to_string()
    }
}

/// Run after a task of a sharded run has written its completion marker
/// (`run --finalize-if-last`): records that the task of run `run_id` is done, and when every
/// task of that run is, the one task that creates the claim finalizes.
///
/// Race-free without a lock: each task writes its done record *before* it lists the run's
/// records, so the task whose record completes the set sees it (stores are read-after-write
/// and list-after-write consistent); several tasks may see the full set, but the claim is a
/// create-only write, so exactly one of them wins. A retry of the winner (its pod restarted)
/// finds its own claim and finalizes again, which is idempotent. `run_id` must be shared by the
/// tasks of one run and differ between runs (the Job's uid, `$SLURM_ARRAY_JOB_ID`).
pub fn finalize_if_last(
    target: &str,
    task: TaskSlice,
    run_id: &str,
    wait: std::time::Duration,
    accept_drift: bool,
) -> Result<LastTask, PipelineError> {
    let mirror = Mirror::open(target)?;
    let store = mirror.state();
    let n = task.count;
    let runs = format!("_state/tasks/{n}/runs/{}", run_id_segment(run_id));
    let claim_rel = format!("{runs}/finalize.claim");
    let me = task.index.to_string().into_bytes();

    // 1. This task is done (after its marker, which `run` wrote before returning).
    store.put(&format!("{runs}/{}.done", task.index), &me)?;
    let done: HashSet<u32> = store
        .list(&runs)?
        .iter()
        .filter_map(|rel| done_index(rel))
        .collect();
    let finished = done.iter().filter(|&&i| i < n).count() as u32;
    if finished < n {
        return Ok(LastTask::Waiting { done: finished });
    }

    // 2. Every task is done: the one whose create-only claim succeeds finalizes.
    if !store.put_new(&claim_rel, &me)? {
        let holder = store.get(&claim_rel)?.unwrap_or_default();
        let by = String::from_utf8_lossy(&holder).trim().parse::<u32>().ok();
        if by != Some(task.index) {
            return Ok(LastTask::OtherFinalizes {
                by: by.unwrap_or(u32::MAX),
            });
        }
    }

    // 3. Finalize. Tasks that finished a moment ago may still hold their locks (same machine or
    // shared directory): wait for them, within `wait`.
    let deadline = std::time::Instant::now() + wait;
    loop {
        match finalize(target, Some(n), accept_drift) {
            Ok(report) => return Ok(LastTask::Finalized(Box::new(report))),
            Err(PipelineError::NotReady(_))
            | Err(PipelineError::State(state::StateError::Locked(_)))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The task index of a done record's name (`<runs>/<I>.done` or `<I>.done`).
pub(super) fn done_index(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    file.strip_suffix(".done")?.parse().ok()
}
