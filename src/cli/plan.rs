//! `hindsight plan PIPELINE.toml` (also `run --dry-run`): what a run would do, before any weight
//! loads and without writing anything. Exit 0 when the run would proceed, 3 when the dataset at
//! the output would refuse it, 2 for configuration errors.

use std::process::ExitCode;

use super::run::{resolve, RunArgs};
use crate::pipeline;

/// Prints the plan (human, or JSON with `--json`).
pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (cfg, task) = resolve(&a)?;
    let plan = pipeline::plan::plan(&cfg, task)?;
    if a.json {
        super::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&plan)?))?;
    } else {
        super::print_stdout(&plan.render())?;
    }
    Ok(if plan.refusals.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::exit::IDENTITY)
    })
}
