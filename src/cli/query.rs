//! `hindsight query DIR SQL [--out FILE] [--format table|csv|jsonl|parquet]`: read-only SQL
//! (DataFusion) over a dataset's shards (table `dataset`) and its quarantine file (table
//! `quarantine`). A bad query or directory exits with status 2 and writes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::sql::query::DatasetQuery;
use crate::sql::render::{render_table, write_file, write_stream, OutputFormat, TableLimits};
use crate::sql::SqlError;

/// Arguments of `hindsight query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Dataset directory (manifest.json + shards).
    pub dir: PathBuf,
    /// The query; tables: `dataset` (the shards in the manifest), `quarantine` (quarantine.jsonl).
    pub sql: String,
    /// Write the result to this file instead of printing it (format from the extension:
    /// .csv, .jsonl, .parquet), atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Output format (default: from --out's extension, else a table on stdout).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Rows printed in table output.
    #[arg(long, default_value_t = 100)]
    pub max_rows: usize,
    /// Characters per cell in table output (longer cells end with …).
    #[arg(long, default_value_t = 60)]
    pub max_width: usize,
}

/// Runs the query. Exit status 2: unusable directory, bad query or unsuitable format; an
/// output file that cannot be written is an error (status 1).
pub fn run(a: QueryArgs) -> anyhow::Result<ExitCode> {
    let usage = |m: String| -> anyhow::Result<ExitCode> {
        eprintln!("error: {m}");
        Ok(ExitCode::from(2))
    };
    let format = match (a.format, &a.out) {
        (Some(f), _) => f,
        (None, Some(p)) => match OutputFormat::from_path(p) {
            Some(f) => f,
            None => {
                return usage(format!(
                "cannot tell the format of {} from its extension; pass --format csv|jsonl|parquet",
                p.display()
            ))
            }
        },
        (None, None) => OutputFormat::Table,
    };
    if format == OutputFormat::Parquet && a.out.is_none() {
        return usage("--format parquet needs --out FILE".into());
    }
    let engine = match DatasetQuery::open(&a.dir) {
        Ok(e) => e,
        Err(e) => return usage(e.to_string()),
    };
    let mut q = match engine.plan(&a.sql) {
        Ok(q) => q,
        Err(e) => return usage(e.to_string()),
    };
    let result = match (&a.out, format) {
        (_, OutputFormat::Table) => render_table(
            &mut q,
            TableLimits {
                max_rows: a.max_rows,
                max_width: a.max_width.max(2),
            },
        )
        .and_then(|text| {
            super::print_stdout(&text).map_err(|e| SqlError::Query(e.to_string()))?;
            Ok(())
        }),
        (Some(path), f) => write_file(&mut q, f, path).map(|rows| {
            eprintln!("wrote {rows} rows to {}", path.display());
        }),
        (None, f) => {
            write_stream(&mut q, f, std::io::BufWriter::new(std::io::stdout())).map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ SqlError::Output { .. }) => Err(e.into()),
        Err(e) => usage(e.to_string()),
    }
}
