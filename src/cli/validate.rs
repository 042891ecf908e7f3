//! `hindsight validate DIR`: checks a dataset against the output contract. Exit status 0 when it
//! satisfies every invariant, 1 when there are violations, 2 when DIR is not a usable directory
//! (clap also exits 2 on malformed arguments), so scripts can tell "bad data" from "bad call".

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::sink::validate;

/// Arguments of `hindsight validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Dataset directory (shards + manifest.json), or its object-store URL (s3://, gs://, az://).
    pub dir: PathBuf,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the validation and prints every violation.
pub fn run(a: ValidateArgs) -> anyhow::Result<ExitCode> {
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
    let report = match validate(&dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let text = if a.json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.to_string()
    };
    super::print_stdout(&format!("{text}\n"))?;
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
