//! The relevance self-check: does a relevance method tell feedback that reacts to the response
//! from feedback that does not? Each chat-log episode is scored with its own follow-up, and
//! every episode whose follow-up is relevant is scored again with a follow-up borrowed from
//! another conversation. The irrelevant kinds are:
//!
//! - `swapped`: another conversation's follow-up (always available, no labels needed);
//! - `ack_only`: a logged follow-up that only acknowledges ("thanks", "ok"), from the
//!   `ack_only_followup` flag or a label;
//! - `unrelated`: a logged follow-up that starts a new, unrelated question (labels only);
//! - `continuation`: a request to go on with an answer that was cut off ("continue", "weiter",
//!   "继续"): predictable from the cut-off, silent about what the answer got wrong (labels
//!   only).
//!
//! Labels come from an optional JSONL file, one `{"conversation_id", "turn_index", "kind"}` per
//! line (`kind`: `relevant`, `ack_only`, `unrelated`, `continuation`). A method that separates relevant from
//! irrelevant has a ROC AUC near 1; one that cannot, 0.5. For each method the report gives
//! the AUC against all irrelevant kinds and per kind, the best threshold (Youden's J) and the
//! threshold that keeps at most a target share of irrelevant follow-ups.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::episode::{Episode, PrivilegedContext, SourceKind};
use crate::model::LoadedModel;
use crate::score::contexts::{followup_probe, prepare, prepare_episode, Response};
use crate::score::{RelevanceMethod, ScoreRequest, Scorer, ScorerConfig};
use crate::template::TeacherTemplate;

/// Every relevance method the pipeline offers.
pub const METHODS: [RelevanceMethod; 6] = [
    RelevanceMethod::Kl,
    RelevanceMethod::ControlKl,
    RelevanceMethod::Pmi,
    RelevanceMethod::PmiMean,
    RelevanceMethod::PmiAnswer,
    RelevanceMethod::PmiControl,
];

/// Kind of a follow-up: `relevant` is the positive class, the rest are irrelevant.
pub const KINDS: [&str; 5] = [RELEVANT, "swapped", "ack_only", "unrelated", "continuation"];

/// The positive kind.
pub const RELEVANT: &str = "relevant";

/// Default target for [`MethodEval::threshold_at_target`]: keep at most this share of
/// irrelevant follow-ups.
pub const DEFAULT_TARGET_FPR: f64 = 0.2;

/// The result written by `eval-relevance` and shown by the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelevanceEval {
    /// Model the scores come from.
    pub model_id: String,
    /// Relevant episodes also scored with a borrowed follow-up.
    pub pairs: usize,
    /// Chat-log episodes skipped (too long for the model, empty response).
    pub skipped: usize,
    /// Scored follow-ups per kind (`relevant`, `swapped`, `ack_only`, `unrelated`,
    /// `continuation`).
    pub kinds: BTreeMap<String, usize>,
    /// Episodes whose kind came from the label file.
    pub labelled: usize,
    /// The share of irrelevant follow-ups [`MethodEval::threshold_at_target`] may keep.
    pub target_fpr: f64,
    /// One entry per method.
    pub methods: Vec<MethodEval>,
    /// The method with the highest AUC against all irrelevant kinds.
    pub best_method: String,
    /// Per-follow-up scores, for anyone who wants to look closer.
    pub episodes: Vec<FollowupScores>,
}

