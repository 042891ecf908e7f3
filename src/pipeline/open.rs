//! Opening a run: the lock, the model, the dataset's binding and state, and what is already
//! done (committed chunks, the dataset's sample ids), before any input is read.

use std::collections::HashSet;
use std::sync::Arc;

use super::state::{self, DatasetBinding, RunLock, RunState};
use super::{idset, tasks, PipelineError, RunOptions, TaskSlice};
use crate::config::PipelineConfig;
use crate::model::{self, LoadedModel};
use crate::sink::dataset::DatasetWriter;
use crate::sink::DatasetMeta;
use crate::store::Mirror;

/// A run's dataset side, opened and locked: what the stages read from and write into.
pub(super) struct OpenRun {
    pub(super) mirror: Arc<Mirror>,
    /// Held for the whole run: a second run (or the same task twice) is refused.
    pub(super) _lock: RunLock,
    pub(super) model: LoadedModel,
    pub(super) meta: DatasetMeta,
    pub(super) state: RunState,
    pub(super) dataset: DatasetWriter,
    pub(super) orphans_removed: u64,
    /// Chunks already committed: read again, never scored again.
    pub(super) committed: HashSet<String>,
    /// The dataset's sample ids (and this task's), on disk.
    pub(super) seen_ids: idset::IdSet,
}

/// Locks the dataset (or this task's slice of it), resumes its state from the store, loads
/// the model and binds the dataset to config + model + contract (refusing another binding).
pub(super) fn open_run(
    cfg: &PipelineConfig,
    opts: &RunOptions,
    task: TaskSlice,
) -> Result<OpenRun, PipelineError> {
    let mirror = Arc::new(Mirror::open(&cfg.output.dir.to_string_lossy())?);
    let out_dir = mirror.local().to_path_buf();
    let single = task.is_single();
    let lock = if single {
        RunLock::acquire(&out_dir)?
    } else {
        RunLock::acquire_task(&out_dir, &task.lock_name())?
    };
    mirror.pull_tree("_state")?;
    let model_path = model::resolve_model_path(cfg.model.path.as_deref())?;
    tracing::info!(model = %model_path.display(), device = %opts.device, "loading model");
    let mut m = model::load(&model_path, cfg.model.compute, &opts.device.open()?)?;
    cfg.model.configure(&mut m)?;
    let identity =
        state::choose_identity(&out_dir, cfg.identity_json(), cfg.legacy_identity_json())?;
    let meta = DatasetMeta::new(
        &m.info,
        cfg.score.top_k,
        cfg.score.relevance,
        Some(f64::from(cfg.score.threshold())),
        &identity,
    )
    .with_layout(cfg.score.student_top_k, cfg.contract.encoding);
    let binding = DatasetBinding {
        config_sha256: meta.pipeline_config_sha256.clone(),
        weights_sha256: m.info.weights_sha256.clone(),
        tokenizer_sha256: m.info.tokenizer_sha256.clone(),
        contract_sha256: crate::sink::schema::contract_sha256(),
        config: Some(meta.pipeline_config.clone()),
    };
    let state = if single {
        RunState::open(&out_dir, &binding)?
    } else {
        RunState::open_shared(&out_dir, &binding)?
    };
    let dataset = DatasetWriter::new(mirror.clone(), meta.clone(), meta.shard_config());
    dataset.upload_state(state::BINDING_REL)?;
    let orphans_removed = if single {
        tasks::refuse_other_sharded_runs(&state, &mirror.label())?;
        let listed = state
            .committed()
            .iter()
            .flat_map(|c| c.shards.iter().map(|s| s.file.clone()))
            .collect();
        (state.clean_orphans()? + mirror.clean_remote_orphans(&listed)?) as u64
    } else {
        // Other tasks may be writing shards right now; finalize cleans up instead.
        0
    };
    if orphans_removed > 0 {
        tracing::warn!(
            files = orphans_removed,
            "removed leftovers of an interrupted run"
        );
    }
    let committed: HashSet<String> = state
        .committed()
        .iter()
        .map(|c| c.chunk_id.clone())
        .collect();
    // A task dedups against merged chunks and its own, never against other tasks' unmerged
    // chunks (which of two copies wins depends on input order; finalize decides).
    let idset_name = if single {
        "run".to_string()
    } else {
        format!("task-{}-of-{}", task.index, task.count)
    };
    let seen_ids = idset::IdSet::open(&out_dir, &idset_name, &state, |c| match c.task {
        None => true,
        Some(tag) => task.owns_tag(&tag),
    })?;
    tracing::debug!(
        ids = seen_ids.committed_len(),
        "sample ids of the dataset, on disk"
    );
    if !single {
        let tasks_dir = out_dir.join(format!("_state/tasks/{}", task.count));
        std::fs::create_dir_all(&tasks_dir).map_err(|source| state::StateError::Io {
            action: "creating",
            path: tasks_dir.clone(),
            source,
        })?;
    }
    Ok(OpenRun {
        mirror,
        _lock: lock,
        model: m,
        meta,
        state,
        dataset,
        orphans_removed,
        committed,
        seen_ids,
    })
}
