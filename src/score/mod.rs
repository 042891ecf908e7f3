//! Scoring: teacher and student log-probs of every response token, the teacher's top-k and tail,
//! advantages and relevance, from a real forward pass.
//!
//! Requests are packed into forward batches bounded by a token budget; every token prefix shared
//! by sequences of a batch (the student, teacher and control contexts of an episode, and the
//! history of consecutive turns of a conversation) is computed once (see [`plan`]). The LM head and log-softmax run only on the rows that predict
//! response tokens, a bounded chunk of rows at a time.

pub mod contexts;
pub mod device_stats;
pub mod logprobs;
pub mod packing;

use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Transformer;
use crate::record::window;
/// Defined beside the record types: the sink and the config name relevance methods without
/// depending on the scorer.
pub use crate::record::{pmi_control, RelevanceMethod, DEFAULT_CONTROL_TOKENS, DEFAULT_PMI_TOKENS};
use logprobs::{kl_full, kl_topk_tail, log_sum_exp, tail_log_mass_of_row, top_k};
pub(crate) use packing::pack_requests;
pub use packing::{FollowupRows, RequestLayout};

mod assemble;
use assemble::*;

/// Where the per-position statistics (normaliser, top-k, tail, KL) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StatsPlacement {
    /// The host for a CPU model (f64 accumulation, exact to ~1e-7), the device for a GPU one
    /// (only K values per row cross the bus).
    #[default]
    Auto,
    /// Full-vocabulary rows copied to the host, reduced there in f64.
    Host,
    /// Tensor ops where the logits are ([`device_stats`]), f32 reductions.
    Device,
}

impl StatsPlacement {
    /// Parses a CLI value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "host" => Some(Self::Host),
            "device" => Some(Self::Device),
            _ => None,
        }
    }
}

/// Scoring settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScorerConfig {
    /// Teacher top-k size (K).
    pub top_k: usize,
    /// Student top-k size (K_s) of the student-side columns (the student's own top-k and the
    /// teacher's log-probs there, for reverse-KL losses); 0 = off.
    #[serde(default)]
    pub student_top_k: usize,
    /// Upper bound on tokens in one packed forward batch (a longer request runs alone).
    pub token_budget: usize,
    /// Compute the shared student/teacher prefix once.
    pub prefix_sharing: bool,
    /// Response positions whose logits are materialised at once (per context).
    pub head_chunk: usize,
    /// Also score the teacher with a neutral control context (needed for `control_kl`).
    pub control: bool,
    /// Response tokens the control context is scored on, from the first (0: all of them).
    #[serde(default)]
    pub control_tokens: usize,
    /// Also score the feedback as the next user turn (needed for the `pmi` methods); requests
    /// without a [`FollowupProbe`] are unaffected. Off by default: it costs about twice the
    /// scored feedback tokens (`pmi_tokens`) per episode, three times with the history probe.
    #[serde(default)]
    pub followup: bool,
    /// Feedback tokens the probes score, from the first (0: all of them).
    #[serde(default)]
    pub pmi_tokens: usize,
    pub relevance: RelevanceMethod,
    /// Where the statistics run.
    #[serde(default)]
    pub stats: StatsPlacement,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            top_k: 20,
            student_top_k: 0,
            token_budget: 4096,
            prefix_sharing: true,
            head_chunk: 32,
            control: true,
            control_tokens: DEFAULT_CONTROL_TOKENS,
            followup: false,
            pmi_tokens: DEFAULT_PMI_TOKENS,
            relevance: RelevanceMethod::ControlKl,
            stats: StatsPlacement::Auto,
        }
    }
}

/// The feedback `f` scored as the next user turn in three contexts, for the PMI relevance
/// methods. Each context ends right before the feedback's first token; `target` is `f`'s tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupProbe {
    /// History, the response, and the turn switch to the user (shares its prefix with the
    /// student sequence).
    pub after_response: Vec<u32>,
    /// History and the turn switch, without the response (for `pmi_answer`); `None` when the
    /// template refuses two user turns in a row.
    pub after_history: Option<Vec<u32>>,
    /// No conversation: only the template's preamble and the user-turn header.
    pub bare: Vec<u32>,
    /// The feedback's tokens.
    pub target: Vec<u32>,
}

/// Summed log-probabilities of the feedback's scored tokens (the first
/// [`ScorerConfig::pmi_tokens`]) in each probe context (nats).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FollowupScores {
    /// Feedback tokens scored (at most [`ScorerConfig::pmi_tokens`]).
    pub tokens: usize,
    /// Σ log p(f_t | history, response, f_<t).
    pub after_response: f64,
    /// Σ log p(f_t | history, f_<t), when scored.
    pub after_history: Option<f64>,
    /// Σ log p(f_t | preamble, f_<t).
    pub bare: f64,
}