/// How well one method separates relevant from irrelevant follow-ups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MethodEval {
    pub method: String,
    /// P(score of a relevant follow-up > score of an irrelevant one), all irrelevant kinds
    /// pooled; ties count one half.
    pub auc: f64,
    /// The same against each irrelevant kind alone (kinds without follow-ups are absent).
    pub auc_by_kind: BTreeMap<String, f64>,
    /// The threshold maximising TPR − FPR (keep rows with relevance ≥ threshold).
    pub best_threshold: f64,
    pub tpr_at_best: f64,
    pub fpr_at_best: f64,
    /// The lowest threshold that keeps at most `target_fpr` of the irrelevant follow-ups.
    pub threshold_at_target: f64,
    /// Share of relevant follow-ups kept at `threshold_at_target`.
    pub tpr_at_target: f64,
    /// Share of irrelevant follow-ups kept there (≤ `target_fpr`).
    pub fpr_at_target: f64,
    /// Share of each kind kept at `threshold_at_target`.
    pub kept_at_target: BTreeMap<String, f64>,
    pub mean_relevant: f64,
    pub mean_irrelevant: f64,
    /// Follow-ups the method could not score (left out of its numbers).
    pub not_applicable: usize,
}

/// The scores of one follow-up under every method.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FollowupScores {
    /// `uri#record:turn` of the episode.
    pub episode: String,
    /// `relevant`, `swapped`, `ack_only`, `unrelated` or `continuation`.
    pub kind: String,
    /// For `swapped`: `uri#record:turn` of the episode whose follow-up was borrowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped_from: Option<String>,
    /// Method name → score (absent where the method does not apply).
    pub scores: BTreeMap<String, f64>,
}

/// One line of a label file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelLine {
    conversation_id: String,
    turn_index: i32,
    kind: String,
}

/// Follow-up kinds by (conversation id, turn index), read from a label file.
pub type Labels = HashMap<(String, i32), String>;

