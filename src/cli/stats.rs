//! `hindsight stats DIR [--json]`: what a written dataset holds (rows, tokens, bytes per
//! response token, relevance and length distributions, counts, run statistics).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::sink::dataset_stats;

/// Arguments of `hindsight stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Dataset directory (shards + manifest.json), or its object-store URL (s3://, gs://, az://).
    pub dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the dataset statistics.
pub fn run(a: StatsArgs) -> anyhow::Result<ExitCode> {
    // A dataset at an object-store URL is downloaded to a temporary directory first.
    let remote = match super::fetch_remote_dataset(&a.dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let dir = match &remote {
        Some(m) => m.local().to_path_buf(),
        None => a.dir.clone(),
    };
    if !dir.is_dir() {
        eprintln!("error: {} is not a dataset directory", a.dir.display());
        return Ok(ExitCode::from(2));
    }
    let s = dataset_stats(&dir)?;
    let text = if a.json {
        format!("{}\n", serde_json::to_string_pretty(&s)?)
    } else {
        s.to_string()
    };
    super::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}