impl FollowupScores {
    /// log p(f | history, response) − log p(f | ∅).
    pub fn pmi(&self) -> f64 {
        self.after_response - self.bare
    }

    /// [`FollowupScores::pmi`] per feedback token.
    pub fn pmi_mean(&self) -> f64 {
        self.pmi() / self.tokens.max(1) as f64
    }

    /// log p(f | history, response) − log p(f | history).
    pub fn pmi_answer(&self) -> Option<f64> {
        self.after_history.map(|h| self.after_response - h)
    }
}

impl ScorerConfig {
    /// Response tokens of a `len`-token response that the control context is scored on.
    pub fn control_len(&self, len: usize) -> usize {
        window(len, self.control_tokens)
    }

    /// Tokens of a `len`-token feedback that the probes score.
    pub fn pmi_len(&self, len: usize) -> usize {
        window(len, self.pmi_tokens)
    }
}

/// Token streams of one episode to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRequest {
    pub prompt_ids: Vec<u32>,
    pub teacher_prompt_ids: Vec<u32>,
    /// The teacher prompt with the privileged text replaced by a neutral control text.
    pub control_prompt_ids: Option<Vec<u32>>,
    pub completion_ids: Vec<u32>,
    /// The feedback as the next user turn, for the PMI relevance methods.
    pub followup: Option<FollowupProbe>,
}

/// Per-token scores of one episode (all vectors have length `T`; top-k ones `T * K`, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeScores {
    pub k: usize,
    pub student_logprobs: Vec<f32>,
    pub teacher_logprobs: Vec<f32>,
    pub advantages: Vec<f32>,
    pub teacher_topk_ids: Vec<u32>,
    pub teacher_topk_logprobs: Vec<f32>,
    pub teacher_tail_logmass: Vec<f32>,
    pub student_topk_logprobs: Vec<f32>,
    /// Width K_s of the student-side vectors (0: not computed).
    #[serde(default)]
    pub student_k: usize,
    /// The student's own top-K_s ids per token, descending, `T * K_s`.
    #[serde(default)]
    pub student_topk_ids: Vec<u32>,
    /// The student's log-probs at its own top-K_s ids, `T * K_s`.
    #[serde(default)]
    pub student_topk_logprobs_self: Vec<f32>,
    /// The teacher's log-probs at the student's top-K_s ids, `T * K_s`.
    #[serde(default)]
    pub teacher_logprobs_at_student_topk: Vec<f32>,
    /// The teacher's log-normaliser (log-sum-exp of its logits) per token: logit = log-prob + it.
    #[serde(default)]
    pub teacher_logz: Vec<f32>,
    /// The student's log-normaliser per token.
    #[serde(default)]
    pub student_logz: Vec<f32>,
    /// KL(teacher ‖ student) per token, top-k + tail estimate.
    pub kl_topk_tail: Vec<f32>,
    /// Exact KL(teacher ‖ student) per token over the full vocabulary.
    pub kl_full_vocab: Vec<f32>,
    /// KL(teacher ‖ control teacher) per token (top-k + tail) of the first
    /// [`ScorerConfig::control_tokens`] response tokens, when a control was scored.
    pub control_kl_topk_tail: Option<Vec<f32>>,
    /// Mean of `kl_topk_tail`.
    pub relevance_kl: f32,
    /// Mean of `control_kl_topk_tail` (over its window, not the whole response).
    pub relevance_control_kl: Option<f32>,
    /// The feedback scored as the next user turn, when the request had a probe.
    #[serde(default)]
    pub followup: Option<FollowupScores>,
}

impl EpisodeScores {
    /// Whether every score is a finite number. A NaN or an infinity (a broken checkpoint, an
    /// overflow) must never reach an output: JSON would write it as null, and a threshold
    /// comparison lets a NaN through.
    pub fn all_finite(&self) -> bool {
        let ok = |xs: &[f32]| xs.iter().all(|x| x.is_finite());
        [
            &self.student_logprobs,
            &self.teacher_logprobs,
            &self.advantages,
            &self.teacher_topk_logprobs,
            &self.teacher_tail_logmass,
            &self.student_topk_logprobs,
            &self.student_topk_logprobs_self,
            &self.teacher_logprobs_at_student_topk,
            &self.teacher_logz,
            &self.student_logz,
            &self.kl_topk_tail,
            &self.kl_full_vocab,
        ]
        .iter()
        .all(|v| ok(v))
            && self.control_kl_topk_tail.as_deref().is_none_or(ok)
            && self.relevance_kl.is_finite()
            && self.relevance_control_kl.is_none_or(f32::is_finite)
    }

