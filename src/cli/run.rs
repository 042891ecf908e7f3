//! `hindsight run PIPELINE.toml`: the nightly job. Reruns are incremental and resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::UsageError;
use crate::config::PipelineConfig;
use crate::pipeline::{self, LastTask, PipelineError, RunOptions, TaskSlice};

/// How long the task that finalizes waits for the others' locks (they are exiting).
const FINALIZE_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Arguments of `hindsight run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (see pipelines/).
    pub pipeline: PathBuf,
    /// Input paths, directories or globs; replaces the pipeline's input.paths (repeatable).
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Force an input format (wildchat, sharegpt, openai, demonstration, unit_test, hint).
    #[arg(long)]
    pub format: Option<String>,
    /// Output directory or object-store URL (s3://, gs://, az://, file://); replaces output.dir.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// This task's index (0-based) in a sharded run; default $JOB_COMPLETION_INDEX (a
    /// Kubernetes Indexed Job) or $SLURM_ARRAY_TASK_ID (a Slurm array) when a task count is known.
    #[arg(long)]
    pub task_index: Option<u32>,
    /// Number of tasks of a sharded run; each reads and scores its share of the input files
    /// (about 1/N of the bytes). Run `hindsight finalize` after all of them, or pass
    /// --finalize-if-last. Default $HINDSIGHT_NUM_TASKS or $SLURM_ARRAY_TASK_COUNT.
    #[arg(long)]
    pub num_tasks: Option<u32>,
    /// cpu, or cuda[:N] (builds with the `cuda` feature); default $HINDSIGHT_DEVICE or cpu.
    #[arg(long)]
    pub device: Option<crate::model::device::DeviceSpec>,
    /// SQL predicate over the input records' columns, evaluated before episodes are built, e.g.
    /// --where "language = 'English' AND NOT toxic" (same as --set input.where=...; exit 2 if invalid).
    #[arg(long = "where", value_name = "SQL")]
    pub where_sql: Option<String>,
    /// Override any pipeline key, e.g. --set score.top_k=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Show the plan (what `hindsight plan` prints) and stop: no weights loaded, nothing written.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON (`plan`, `run --dry-run`).
    #[arg(long)]
    pub json: bool,
    /// Write Prometheus metrics (text format) to this file after every chunk and at the end.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Fail (exit 4) when this run writes fewer rows; the dataset is still published.
    #[arg(long, value_name = "N")]
    pub min_rows: Option<u64>,
    /// Fail (exit 4) when more than this fraction (0..1) of the records read was quarantined,
    /// e.g. inputs that changed format; the dataset is still published.
    #[arg(long, value_name = "F")]
    pub max_quarantine_fraction: Option<f64>,
    /// A sharded task: when it is the last of its run to finish, finalize the run (exactly one
    /// task does, elected by a create-only write; no separate finalize step). Needs --run-id.
    #[arg(long)]
    pub finalize_if_last: bool,
    /// Names this sharded run, the same in all its tasks and new for each run; default
    /// $HINDSIGHT_RUN_ID, else $SLURM_ARRAY_JOB_ID.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// Publish even when a drift guard of the pipeline (`[guards]`) fails; the drift is still
    /// reported (in the run report and the log).
    #[arg(long)]
    pub accept_drift: bool,
    /// Send OpenLineage run events (START, COMPLETE/FAIL) to this endpoint: a lineage server
    /// (`http://marquez:5000` gets `/api/v1/lineage`) or a full URL; default [lineage] url,
    /// else $OPENLINEAGE_URL.
    #[arg(long, value_name = "URL")]
    pub openlineage_url: Option<String>,
    /// Append OpenLineage run events to this file, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub openlineage_file: Option<PathBuf>,
    /// Commit at most this many chunks, then stop (for staged runs and resume tests).
    #[arg(long, hide = true)]
    pub max_chunks: Option<usize>,
}

/// The environment variables a sharded task's index and count default to.
const TASK_ENV: [&str; 5] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "HINDSIGHT_NUM_TASKS",
];

