//! `hindsight report DIR`: one self-contained HTML page showing what the pipeline did and what
//! the dataset holds, down to token-level heatmaps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::report::{self, ReportOptions};
use crate::tokenize::Tokenizer;

/// Arguments of `hindsight report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Dataset directory (shards + manifest.json).
    pub dir: PathBuf,
    /// Where to write the page (default: DIR/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model whose tokenizer gives token texts (default: the embedded model); it must be the
    /// dataset's tokenizer, otherwise token ids are shown.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output of `eval-relevance` to include (default: DIR/relevance_eval.json when present).
    #[arg(long)]
    pub relevance_eval: Option<PathBuf>,
    /// Rows shown per group (highest, lowest, random relevance).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

/// The dataset's tokenizer when it can be loaded and matches, else why not (views then show ids).
pub(crate) fn dataset_tokenizer(
    model: Option<&Path>,
    dir: &Path,
) -> anyhow::Result<Result<Tokenizer, String>> {
    let manifest = crate::sink::Manifest::read(dir)?;
    let path = match crate::model::resolve_model_path(model) {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("token texts unavailable: {e}"))),
    };
    let tok = match crate::model::load_tokenizer(&path) {
        Ok(t) => t,
        Err(e) => return Ok(Err(format!("token texts unavailable: {e}"))),
    };
    if tok.fingerprint() != manifest.dataset.tokenizer_sha256 {
        return Ok(Err(format!(
            "token texts unavailable: the tokenizer of {} ({}) is not the dataset's ({}); pass --model",
            path.display(),
            tok.fingerprint(),
            manifest.dataset.tokenizer_sha256
        )));
    }
    Ok(Ok(tok))
}

/// Writes the report page.
pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    if !a.dir.join(crate::sink::MANIFEST_FILE).is_file() {
        eprintln!(
            "error: {} is not a dataset directory (no manifest.json)",
            a.dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let tok = dataset_tokenizer(a.model.as_deref(), &a.dir)?;
    let eval_path = a
        .relevance_eval
        .clone()
        .or_else(|| Some(a.dir.join("relevance_eval.json")).filter(|p| p.is_file()));
    let eval = match &eval_path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?)
        }
        None => None,
    };
    let opts = ReportOptions {
        samples_per_group: a.samples,
        ..ReportOptions::default()
    };
    let mut data = report::build(&a.dir, tok.as_ref().ok(), eval, &opts)?;
    if let Err(note) = &tok {
        tracing::warn!("{note}");
        data.tokenizer_note = Some(note.clone());
    }
    let html = report::html::render(&data)?;
    let out = a.out.unwrap_or_else(|| a.dir.join("report.html"));
    crate::pipeline::state::write_atomic(&out, html.as_bytes())?;
    tracing::info!(
        rows = data.dataset.rows,
        samples = data.samples.len(),
        bytes = html.len(),
        "report written"
    );
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
