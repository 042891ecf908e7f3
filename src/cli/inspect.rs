//! `hindsight inspect DIR --sample-id ID`: one row's response in the terminal, each token
//! coloured by its advantage, optionally with a per-token table of the teacher's alternatives.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::report::{self, ansi, tokens::token_views, ReportError};

/// When to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal only.
    Auto,
    Always,
    Never,
}

/// Arguments of `hindsight inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Dataset directory.
    pub dir: PathBuf,
    /// The row to show.
    #[arg(long)]
    pub sample_id: String,
    /// Model whose tokenizer gives token texts (default: the embedded model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Colour the heatmap.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Also print a per-token table with the teacher's top alternatives.
    #[arg(long)]
    pub tokens: bool,
    /// Teacher alternatives per token in the table.
    #[arg(long, default_value_t = 5)]
    pub alternatives: usize,
}

/// Prints the heatmap of one row.
pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    if !a.dir.join(crate::sink::MANIFEST_FILE).is_file() {
        eprintln!(
            "error: {} is not a dataset directory (no manifest.json)",
            a.dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let row = match report::find_row(&a.dir, &a.sample_id) {
        Ok(r) => r,
        Err(e @ ReportError::NoSuchSample(_)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let tok = super::report::dataset_tokenizer(a.model.as_deref(), &a.dir)?;
    if let Err(note) = &tok {
        tracing::warn!("{note}");
    }
    let color = match a.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal(),
    };
    let views = token_views(tok.as_ref().ok(), &row, a.alternatives);
    let mut text = ansi::row_header(&row);
    text.push_str(&ansi::legend(color));
    text.push_str(&ansi::heatmap(&views, color));
    text.push('\n');
    if a.tokens {
        text.push_str(&ansi::token_table(&views));
    }
    super::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}
