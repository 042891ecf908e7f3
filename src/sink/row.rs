//! One output row: every contract column of one scored response, in plain Rust types. The
//! pipeline's scoring step builds rows from an episode and its scores (the sink knows nothing
//! of scoring, so a dataset reader does not link the model stack); the writer turns batches of rows into
//! Arrow, and readers (`validate`, `stats`, tests) turn Arrow back into rows.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::episode::{Episode, Message};

/// Every contract column of one row (see `docs/CONTRACT.md`). Token ids are stored as the
/// contract's int32; top-k columns are flattened row-major (`T * k` values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRow {
    /// Contract version (2).
    pub schema_version: u16,
    /// Stable content hash, see [`sample_id`].
    pub sample_id: String,
    /// `chat_log`, `demonstration`, `unit_test`, `hint`.
    pub source_kind: String,
    /// Input format name.
    pub source_format: String,
    /// Input file / object.
    pub source_uri: String,
    /// Record index inside the input.
    pub source_record: i64,
    /// Conversation id, when the input has one.
    pub conversation_id: Option<String>,
    /// Position of the response in the original conversation.
    pub turn_index: i32,
    /// When the response was produced (µs since the epoch, UTC), when logged.
    pub event_time: Option<i64>,
    /// Distillation method.
    pub method: String,
    /// Student conversation.
    pub prompt: Vec<Message>,
    /// Raw teacher-only text (plus the peer solution, when there is one).
    pub privileged_context: String,
    /// Teacher template id.
    pub teacher_template: String,
    /// Teacher conversation actually scored.
    pub teacher_prompt: Vec<Message>,
    /// Response text (for reading only).
    pub completion: String,
    /// Student context tokens.
    pub prompt_ids: Vec<i32>,
    /// Teacher context tokens.
    pub teacher_prompt_ids: Vec<i32>,
    /// Response tokens (length T).
    pub completion_ids: Vec<i32>,
    /// 1 where the trainer should learn.
    pub loss_mask: Vec<u8>,
    /// `stop`, `length`, `unknown`.
    pub finish_reason: String,
    /// Response sampled from this very model.
    pub is_on_policy: bool,
    /// Student log-prob per response token.
    pub student_logprobs: Vec<f32>,
    /// Teacher log-prob per response token (exact).
    pub teacher_logprobs: Vec<f32>,
    /// Teacher − student per token.
    pub advantages: Vec<f32>,
    /// Teacher top-k ids, `T * k`, descending per token.
    pub teacher_topk_ids: Vec<i32>,
    /// Teacher top-k log-probs, `T * k`.
    pub teacher_topk_logprobs: Vec<f32>,
    /// log(1 − Σ exp(top-k)) per token.
    pub teacher_tail_logmass: Vec<f32>,
    /// Student log-probs at the teacher's top-k ids, `T * k`; null in the compact encoding.
    pub student_topk_logprobs: Option<Vec<f32>>,
    /// The student's own top-K_s ids, `T * K_s`, descending; null when `student_top_k` is 0.
    pub student_topk_ids: Option<Vec<i32>>,
    /// The student's log-probs at its own top-K_s ids; null when `student_top_k` is 0 and in
    /// the compact encoding.
    pub student_topk_logprobs_self: Option<Vec<f32>>,
    /// The teacher's log-probs at the student's top-K_s ids; null when `student_top_k` is 0.
    pub teacher_logprobs_at_student_topk: Option<Vec<f32>>,
    /// The teacher's log-normaliser per token (its logit of a token = log-prob + this).
    pub teacher_logz: Vec<f32>,
    /// The student's log-normaliser per token.
    pub student_logz: Vec<f32>,
    /// T.
    pub num_completion_tokens: i32,
    /// Mean KL(teacher ‖ student), top-k + tail estimate.
    pub relevance_kl: f32,
    /// The filter score: the value of the method recorded in the dataset metadata
    /// (`relevance_method`). Null where that method does not apply to the row (e.g. the `pmi`
    /// methods on a demonstration, which is no reaction to a response); such rows are not
    /// filtered.
    pub relevance: Option<f32>,
    /// Mean KL(teacher with the real context ‖ teacher with the neutral control context);
    /// null without a control context.
    pub relevance_control_kl: Option<f32>,
    /// Σ over the feedback's tokens of log p(f | history, response) − log p(f | ∅); null where
    /// the feedback was not probed (a demonstration, a run with a KL method, a probe longer
    /// than the model's context).
    pub relevance_pmi: Option<f32>,
    /// `relevance_pmi` divided by the feedback's token count.
    pub relevance_pmi_mean: Option<f32>,
    /// Σ log p(f | history, response) − log p(f | history): what the response itself adds.
    pub relevance_pmi_answer: Option<f32>,
    /// Width of the top-k columns (not a column: recorded once, in metadata).
    #[serde(skip)]
    pub k: usize,
    /// Width K_s of the student-side columns (metadata `student_top_k`; 0 = off).
    #[serde(skip)]
    pub ks: usize,
}