/// This run's task: the flags, else the scheduler's environment (`env` looks a variable up).
pub fn resolve_task(
    index: Option<u32>,
    count: Option<u32>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<TaskSlice>, UsageError> {
    let num = |name: &str| -> Result<Option<u32>, UsageError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| UsageError(format!("${name} = {v:?} is not a task number"))),
        }
    };
    let count = match count {
        Some(c) => Some(c),
        None => match num(TASK_ENV[4])? {
            Some(c) => Some(c),
            None => num(TASK_ENV[3])?,
        },
    };
    let (index, from) = match index {
        Some(i) => (Some(i), "--task-index"),
        None => match num(TASK_ENV[0])? {
            Some(i) => (Some(i), TASK_ENV[0]),
            None => match num(TASK_ENV[1])? {
                Some(i) => {
                    let min = num(TASK_ENV[2])?.unwrap_or(0);
                    (Some(i.saturating_sub(min)), TASK_ENV[1])
                }
                None => (None, ""),
            },
        },
    };
    match (index, count) {
        (None, None) => Ok(None),
        (Some(i), Some(n)) => TaskSlice::new(i, n).map(Some).map_err(UsageError),
        (Some(i), None) => Err(UsageError(format!(
            "task index {i} (from {from}) but no task count: pass --num-tasks N or set \
             $HINDSIGHT_NUM_TASKS"
        ))),
        (None, Some(n)) => Err(UsageError(format!(
            "{n} tasks but no task index: pass --task-index I, or run as a Kubernetes Indexed \
             Job ($JOB_COMPLETION_INDEX) or a Slurm array ($SLURM_ARRAY_TASK_ID)"
        ))),
    }
}

/// The pipeline config a `run`/`plan` command line resolves to (file, then --set, then the
/// dedicated flags) and its task.
pub fn resolve(a: &RunArgs) -> anyhow::Result<(PipelineConfig, Option<TaskSlice>)> {
    let mut sets = a.sets.clone();
    if let Some(f) = &a.format {
        sets.push(format!("input.format={f:?}"));
    }
    if let Some(o) = &a.output {
        sets.push(format!("output.dir={:?}", o.display().to_string()));
    }
    let mut cfg = PipelineConfig::load(&a.pipeline, &sets)?;
    if !a.inputs.is_empty() {
        cfg.input.paths = a.inputs.clone();
    }
    if a.accept_drift {
        cfg.guards.enforce = false;
    }
    if let Some(w) = &a.where_sql {
        cfg.input.r#where = Some(w.clone());
    }
    let task = resolve_task(a.task_index, a.num_tasks, |k| std::env::var(k).ok())?;
    Ok((cfg, task))
}

/// Runs the pipeline (or shows its plan with `--dry-run`), prints the report, checks the guards;
/// lineage and Dagster Pipes see it start and end.
pub fn run(a: RunArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    if a.dry_run {
        return super::plan::run(a);
    }
    let (cfg, task) = resolve(&a)?;
    let flags = super::observe::LineageFlags {
        url: a.openlineage_url.clone(),
        file: a.openlineage_file.clone(),
    };
    let observers = super::observe::Observers::for_run(&cfg, &flags)?;
    observers.started();
    let result = execute(&a, &cfg, task, json_logs);
    observers.finished(&result);
    result.map(|_| ExitCode::SUCCESS)
}

/// The run itself: pipeline, report, finalize of the last task, guards.
fn execute(
    a: &RunArgs,
    cfg: &PipelineConfig,
    task: Option<TaskSlice>,
    json_logs: bool,
) -> anyhow::Result<super::observe::RunEnd> {
    if let Some(f) = a.max_quarantine_fraction {
        if !(0.0..=1.0).contains(&f) {
            return Err(UsageError(format!(
                "--max-quarantine-fraction {f} is not a fraction between 0 and 1"
            ))
            .into());
        }
    }
    // A bad predicate is a usage error (status 2), reported before the model loads or the
    // output directory is touched.
    if let Some(sql) = cfg.input.r#where.as_deref() {
        if let Ok(files) = crate::ingest::expand_inputs(&cfg.input.paths) {
            crate::sql::WherePredicate::compile(sql, &files, &Default::default())
                .map_err(|e| PipelineError::Predicate(e.to_string()))?;
        }
    }
    let run_id = a
        .run_id
        .clone()
        .or_else(|| std::env::var("HINDSIGHT_RUN_ID").ok())
        .or_else(|| std::env::var("SLURM_ARRAY_JOB_ID").ok())
        .filter(|s| !s.trim().is_empty());
    let finalize_as =
        match (a.finalize_if_last, task.filter(|t| !t.is_single())) {
            (false, _) | (true, None) => None,
            (true, Some(t)) => match &run_id {
                Some(id) => Some((t, id.clone())),
                None => return Err(UsageError(
                    "--finalize-if-last needs a run id shared by the run's tasks: --run-id ID, \
                     $HINDSIGHT_RUN_ID (the Job's uid in deploy/k8s) or $SLURM_ARRAY_JOB_ID"
                        .into(),
                )
                .into()),
            },
        };
    let report = pipeline::run(
        cfg,
        &RunOptions {
            progress: !a.no_progress,
            max_chunks: a.max_chunks,
            task,
            device: super::resolve_device(a.device)?,
            metrics_file: a.metrics_file.clone(),
        },
    )?;
    super::emit_report(json_logs, "run report", &report, &report.summary())?;
    let mut audit = report.audit.clone();
    if let Some(t) = task.filter(|t| !t.is_single()) {
        tracing::info!(
            task = t.index,
            tasks = t.count,
            files = format!(
                "{}..{} of {}",
                report.input.first_file, report.input.end_file, report.input.files_total
            ),
            bytes = report.input.bytes,
            bytes_total = report.input.bytes_total,
            "task done; run `hindsight finalize` after all tasks"
        );
    }
    if let Some((t, id)) = finalize_as {
        let target = cfg.output.dir.to_string_lossy().to_string();
        match pipeline::finalize_if_last(&target, t, &id, FINALIZE_LOCK_WAIT, a.accept_drift)? {
            LastTask::Waiting { done } => tracing::info!(
                task = t.index,
                run_id = %id,
                "{done} of {} tasks done; the last one finalizes",
                t.count
            ),
            LastTask::OtherFinalizes { by } => tracing::info!(
                task = t.index,
                run_id = %id,
                "every task is done; task {by} finalizes"
            ),
            LastTask::Finalized(fin) => {
                super::emit_report(json_logs, "finalize report", &fin, &fin.summary())?;
                audit = fin.audit.clone();
            }
        }
    }
    println!("{}", cfg.output.dir.display());
    check_guards(&report, a.min_rows, a.max_quarantine_fraction)?;
    Ok(super::observe::RunEnd {
        audit,
        counts: Some(report.counts),
    })
}

