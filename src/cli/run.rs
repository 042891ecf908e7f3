//! `hindsight run PIPELINE.toml`: the nightly job. Reruns are incremental and resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::PipelineConfig;
use crate::pipeline::{self, RunOptions, TaskSlice};

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
    /// This task's index (0-based) in a sharded run; needs --num-tasks.
    #[arg(long, requires = "num_tasks")]
    pub task_index: Option<u32>,
    /// Number of tasks of a sharded run; each scores the chunks whose ordinal mod N is its
    /// index. Run `hindsight finalize` after all of them.
    #[arg(long, requires = "task_index")]
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
    /// Commit at most this many chunks, then stop (for staged runs and resume tests).
    #[arg(long, hide = true)]
    pub max_chunks: Option<usize>,
}

/// Resolves the config (file, then --set, then the dedicated flags) and runs it.
pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
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
    let task = match (a.task_index, a.num_tasks) {
        (Some(i), Some(n)) => Some(TaskSlice::new(i, n).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    if let Some(w) = &a.where_sql {
        cfg.input.r#where = Some(w.clone());
    }
    // A bad predicate is a usage error (status 2), reported before the model loads or the
    // output directory is touched.
    if let Some(sql) = cfg.input.r#where.as_deref() {
        if let Ok(files) = crate::ingest::expand_inputs(&cfg.input.paths) {
            if let Err(e) = crate::sql::WherePredicate::compile(sql, &files, &Default::default()) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let report = pipeline::run(
        &cfg,
        &RunOptions {
            progress: !a.no_progress,
            max_chunks: a.max_chunks,
            task,
            device: super::resolve_device(a.device)?,
        },
    )?;
    eprintln!("{}", report.summary());
    if let Some(t) = task {
        eprintln!(
            "task {} of {}: {} chunks left to the other tasks; run `hindsight finalize` after all tasks",
            t.index, t.count, report.chunks_other_tasks
        );
    }
    println!("{}", cfg.output.dir.display());
    Ok(ExitCode::SUCCESS)
}
