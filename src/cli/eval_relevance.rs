//! `hindsight eval-relevance PIPELINE.toml`: the relevance self-check on chat logs. Scores each
//! episode with its real follow-up (and relevant ones again with one from another
//! conversation) and prints the ROC AUC of every relevance method, overall and per irrelevant
//! kind, with the threshold that keeps at most `--target-fpr` of irrelevant follow-ups, so the
//! method and threshold are chosen on evidence. `--out` writes the JSON that `hindsight report`
//! shows.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::PipelineConfig;
use crate::episode::{self, IngestOptions};
use crate::report::relevance_eval::{
    evaluate, read_labels, Labels, RelevanceEval, DEFAULT_TARGET_FPR, RELEVANT,
};
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
    /// Score at most this many episodes (relevant ones twice).
    #[arg(long, default_value_t = 500)]
    pub max_episodes: usize,
    /// Follow-up kinds, JSONL: {"conversation_id": "...", "turn_index": 1, "kind":
    /// "relevant" | "ack_only" | "unrelated" | "continuation"} per line. Unlabelled follow-ups are `ack_only`
    /// when the ack-only prefilter flagged them, else `relevant`.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// The share of irrelevant follow-ups the suggested threshold may keep.
    #[arg(long, default_value_t = DEFAULT_TARGET_FPR)]
    pub target_fpr: f64,
}

fn table(r: &RelevanceEval) -> String {
    let kinds: Vec<&String> = r.kinds.keys().filter(|k| *k != RELEVANT).collect();
    let counts: Vec<String> = r.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut s = format!(
        "relevance self-check: {} ({} labelled, {} skipped)\n",
        counts.join(", "),
        r.labelled,
        r.skipped
    );
    s.push_str(&format!("{:<12} {:>7}", "method", "AUC"));
    for k in &kinds {
        s.push_str(&format!(" {:>11}", format!("AUC {k}")));
    }
    s.push_str(&format!(
        " {:>12} {:>6} {:>6}\n",
        format!("t@FPR{:.2}", r.target_fpr),
        "kept+",
        "kept-"
    ));
    for m in &r.methods {
        s.push_str(&format!("{:<12} {:>7.3}", m.method, m.auc));
        for k in &kinds {
            let auc = m.auc_by_kind.get(*k).copied().unwrap_or(f64::NAN);
            s.push_str(&format!(" {auc:>11.3}"));
        }
        s.push_str(&format!(
            " {:>12.4} {:>6.2} {:>6.2}{}\n",
            m.threshold_at_target,
            m.tpr_at_target,
            m.fpr_at_target,
            if m.method == r.best_method {
                "  <- best"
            } else {
                ""
            }
        ));
    }
    s.push_str(
        "kept+: share of relevant follow-ups kept at the threshold; kept-: share of irrelevant ones\n",
    );
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
    let mut m = crate::model::load(&model_path, cfg.model.compute, &candle_core::Device::Cpu)?;
    cfg.model.configure(&mut m)?;
    let mut stream = episode::ingest(IngestOptions {
        inputs: cfg.input.paths.clone(),
        format: cfg.format()?,
        episode: cfg.episode.clone(),
        reader: cfg.input.reader_options(),
        quarantine_path: None,
        predicate: crate::sql::SqlWhere::optional(cfg.input.r#where.as_deref()),
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
        control_tokens: cfg.score.control_tokens,
        pmi_tokens: cfg.score.pmi_tokens,
        ..ScorerConfig::default()
    };
    let labels = match &a.labels {
        Some(p) => read_labels(p)?,
        None => Labels::new(),
    };
    if !(0.0..=1.0).contains(&a.target_fpr) {
        anyhow::bail!("--target-fpr must be within [0, 1], got {}", a.target_fpr);
    }
    let result = evaluate(
        &m,
        &episodes,
        &template_of,
        &scorer_cfg,
        &labels,
        a.max_episodes,
        a.target_fpr,
    )?;
    if let Some(out) = &a.out {
        let json = serde_json::to_vec_pretty(&result)?;
        crate::pipeline::state::write_atomic(out, &json)?;
        tracing::info!(path = %out.display(), "written");
    }
    super::print_stdout(&table(&result))?;
    Ok(ExitCode::SUCCESS)
}
