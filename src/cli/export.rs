//! `hindsight export DIR --to axolotl-kd --out OUT`: a dataset in a trainer's own layout
//! (`crate::export`).

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::export::{self, AxolotlOptions, ExportOptions, Format, Overflow, Support};

/// Trainer layouts `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToArg {
    /// Axolotl's knowledge-distillation plugin (pre-tokenized, `skip_prepare_dataset: true`).
    AxolotlKd,
}

/// Whose top-k the targets name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SupportArg {
    /// The teacher's top-K (forward KL on the teacher's support).
    Teacher,
    /// The student's top-K_s with the teacher's log-probs there (needs score.student_top_k > 0).
    Student,
}

/// Rows longer than --max-len.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverflowArg {
    /// Leave them out (counted, listed in skipped.jsonl).
    Refuse,
    /// Cut the response at --max-len tokens (counted).
    Truncate,
}

/// Arguments of `hindsight export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Source dataset directory or object-store URL (a finished run: it has a manifest).
    pub dir: String,
    /// The trainer layout.
    #[arg(long, value_enum)]
    pub to: ToArg,
    /// Output directory or object-store URL (new or empty, or an earlier export with the same options).
    #[arg(long)]
    pub out: String,
    /// Whose top-k the targets name.
    #[arg(long, value_enum, default_value_t = SupportArg::Teacher)]
    pub support: SupportArg,
    /// Longest student sequence (prompt + response tokens) to write; Axolotl's `sequence_len`.
    #[arg(long, value_name = "TOKENS")]
    pub max_len: Option<usize>,
    /// What to do with longer rows.
    #[arg(long, value_enum, default_value_t = OverflowArg::Refuse)]
    pub overflow: OverflowArg,
    /// Leave out rows whose `relevance` is below this (null relevance is kept).
    #[arg(long, value_name = "SCORE")]
    pub min_relevance: Option<f32>,
    /// Write the teacher's log-probs as stored (normalised over the full vocabulary) instead of
    /// renormalised over the written top-k, as Axolotl's own KD data preparation does.
    #[arg(long)]
    pub raw_logprobs: bool,
}

/// Exports and prints a summary; exit 2 for options that do not apply, 3 for an --out that holds
/// something else, 75 while another export holds its lock.
pub fn run(a: ExportArgs, json_logs: bool) -> anyhow::Result<ExitCode> {
    let opts = ExportOptions {
        format: match a.to {
            ToArg::AxolotlKd => Format::AxolotlKd,
        },
        axolotl: AxolotlOptions {
            support: match a.support {
                SupportArg::Teacher => Support::Teacher,
                SupportArg::Student => Support::Student,
            },
            max_len: a.max_len,
            overflow: match a.overflow {
                OverflowArg::Refuse => Overflow::Refuse,
                OverflowArg::Truncate => Overflow::Truncate,
            },
            normalize_topk: !a.raw_logprobs,
        },
        min_relevance: a.min_relevance,
    };
    // The exit-code table of the README: 2 usage, 3 identity, 75 locked.
    let report = match export::export(&a.dir, &a.out, &opts) {
        Ok(r) => r,
        Err(e) => {
            let code = match &e {
                export::ExportError::Options(_) => 2,
                export::ExportError::Conflict(_) => 3,
                export::ExportError::State(crate::pipeline::state::StateError::Locked(_)) => 75,
                _ => return Err(e.into()),
            };
            eprintln!("error: {e}");
            return Ok(ExitCode::from(code));
        }
    };
    super::emit_report(json_logs, "export report", &report, &report.summary())?;
    println!("{}", report.output);
    Ok(ExitCode::SUCCESS)
}
