//! `hindsight finalize DIR`: the step after a sharded run. Refuses (exit 75, naming the missing
//! task indices) until every task has written its completion marker; then merges the tasks'
//! chunks, drops rows duplicated across tasks as a single-task run would, and writes the
//! manifest and run report.

use std::process::ExitCode;

use clap::Args;

use crate::pipeline;

/// Arguments of `hindsight finalize`.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Dataset directory or object-store URL the tasks wrote to.
    pub dir: String,
    /// Number of tasks of the run (default: the one task count with markers in DIR).
    #[arg(long)]
    pub num_tasks: Option<u32>,
    /// Publish even when a drift guard of the pipeline (`[guards]`) fails; the drift is still
    /// reported.
    #[arg(long)]
    pub accept_drift: bool,
}

/// Merges the tasks and prints a summary.
pub fn run(a: FinalizeArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    let report = pipeline::finalize(&a.dir, a.num_tasks, a.accept_drift)?;
    super::emit_report(json_logs, "finalize report", &report, &report.summary())?;
    println!("{}", report.output);
    Ok(ExitCode::SUCCESS)
}