    /// The relevance value of `method`, `None` when this episode lacks what the method needs
    /// (no control context; no feedback probe, e.g. a demonstration; no history-only context).
    /// There is no fallback to another method: scales differ, and a threshold set for one
    /// method would drop rows scored by another.
    pub fn relevance(&self, method: RelevanceMethod) -> Option<f32> {
        match method {
            RelevanceMethod::Kl => Some(self.relevance_kl),
            RelevanceMethod::ControlKl => self.relevance_control_kl,
            RelevanceMethod::Pmi => self.followup.map(|f| f.pmi() as f32),
            RelevanceMethod::PmiMean => self.followup.map(|f| f.pmi_mean() as f32),
            RelevanceMethod::PmiAnswer => {
                self.followup.and_then(|f| f.pmi_answer()).map(|v| v as f32)
            }
            RelevanceMethod::PmiControl => {
                let (f, kl) = (self.followup?, self.relevance_control_kl?);
                Some(pmi_control(f.pmi(), f64::from(kl)) as f32)
            }
        }
    }
}

/// Work counters, for benchmarks and run reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScoreStats {
    pub requests: u64,
    pub forward_batches: u64,
    /// Token rows run through the transformer body.
    pub forward_tokens: u64,
    /// Rows run through the LM head.
    pub head_rows: u64,
    /// Response tokens scored.
    pub response_tokens: u64,
}

/// The student-side values of one position: the student's top-K_s and both models' log-probs
/// there (empty when K_s = 0).
#[derive(Default)]
struct StudentSide {
    ids: Vec<u32>,
    student: Vec<f64>,
    teacher: Vec<f64>,
}

/// Runs scoring requests through a model.
pub struct Scorer<'m> {
    model: &'m Transformer,
    cfg: ScorerConfig,
}

/// Per-token results of one chunk, before they are scattered into the episode's vectors.
struct TokenResult {
    student: f64,
    teacher: f64,
    topk_ids: Vec<u32>,
    topk_lp: Vec<f64>,
    student_topk: Vec<f64>,
    student_side: StudentSide,
    lse_t: f64,
    lse_s: f64,
    tail: f64,
    kl: f64,
    kl_full: f64,
    control_kl: Option<f64>,
}

impl<'m> Scorer<'m> {
    /// A scorer over `model` with `cfg`.
    pub fn new(model: &'m Transformer, cfg: ScorerConfig) -> Self {
        Self { model, cfg }
    }

    /// The settings in force.
    pub fn config(&self) -> &ScorerConfig {
        &self.cfg
    }

    /// Whether statistics over rows of `width` logits with top-`k` run on the device.
    fn stats_on_device(&self, width: usize, k: usize) -> bool {
        let wanted = match self.cfg.stats {
            StatsPlacement::Host => false,
            StatsPlacement::Device => true,
            StatsPlacement::Auto => !self.model.device().is_cpu(),
        };
        wanted && device_stats::device_top_k_supported(width, k)
    }

