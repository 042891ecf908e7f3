//! `hindsight export-hf`: the embedded GGUF as a Hugging Face directory, for trainers that load
//! safetensors and for checking the second model source.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::model;

/// Arguments of `hindsight export-hf`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// GGUF file to convert (default: the embedded model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the export.
pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let path = model::resolve_model_path(a.model.as_deref())?;
    model::safetensors::export_gguf_as_hf(&path, &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
