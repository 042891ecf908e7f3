//! `hindsight eval-relevance PIPELINE.toml`: the relevance self-check on chat logs. Scores each
//! episode with its real follow-up and with one from another conversation and prints the ROC AUC
//! and best threshold of every relevance method, so the method and threshold are chosen on
//! evidence. `--out` writes the JSON that `hindsight report` shows.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::PipelineConfig;
use crate::episode::{self, IngestOptions};
use crate::report::relevance_eval::{evaluate, RelevanceEval};
use crate::score::ScorerConfig;

/// Arguments of `hindsight eval-relevance`.
#[derive(Debug, Args)]
pub struct EvalRelevanceArgs {
    /// Pipeline file whose inputs hold chat logs (e.g. pipelines/chat_logs.toml).
    pub pipeline: PathBuf,
    /// Input paths, directories or globs; replaces the pipeline's input.paths (repeatable).
    #[arg(long = "input")]
    pub inputs: Vec<String>,
    /// Override any pipeline key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Write the full result as JSON here (put it in the dataset directory as
    /// relevance_eval.json and `hindsight report` shows it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Score at most this many episodes (each twice).
    #[arg(long, default_value_t = 500)]
    pub max_episodes: usize,
}

fn table(r: &RelevanceEval) -> String {
    let mut s = format!(
        "relevance self-check: {} episodes, each with its real follow-up vs one from another conversation ({} skipped)\n\
         {:<12} {:>7} {:>15} {:>6} {:>6} {:>10} {:>10}\n",
        r.pairs, r.skipped, "method", "AUC", "best threshold", "TPR", "FPR", "mean real", "mean swap"
    );
    for m in &r.methods {
        s.push_str(&format!(
            "{:<12} {:>7.3} {:>15.4} {:>6.2} {:>6.2} {:>10.4} {:>10.4}{}\n",
            m.method,
            m.auc,
            m.best_threshold,
            m.tpr_at_best,
            m.fpr_at_best,
            m.mean_real,
            m.mean_swapped,
            if m.method == r.best_method {
                "  <- best"
            } else {
                ""
            }
        ));
    }
    s
}

/// Runs the self-check.
pub fn run(a: EvalRelevanceArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = PipelineConfig::load(&a.pipeline, &a.sets)?;
    if !a.inputs.is_empty() {
        cfg.input.paths = a.inputs.clone();
    }
    let model_path = crate::model::resolve_model_path(cfg.model.path.as_deref())?;
    tracing::info!(model = %model_path.display(), "loading model");
    let m = crate::model::load(&model_path, cfg.model.compute, &candle_core::Device::Cpu)?;
    let mut stream = episode::ingest(IngestOptions {
        inputs: cfg.input.paths.clone(),
        format: cfg.format()?,
        episode: cfg.episode.clone(),
        reader: cfg.input.reader_options(),
        quarantine_path: None,
        where_sql: cfg.input.r#where.clone(),
    })?;
    let episodes: Vec<_> = stream.by_ref().collect();
    let stats = stream.finish()?;
    tracing::info!(
        records = stats.records_read,
        episodes = episodes.len(),
        "inputs read"
    );
    let custom = cfg.episode.custom_templates.clone();
    let template_of = |id: &str| crate::template::resolve(id, &custom).ok();
    let scorer_cfg = ScorerConfig {
        top_k: cfg.score.top_k,
        token_budget: cfg.score.token_budget,
        prefix_sharing: cfg.score.prefix_sharing,
        ..ScorerConfig::default()
    };
    let result = evaluate(&m, &episodes, &template_of, &scorer_cfg, a.max_episodes)?;
    if let Some(out) = &a.out {
        let json = serde_json::to_vec_pretty(&result)?;
        crate::pipeline::state::write_atomic(out, &json)?;
        tracing::info!(path = %out.display(), "written");
    }
    super::print_stdout(&table(&result))?;
    Ok(ExitCode::SUCCESS)
}
