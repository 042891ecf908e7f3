//! The relevance self-check: does a relevance method tell a chat-log episode's real follow-up
//! from a follow-up taken from a different conversation? Each episode is scored twice with the
//! same prompt and response: once with its own follow-up (positive) and once with another
//! conversation's (negative). A method that separates them has a ROC AUC near 1; one that
//! cannot, 0.5. The best threshold (Youden's J) is reported too.

use serde::{Deserialize, Serialize};

use crate::episode::{Episode, PrivilegedContext, SourceKind};
use crate::model::LoadedModel;
use crate::score::prepare::{followup_probe, prepare, prepare_episode};
use crate::score::{RelevanceMethod, ScoreRequest, Scorer, ScorerConfig};
use crate::template::TeacherTemplate;

/// Every relevance method the pipeline offers.
pub const METHODS: [RelevanceMethod; 5] = [
    RelevanceMethod::Kl,
    RelevanceMethod::ControlKl,
    RelevanceMethod::Pmi,
    RelevanceMethod::PmiMean,
    RelevanceMethod::PmiAnswer,
];

/// The result written by `eval-relevance` and shown by the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelevanceEval {
    /// Model the scores come from.
    pub model_id: String,
    /// Episodes scored with both a real and a swapped follow-up.
    pub pairs: usize,
    /// Chat-log episodes skipped (no other conversation to borrow from, too long, no response).
    pub skipped: usize,
    /// One entry per method.
    pub methods: Vec<MethodEval>,
    /// The method with the highest AUC.
    pub best_method: String,
    /// Per-episode scores, for anyone who wants to look closer.
    pub episodes: Vec<PairScores>,
}

/// How well one method separates real from swapped follow-ups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MethodEval {
    pub method: String,
    /// P(score of a real follow-up > score of a swapped one); ties count one half.
    pub auc: f64,
    /// The threshold maximising TPR − FPR (keep rows with relevance ≥ threshold).
    pub best_threshold: f64,
    pub tpr_at_best: f64,
    pub fpr_at_best: f64,
    pub mean_real: f64,
    pub mean_swapped: f64,
}

