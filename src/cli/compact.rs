//! `hindsight compact DIR`: rewrites the dataset's many per-chunk shards into few large ones
//! (`pipeline::compact`), so readers open tens of files, not thousands.

use std::process::ExitCode;

use clap::Args;

use crate::pipeline::{self, CompactOptions};

/// Arguments of `hindsight compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Dataset directory or object-store URL (a finished run: it has a manifest).
    pub dir: String,
    /// Roll to a new shard past this many MiB (default 256, as output.shard_max_bytes).
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub max_shard_mib: u64,
}

/// Compacts and prints a summary.
pub fn run(a: CompactArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    let opts = CompactOptions {
        max_shard_bytes: a.max_shard_mib.max(1).saturating_mul(1 << 20),
    };
    let report = pipeline::compact(&a.dir, &opts)?;
    super::emit_report(json_logs, "compact report", &report, &report.summary())?;
    println!("{}", report.output);
    Ok(ExitCode::SUCCESS)
}