/// `--min-rows` and `--max-quarantine-fraction`, on what this run did.
pub fn check_guards(
    report: &pipeline::RunReport,
    min_rows: Option<u64>,
    max_quarantine_fraction: Option<f64>,
) -> Result<(), PipelineError> {
    let mut failed = Vec::new();
    if let Some(min) = min_rows {
        let rows = report.counts.rows_written;
        if rows < min {
            failed.push(format!(
                "this run wrote {rows} rows, fewer than --min-rows {min}"
            ));
        }
    }
    if let Some(max) = max_quarantine_fraction {
        let read = report.ingest.records_read;
        let quarantined: u64 = report.ingest.records_quarantined.values().sum();
        let fraction = quarantined as f64 / read.max(1) as f64;
        if fraction > max {
            let mut reasons: Vec<(&String, &u64)> =
                report.ingest.records_quarantined.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = reasons
                .iter()
                .take(3)
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            failed.push(format!(
                "{quarantined} of {read} records quarantined ({:.1}%, above \
                 --max-quarantine-fraction {max}; {}); see quarantine.jsonl",
                fraction * 100.0,
                top.join(", ")
            ));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(PipelineError::Guard(format!(
            "guard failed: {}",
            failed.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_task_comes_from_flags_else_the_schedulers_environment() {
        let t = |i, n, vars: &[(&str, &str)]| resolve_task(i, n, env(vars));
        assert_eq!(t(None, None, &[]).expect("plain"), None);
        assert_eq!(
            t(Some(1), Some(3), &[("JOB_COMPLETION_INDEX", "2")]).expect("flags win"),
            Some(TaskSlice { index: 1, count: 3 })
        );
        let k8s = [("JOB_COMPLETION_INDEX", "2"), ("HINDSIGHT_NUM_TASKS", "4")];
        assert_eq!(
            t(None, None, &k8s).expect("k8s"),
            Some(TaskSlice { index: 2, count: 4 })
        );
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "11"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        assert_eq!(
            t(None, None, &slurm).expect("slurm"),
            Some(TaskSlice { index: 1, count: 3 })
        );
        let e = t(None, None, &[("JOB_COMPLETION_INDEX", "2")]).unwrap_err();
        assert!(
            e.0.contains("no task count") && e.0.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let e = t(None, Some(3), &[]).unwrap_err();
        assert!(e.0.contains("no task index"), "{e}");
        let e = t(
            None,
            None,
            &[("JOB_COMPLETION_INDEX", "x"), ("HINDSIGHT_NUM_TASKS", "2")],
        );
        assert!(e.unwrap_err().0.contains("not a task number"));
        let e = t(Some(5), None, &[("HINDSIGHT_NUM_TASKS", "2")]).unwrap_err();
        assert!(e.0.contains("out of range"), "{e}");
    }
}