/// Scores of one episode under every method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PairScores {
    /// `uri#record:turn` of the episode.
    pub episode: String,
    /// `uri#record:turn` of the episode whose follow-up was borrowed.
    pub swapped_from: String,
    /// Method name → (real, swapped).
    pub scores: std::collections::BTreeMap<String, (f64, f64)>,
}

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("scoring failed: {0}")]
    Score(#[from] crate::error::Error),
    #[error("template: {0}")]
    Template(#[from] crate::ingest::IngestError),
    #[error("need at least two chat-log episodes from different conversations with a follow-up; found {0}")]
    TooFew(usize),
}

fn label(ep: &Episode) -> String {
    let p = &ep.provenance;
    format!("{}#{}:{}", p.source_uri, p.source_record, p.turn_index)
}

fn conversation(ep: &Episode) -> String {
    let p = &ep.provenance;
    p.conversation_id
        .clone()
        .unwrap_or_else(|| format!("{}#{}", p.source_uri, p.source_record))
}

/// Pairs each usable episode with the follow-up of another conversation: the first one at least
/// half the list away (wrapping), so neighbours from one conversation are not picked.
fn pair_up(eps: &[&Episode]) -> Vec<(usize, usize)> {
    let n = eps.len();
    let mut out = Vec::new();
    for i in 0..n {
        let found = (n / 2..n + n / 2).map(|d| (i + d.max(1)) % n).find(|&j| {
            j != i
                && conversation(eps[j]) != conversation(eps[i])
                && eps[j].privileged.text != eps[i].privileged.text
        });
        if let Some(j) = found {
            out.push((i, j));
        }
    }
    out
}

/// ROC AUC (Mann–Whitney): P(pos > neg) + ½ P(pos = neg).
pub fn roc_auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0;
    for &p in pos {
        for &q in neg {
            if p > q {
                wins += 1.0;
            } else if p == q {
                wins += 0.5;
            }
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// The threshold maximising TPR − FPR for "keep if score ≥ threshold", with its TPR and FPR.
/// Thresholds are midpoints between consecutive distinct scores.
pub fn best_threshold(pos: &[f64], neg: &[f64]) -> (f64, f64, f64) {
    let mut all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    let rate =
        |v: &[f64], t: f64| v.iter().filter(|&&x| x >= t).count() as f64 / v.len().max(1) as f64;
    let mut best = (f64::NEG_INFINITY, 0.0, 0.0, 0.0);
    let mut candidates: Vec<f64> = all.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    if let Some(&first) = all.first() {
        candidates.insert(0, first);
    }
    for t in candidates {
        let (tpr, fpr) = (rate(pos, t), rate(neg, t));
        if tpr - fpr > best.0 {
            best = (tpr - fpr, t, tpr, fpr);
        }
    }
    (best.1, best.2, best.3)
}

/// Runs the self-check over `episodes` (only chat logs with a logged response and a follow-up
/// are used), scoring at most `max_pairs` pairs.
pub fn evaluate(
    m: &LoadedModel,
    episodes: &[Episode],
    template_of: &dyn Fn(&str) -> Option<TeacherTemplate>,
    scorer_cfg: &ScorerConfig,
    max_pairs: usize,
) -> Result<RelevanceEval, EvalError> {
    let usable: Vec<&Episode> = episodes
        .iter()
        .filter(|e| {
            e.source_kind == SourceKind::ChatLog
                && e.completion.is_some()
                && !e.privileged.text.trim().is_empty()
        })
        .collect();
    let mut pairs = pair_up(&usable);
    pairs.truncate(max_pairs);
    if pairs.is_empty() {
        return Err(EvalError::TooFew(usable.len()));
    }
    let max_positions = m.transformer.max_positions();
    let mut requests: Vec<ScoreRequest> = Vec::new();
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for &(i, j) in &pairs {
        let ep = usable[i];
        let tpl = template_of(&ep.teacher_template);
        let mut real = prepare_episode(&m.tokenizer, ep, tpl.as_ref())?;
        let response = ep.completion.as_deref().unwrap_or_default();
        real.request.followup = followup_probe(&m.tokenizer, ep, response, true);
        let swapped_ctx = PrivilegedContext {
            text: usable[j].privileged.text.clone(),
            solution: None,
        };
        let swapped_teacher = match &tpl {
            Some(t) => t.apply(&ep.prompt, &swapped_ctx)?,
            None => continue,
        };
        let control = tpl
            .as_ref()
            .map(|t| t.apply_control(&ep.prompt))
            .transpose()?;
        let mut swapped = prepare(
            &m.tokenizer,
            &ep.prompt,
            &swapped_teacher,
            control.as_deref(),
            real.request.completion_ids.clone(),
        )?;
        // The same response, followed by the borrowed follow-up.
        let mut borrowed = ep.clone();
        borrowed.privileged = swapped_ctx;
        swapped.request.followup = followup_probe(&m.tokenizer, &borrowed, response, true);
        let longest = |r: &ScoreRequest| {
            let probe = r
                .followup
                .as_ref()
                .map_or(0, |p| p.after_response.len() + p.target.len());
            (r.prompt_ids.len().max(r.teacher_prompt_ids.len()) + r.completion_ids.len()).max(probe)
        };
        if longest(&real.request).max(longest(&swapped.request)) > max_positions
            || real.request.completion_ids.is_empty()
        {
            continue;
        }
        requests.push(real.request);
        requests.push(swapped.request);
        kept.push((i, j));
    }
    let cfg = ScorerConfig {
        control: true,
        followup: true,
        ..scorer_cfg.clone()
    };
    let scorer = Scorer::new(&m.transformer, cfg);
    let mut scores = Vec::with_capacity(requests.len());
    for batch in requests.chunks(16) {
        scores.extend(scorer.score(batch)?.0);
        tracing::info!(
            scored = scores.len() / 2,
            of = kept.len(),
            "relevance pairs"
        );
    }
    let mut out_eps = Vec::new();
    let mut methods = Vec::new();
    for method in METHODS {
        let value = |k: usize| f64::from(scores[k].relevance(method));
        let pos: Vec<f64> = (0..kept.len()).map(|p| value(2 * p)).collect();
        let neg: Vec<f64> = (0..kept.len()).map(|p| value(2 * p + 1)).collect();
        let (t, tpr, fpr) = best_threshold(&pos, &neg);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        methods.push(MethodEval {
            method: method.as_str().to_string(),
            auc: roc_auc(&pos, &neg),
            best_threshold: t,
            tpr_at_best: tpr,
            fpr_at_best: fpr,
            mean_real: mean(&pos),
            mean_swapped: mean(&neg),
        });
    }
    for (p, &(i, j)) in kept.iter().enumerate() {
        out_eps.push(PairScores {
            episode: label(usable[i]),
            swapped_from: label(usable[j]),
            scores: METHODS
                .iter()
                .map(|&m| {
                    (
                        m.as_str().to_string(),
                        (
                            f64::from(scores[2 * p].relevance(m)),
                            f64::from(scores[2 * p + 1].relevance(m)),
                        ),
                    )
                })
                .collect(),
        });
    }
    let best_method = methods
        .iter()
        .max_by(|a, b| a.auc.total_cmp(&b.auc))
        .map(|m| m.method.clone())
        .unwrap_or_default();
    Ok(RelevanceEval {
        model_id: m.info.model_id.clone(),
        pairs: kept.len(),
        skipped: usable.len() - kept.len(),
        methods,
        best_method,
        episodes: out_eps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_wins_and_half_ties() {
        assert_eq!(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(roc_auc(&[1.0], &[1.0]), 0.5);
        // 3 > 2, 3 > 1, 1 = 1 (half), 1 < 2: (1 + 1 + 0.5 + 0) / 4.
        assert_eq!(roc_auc(&[3.0, 1.0], &[2.0, 1.0]), 0.625);
    }

    #[test]
    fn best_threshold_separates_clean_split() {
        let (t, tpr, fpr) = best_threshold(&[0.5, 0.6, 0.7], &[0.1, 0.2]);
        assert!((0.2..=0.5).contains(&t), "{t}");
        assert_eq!((tpr, fpr), (1.0, 0.0));
    }
}