/// Errors of the evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("scoring failed: {0}")]
    Score(#[from] crate::error::Error),
    #[error("template: {0}")]
    Template(#[from] crate::template::TemplateError),
    #[error(
        "need at least two relevant chat-log follow-ups from different conversations; found {0}"
    )]
    TooFew(usize),
    #[error("{path}:{line}: {message}")]
    Labels {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads a label file (JSONL; blank lines allowed). Every line must name a known kind.
pub fn read_labels(path: &Path) -> Result<Labels, EvalError> {
    let err = |line: usize, message: String| EvalError::Labels {
        path: path.display().to_string(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
    let mut out = Labels::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: LabelLine = serde_json::from_str(line).map_err(|e| err(i + 1, e.to_string()))?;
        if l.kind == "swapped" || !KINDS.contains(&l.kind.as_str()) {
            return Err(err(
                i + 1,
                format!(
                    "unknown kind '{}' (relevant, ack_only, unrelated, continuation)",
                    l.kind
                ),
            ));
        }
        out.insert((l.conversation_id, l.turn_index), l.kind);
    }
    Ok(out)
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

/// The kind of an episode's own follow-up: its label, else `ack_only` when flagged, else
/// `relevant`.
fn kind_of(ep: &Episode, labels: &Labels) -> (String, bool) {
    let p = &ep.provenance;
    if let Some(k) = p
        .conversation_id
        .as_ref()
        .and_then(|c| labels.get(&(c.clone(), p.turn_index)))
    {
        return (k.clone(), true);
    }
    if ep.has_flag("ack_only_followup") {
        return ("ack_only".into(), false);
    }
    (RELEVANT.into(), false)
}

/// Pairs each relevant episode with the follow-up of another conversation's relevant episode:
/// the first one at least half the list away (wrapping), so neighbours from one conversation
/// are not picked.
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
    let mut best = (f64::NEG_INFINITY, 0.0, 0.0, 0.0);
    for t in candidates(pos, neg) {
        let (tpr, fpr) = (kept_share(pos, t), kept_share(neg, t));
        if tpr - fpr > best.0 {
            best = (tpr - fpr, t, tpr, fpr);
        }
    }
    (best.1, best.2, best.3)
}

/// Candidate thresholds for "keep if score ≥ t", ascending: the lowest score, the midpoints
/// between consecutive distinct scores, and one above the highest.
fn candidates(pos: &[f64], neg: &[f64]) -> Vec<f64> {
    let mut all: Vec<f64> = pos.iter().chain(neg).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    let mut out = Vec::with_capacity(all.len() + 1);
    if let Some(&first) = all.first() {
        out.push(first);
    }
    out.extend(all.windows(2).map(|w| (w[0] + w[1]) / 2.0));
    if let Some(&last) = all.last() {
        out.push(last + 1.0);
    }
    out
}

/// Share of `v` kept by "score ≥ t".
fn kept_share(v: &[f64], t: f64) -> f64 {
    v.iter().filter(|&&x| x >= t).count() as f64 / v.len().max(1) as f64
}

/// The lowest threshold keeping at most `target` of `neg`, with the TPR and FPR there.
pub fn threshold_at_fpr(pos: &[f64], neg: &[f64], target: f64) -> (f64, f64, f64) {
    for t in candidates(pos, neg) {
        let fpr = kept_share(neg, t);
        if fpr <= target {
            return (t, kept_share(pos, t), fpr);
        }
    }
    (f64::NAN, 0.0, 0.0)
}

/// One follow-up to score: the episode, its kind, and where a swapped follow-up came from.
struct Item {
    episode: String,
    kind: String,
    swapped_from: Option<String>,
}

/// Runs the self-check over `episodes` (only chat logs with a logged response and a follow-up
/// are used, at most `max_episodes` of them). `labels` (possibly empty) gives follow-up kinds;
/// `target_fpr` sets [`MethodEval::threshold_at_target`].
pub fn evaluate(
    m: &LoadedModel,
    episodes: &[Episode],
    template_of: &dyn Fn(&str) -> Option<TeacherTemplate>,
    scorer_cfg: &ScorerConfig,
    labels: &Labels,
    max_episodes: usize,
    target_fpr: f64,
) -> Result<RelevanceEval, EvalError> {
    let mut usable: Vec<(&Episode, String, bool)> = episodes
        .iter()
        .filter(|e| {
            e.source_kind == SourceKind::ChatLog
                && e.completion.is_some()
                && !e.privileged.text.trim().is_empty()
        })
        .map(|e| {
            let (kind, labelled) = kind_of(e, labels);
            (e, kind, labelled)
        })
        .collect();
    usable.truncate(max_episodes);
    let relevant: Vec<&Episode> = usable
        .iter()
        .filter(|(_, k, _)| k == RELEVANT)
        .map(|(e, _, _)| *e)
        .collect();
    let borrow: HashMap<usize, usize> = pair_up(&relevant).into_iter().collect();
    if relevant.len() < 2 || borrow.is_empty() {
        return Err(EvalError::TooFew(relevant.len()));
    }
    let max_positions = m.transformer.max_positions();
    let longest = |r: &ScoreRequest| {
        let probe = r.followup.as_ref().map_or(0, |p| {
            p.after_response.len().max(p.bare.len()) + p.target.len()
        });
        (r.prompt_ids.len().max(r.teacher_prompt_ids.len()) + r.completion_ids.len()).max(probe)
    };
    let mut requests: Vec<ScoreRequest> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    let mut skipped = 0;
    let mut labelled = 0;
    let mut relevant_index = 0;
    for (ep, kind, from_label) in &usable {
        let own_index = (kind == RELEVANT).then(|| {
            relevant_index += 1;
            relevant_index - 1
        });
        let tpl = template_of(&ep.teacher_template);
        let response = ep.completion.as_deref().unwrap_or_default();
        // An episode the pipeline would drop (template mismatch, tokenization) is skipped.
        let Ok(mut real) = prepare_episode(&m.tokenizer, ep, tpl.as_ref()) else {
            skipped += 1;
            continue;
        };
        real.request.followup = followup_probe(&m.tokenizer, ep, response, true);
        if longest(&real.request) > max_positions || real.request.completion_ids.is_empty() {
            skipped += 1;
            continue;
        }
        // The same response, followed by another conversation's relevant follow-up.
        let swapped = match (own_index.and_then(|i| borrow.get(&i)), &tpl) {
            (Some(&j), Some(t)) => {
                let ctx = PrivilegedContext {
                    text: relevant[j].privileged.text.clone(),
                    solution: None,
                };
                let teacher = t.apply(&ep.prompt, &ctx)?;
                let control = t.apply_control(&ep.prompt)?;
                let mut p = prepare(
                    &m.tokenizer,
                    &ep.prompt,
                    &teacher,
                    Some(&control),
                    Response::Sampled(real.request.completion_ids.clone()),
                )?;
                let mut borrowed = (*ep).clone();
                borrowed.privileged = ctx;
                p.request.followup = followup_probe(&m.tokenizer, &borrowed, response, true);
                (longest(&p.request) <= max_positions).then_some((p.request, label(relevant[j])))
            }
            _ => None,
        };
        labelled += usize::from(*from_label);
        requests.push(real.request);
        items.push(Item {
            episode: label(ep),
            kind: kind.clone(),
            swapped_from: None,
        });
        if let Some((request, from)) = swapped {
            requests.push(request);
            items.push(Item {
                episode: label(ep),
                kind: "swapped".into(),
                swapped_from: Some(from),
            });
        }
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
            scored = scores.len(),
            of = requests.len(),
            "relevance follow-ups"
        );
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for it in &items {
        *kinds.entry(it.kind.clone()).or_default() += 1;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut methods = Vec::new();
    for method in METHODS {
        let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut not_applicable = 0;
        for (it, s) in items.iter().zip(&scores) {
            match s.relevance(method) {
                Some(v) => by_kind
                    .entry(it.kind.as_str())
                    .or_default()
                    .push(f64::from(v)),
                None => not_applicable += 1,
            }
        }
        let pos = by_kind.remove(RELEVANT).unwrap_or_default();
        let neg: Vec<f64> = by_kind.values().flatten().copied().collect();
        let (t, tpr, fpr) = best_threshold(&pos, &neg);
        let (tt, ttpr, tfpr) = threshold_at_fpr(&pos, &neg, target_fpr);
        let mut kept_at_target: BTreeMap<String, f64> =
            [(RELEVANT.to_string(), ttpr)].into_iter().collect();
        kept_at_target.extend(
            by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), kept_share(v, tt))),
        );
        methods.push(MethodEval {
            method: method.as_str().to_string(),
            auc: roc_auc(&pos, &neg),
            auc_by_kind: by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), roc_auc(&pos, v)))
                .collect(),
            best_threshold: t,
            tpr_at_best: tpr,
            fpr_at_best: fpr,
            threshold_at_target: tt,
            tpr_at_target: ttpr,
            fpr_at_target: tfpr,
            kept_at_target,
            mean_relevant: mean(&pos),
            mean_irrelevant: mean(&neg),
            not_applicable,
        });
    }
    let out_eps = items
        .into_iter()
        .zip(&scores)
        .map(|(it, s)| FollowupScores {
            episode: it.episode,
            kind: it.kind,
            swapped_from: it.swapped_from,
            scores: METHODS
                .iter()
                .filter_map(|&m| Some((m.as_str().to_string(), f64::from(s.relevance(m)?))))
                .collect(),
        })
        .collect();
    let best_method = methods
        .iter()
        .filter(|m| m.auc.is_finite())
        .max_by(|a, b| a.auc.total_cmp(&b.auc))
        .map(|m| m.method.clone())
        .unwrap_or_default();
    Ok(RelevanceEval {
        model_id: m.info.model_id.clone(),
        pairs: kinds.get("swapped").copied().unwrap_or(0),
        skipped,
        kinds,
        labelled,
        target_fpr,
        methods,
        best_method,
        episodes: out_eps,
    })
}

#[cfg(test)]
mod tests;