    /// Scores every request; results come back in input order.
    pub fn score(&self, requests: &[ScoreRequest]) -> Result<(Vec<EpisodeScores>, ScoreStats)> {
        let vocab = self.model.config.vocab_size;
        for (i, r) in requests.iter().enumerate() {
            validate_request(i, r, vocab, self.cfg.control)?;
        }
        let mut stats = ScoreStats {
            requests: requests.len() as u64,
            ..Default::default()
        };
        let mut out: Vec<Option<EpisodeScores>> = vec![None; requests.len()];
        for pack in pack_requests(requests, &self.cfg) {
            let hidden = self.model.forward_hidden(&pack.batch)?;
            stats.forward_batches += 1;
            stats.forward_tokens += pack.batch.len() as u64;
            for layout in &pack.layouts {
                let req = &requests[layout.request];
                let scores = self.score_one(req, layout, &hidden, &mut stats)?;
                out[layout.request] = Some(scores);
            }
        }
        let scores = out
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.ok_or_else(|| Error::Request {
                    id: Some(i.to_string()),
                    message: "request was not scheduled (internal error)".into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((scores, stats))
    }

    fn score_one(
        &self,
        req: &ScoreRequest,
        layout: &RequestLayout,
        hidden: &Tensor,
        stats: &mut ScoreStats,
    ) -> Result<EpisodeScores> {
        let t_len = req.completion_ids.len();
        let k = self.cfg.top_k.min(self.model.config.vocab_size);
        let ks = self.cfg.student_top_k.min(self.model.config.vocab_size);
        // The control is scored on a window of the first response tokens: a chunk carries
        // control rows for its positions inside the window (`cc` of them, leading).
        let control_len = layout.control_rows.as_ref().map_or(0, Vec::len);
        let mut results: Vec<TokenResult> = Vec::with_capacity(t_len);
        let chunk = self.cfg.head_chunk.max(1);
        let mut t0 = 0;
        while t0 < t_len {
            let t1 = (t0 + chunk).min(t_len);
            let c = t1 - t0;
            let cc = t1.min(control_len).saturating_sub(t0);
            // Rows: [teacher chunk | student chunk | control rows of the chunk].
            let mut rows: Vec<u32> = Vec::with_capacity(2 * c + cc);
            rows.extend(layout.teacher_rows[t0..t1].iter().map(|&r| r as u32));
            rows.extend(layout.student_rows[t0..t1].iter().map(|&r| r as u32));
            if let Some(cr) = &layout.control_rows {
                rows.extend(cr.iter().skip(t0).take(cc).map(|&r| r as u32));
            }
            let idx = Tensor::from_vec(rows.clone(), rows.len(), hidden.device())?;
            let h = hidden.index_select(&idx, 0)?;
            let logits = self.model.logits(&h)?;
            stats.head_rows += rows.len() as u64;
            let v = self.model.config.vocab_size;
            let targets = &req.completion_ids[t0..t1];
            if self.stats_on_device(v, k.max(ks)) {
                results.extend(device_stats::chunk_results(&logits, c, cc, targets, k, ks)?);
                t0 = t1;
                continue;
            }
            let logits = logits.flatten_all()?.to_vec1::<f32>()?;
            let chunk_results: Vec<TokenResult> = (0..c)
                .into_par_iter()
                .map(|i| {
                    let teacher = &logits[i * v..(i + 1) * v];
                    let student = &logits[(c + i) * v..(c + i + 1) * v];
                    let control = (i < cc).then(|| &logits[(2 * c + i) * v..(2 * c + i + 1) * v]);
                    token_result(teacher, student, control, targets[i] as usize, k, ks)
                })
                .collect();
            results.extend(chunk_results);
            t0 = t1;
        }
        stats.response_tokens += t_len as u64;
        let mut scores = assemble(results, k, ks, layout.control_rows.is_some());
        if let (Some(probe), Some(rows)) = (&req.followup, &layout.followup_rows) {
            let t = &probe.target[..self.cfg.pmi_len(probe.target.len())];
            let mut probe_rows = vec![rows.after_response.as_slice(), rows.bare.as_slice()];
            probe_rows.extend(rows.after_history.as_deref());
            let sums = self.target_logprobs(&probe_rows, t, hidden, stats)?;
            scores.followup = Some(FollowupScores {
                tokens: t.len(),
                after_response: sums[0],
                bare: sums[1],
                after_history: sums.get(2).copied(),
            });
        }
        Ok(scores)
    }

    /// Σ_t log p(target_t) in each probe context, read from the rows predicting each target
    /// token (`rows[i][t]` predicts `target[t]` in context `i`). The rows of all contexts go
    /// through the LM head together, a bounded chunk at a time: one matmul of a few dozen rows
    /// instead of one per context.
    fn target_logprobs(
        &self,
        rows: &[&[usize]],
        target: &[u32],
        hidden: &Tensor,
        stats: &mut ScoreStats,
    ) -> Result<Vec<f64>> {
        let v = self.model.config.vocab_size;
        // (context, row, target token) of every scored position, context by context.
        let all: Vec<(usize, usize, u32)> = rows
            .iter()
            .enumerate()
            .flat_map(|(i, rs)| rs.iter().zip(target).map(move |(&r, &t)| (i, r, t)))
            .collect();
        let mut sums = vec![0.0; rows.len()];
        let chunk = self.cfg.head_chunk.max(1) * rows.len().max(1);
        for part in all.chunks(chunk) {
            let ids: Vec<u32> = part.iter().map(|&(_, r, _)| r as u32).collect();
            let targets: Vec<u32> = part.iter().map(|&(_, _, t)| t).collect();
            let idx = Tensor::from_vec(ids, part.len(), hidden.device())?;
            let logits = self.model.logits(&hidden.index_select(&idx, 0)?)?;
            stats.head_rows += part.len() as u64;
            let lps: Vec<f64> = if self.stats_on_device(v, 1) {
                device_stats::target_logprobs(&logits, &targets)?
            } else {
                let logits = logits.flatten_all()?.to_vec1::<f32>()?;
                targets
                    .par_iter()
                    .enumerate()
                    .map(|(i, &tok)| {
                        let row = &logits[i * v..(i + 1) * v];
                        row[tok as usize] as f64 - log_sum_exp(row)
                    })
                    .collect()
            };
            for (&(i, _, _), lp) in part.iter().zip(lps) {
                sums[i] += lp;
            }
        }
        Ok(sums)
    }
}