impl OutputRow {
    /// A row with every column empty (zero, empty text, no values, null) and top-k width `k`:
    /// what a reader fills column by column.
    pub fn empty(k: usize) -> Self {
        OutputRow {
            schema_version: 0,
            sample_id: String::new(),
            source_kind: String::new(),
            source_format: String::new(),
            source_uri: String::new(),
            source_record: 0,
            conversation_id: None,
            turn_index: 0,
            event_time: None,
            method: String::new(),
            prompt: Vec::new(),
            privileged_context: String::new(),
            teacher_template: String::new(),
            teacher_prompt: Vec::new(),
            completion: String::new(),
            prompt_ids: Vec::new(),
            teacher_prompt_ids: Vec::new(),
            completion_ids: Vec::new(),
            loss_mask: Vec::new(),
            finish_reason: String::new(),
            is_on_policy: false,
            student_logprobs: Vec::new(),
            teacher_logprobs: Vec::new(),
            advantages: Vec::new(),
            teacher_topk_ids: Vec::new(),
            teacher_topk_logprobs: Vec::new(),
            teacher_tail_logmass: Vec::new(),
            student_topk_logprobs: None,
            student_topk_ids: None,
            student_topk_logprobs_self: None,
            teacher_logprobs_at_student_topk: None,
            teacher_logz: Vec::new(),
            student_logz: Vec::new(),
            num_completion_tokens: 0,
            relevance_kl: 0.0,
            relevance: None,
            relevance_control_kl: None,
            relevance_pmi: None,
            relevance_pmi_mean: None,
            relevance_pmi_answer: None,
            k,
            ks: 0,
        }
    }
}

/// The contract's `sample_id`: a stable hash of what makes a training example, so the same
/// example gets the same id across runs, shards and machines (dedup, joins, train/eval splits).
///
/// Recipe (version tag included so a future change cannot collide): the sha256 of the compact
/// JSON array
/// `["hindsight-sample-v1", source_kind, [[role, content], ...prompt], completion_ids,
///   privileged_text, privileged_solution_or_null, teacher_template]`
/// as serialized by `serde_json` (no whitespace, strings escaped per JSON), written as lowercase
/// hex and truncated to the first 32 characters (128 bits).
pub fn sample_id(episode: &Episode, completion_ids: &[u32]) -> String {
    let prompt: Vec<[&str; 2]> = episode
        .prompt
        .iter()
        .map(|m| [m.role.as_str(), &*m.content])
        .collect();
    let doc = serde_json::json!([
        "hindsight-sample-v1",
        episode.source_kind.as_str(),
        prompt,
        completion_ids,
        episode.privileged.text,
        episode.privileged.solution,
        episode.teacher_template,
    ]);
    let mut h = Sha256::new();
    h.update(doc.to_string().as_bytes());
    let mut hex = hex::encode(h.finalize());
    hex.truncate(32);
    hex
}

/// The `privileged_context` column: the privileged text, followed by the peer solution when
/// there is one (both are teacher-only text).
pub fn privileged_text(episode: &Episode) -> String {
    match &episode.privileged.solution {
        Some(sol) => format!("{}\n\n{}", episode.privileged.text, sol),
        None => episode.privileged.text.clone(),
    }
}

impl OutputRow {
    /// T, the number of response tokens.
    pub fn response_tokens(&self) -> usize {
        self.completion_ids.len()
    }
}
