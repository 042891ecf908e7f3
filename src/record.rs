//! The record types every layer shares: chat messages, the kinds and formats of inputs, the
//! distillation method, provenance, the relevance methods and the model identity a dataset
//! records. A leaf module (it imports nothing from the crate), so that
//! readers, templates, tokenizers and the sink can all speak of a `Message` without depending
//! on each other. `crate::episode` re-exports everything here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A format name (the `--format` override, `input.format`) that names no input format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown input format `{0}` (expected wildchat, sharegpt, openai, demonstration, unit_test or hint)")]
pub struct UnknownFormat(pub String);

/// One chat message, TRL-compatible (`role`, `content`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text content, exactly as logged (special-token look-alikes are kept as plain text).
    /// Shared, not copied: every episode of a conversation holds its history, and a 400-turn
    /// agent transcript would otherwise be copied once per turn (quadratic memory).
    pub content: Arc<str>,
    /// An assistant turn's reasoning when the log keeps it apart from the content
    /// (`reasoning_content`, OpenAI-style `reasoning`). The chat template decides where it goes:
    /// templates with a reasoning slot (Qwen3) render it, others render none
    /// (docs/TEMPLATES.md, "Reasoning turns").
    #[serde(
        default,
        rename = "reasoning_content",
        alias = "reasoning",
        skip_serializing_if = "Option::is_none"
    )]
    pub reasoning: Option<Arc<str>>,
}

impl Message {
    /// A message without separate reasoning.
    pub fn new(role: impl Into<String>, content: impl Into<Arc<str>>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
            reasoning: None,
        }
    }
}

/// The content of the last user message (what a response answers), or "" when there is none.
pub fn last_user(messages: &[Message]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| &*m.content)
}

/// Which kind of input an episode came from; decides the method and default template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Logged conversations: the teacher sees the user's next turn.
    ChatLog,
    /// Prompt + demonstration (SDFT): the response is sampled from the student.
    Demonstration,
    /// Attempt + real test output (SDPO).
    UnitTest,
    /// Response + hint (OPD).
    Hint,
}

impl SourceKind {
    /// The snake_case name used in output rows.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceKind::ChatLog => "chat_log",
            SourceKind::Demonstration => "demonstration",
            SourceKind::UnitTest => "unit_test",
            SourceKind::Hint => "hint",
        }
    }

    /// The distillation method this kind feeds by default.
    pub fn default_method(&self) -> Method {
        match self {
            SourceKind::ChatLog => Method::Hindsight,
            SourceKind::Demonstration => Method::Sdft,
            SourceKind::UnitTest => Method::Sdpo,
            SourceKind::Hint => Method::Opd,
        }
    }
}

/// The concrete input format a record was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// WildChat (1M and 4.8M shapes).
    Wildchat,
    /// ShareGPT `conversations` / `from` / `value`.
    Sharegpt,
    /// OpenAI `messages`.
    Openai,
    /// Demonstrations.
    Demonstration,
    /// Unit-test outcomes.
    UnitTest,
    /// Hints.
    Hint,
}

impl SourceFormat {
    /// The snake_case name used in output rows and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceFormat::Wildchat => "wildchat",
            SourceFormat::Sharegpt => "sharegpt",
            SourceFormat::Openai => "openai",
            SourceFormat::Demonstration => "demonstration",
            SourceFormat::UnitTest => "unit_test",
            SourceFormat::Hint => "hint",
        }
    }

    /// Parses a format name (for the `--format` override).
    pub fn parse(name: &str) -> Result<Self, UnknownFormat> {
        Ok(
            match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "wildchat" => SourceFormat::Wildchat,
                "sharegpt" => SourceFormat::Sharegpt,
                "openai" | "messages" => SourceFormat::Openai,
                "demonstration" | "demonstrations" => SourceFormat::Demonstration,
                "unit_test" | "unit_tests" => SourceFormat::UnitTest,
                "hint" | "hints" => SourceFormat::Hint,
                _ => return Err(UnknownFormat(name.to_string())),
            },
        )
    }

    /// The input kind of this format.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceFormat::Wildchat | SourceFormat::Sharegpt | SourceFormat::Openai => {
                SourceKind::ChatLog
            }
            SourceFormat::Demonstration => SourceKind::Demonstration,
            SourceFormat::UnitTest => SourceKind::UnitTest,
            SourceFormat::Hint => SourceKind::Hint,
        }
    }
}

/// The self-distillation method an episode is for (stored per row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Self-distillation fine-tuning from demonstrations.
    Sdft,
    /// Self-distillation with environment feedback.
    Sdpo,
    /// On-policy self-distillation with reference solutions.
    Opsd,
    /// On-policy distillation with hints.
    Opd,
    /// Hindsight distillation from user follow-ups.
    Hindsight,
}

impl Method {
    /// The snake_case name used in output rows.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Sdft => "sdft",
            Method::Sdpo => "sdpo",
            Method::Opsd => "opsd",
            Method::Opd => "opd",
            Method::Hindsight => "hindsight",
        }
    }
}

/// How the scored response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Ended normally (end-of-turn token is scored).
    Stop,
    /// Cut by a length limit.
    Length,
    /// Not known.
    Unknown,
}

impl FinishReason {
    /// The snake_case name used in output rows.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Unknown => "unknown",
        }
    }
}

/// What only the teacher sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivilegedContext {
    /// The privileged text (follow-up, demonstration, feedback, hint), middle-truncated if long.
    pub text: String,
    /// A successful peer attempt (SDPO), if any.
    pub solution: Option<String>,
}

/// Where an episode came from, down to the turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// Input file (as given/expanded).
    pub source_uri: String,
    /// Record index in the file (JSONL line, array element, Parquet row).
    pub source_record: i64,
    /// Conversation / record id, if the record has one.
    pub conversation_id: Option<String>,
    /// Position of the response in the record's original message list (for single-prompt
    /// kinds: the number of prompt messages, i.e. where the response goes).
    pub turn_index: i32,
    /// When the logged response was produced (µs since epoch, UTC), if logged.
    pub event_time_us: Option<i64>,
}

/// Which relevance score a dataset's `relevance` column (and the filter) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RelevanceMethod {
    /// Mean KL(teacher ‖ student) over response tokens (top-k + tail estimate).
    Kl,
    /// Mean KL(teacher with the real context ‖ teacher with a neutral control context) over the
    /// first [`DEFAULT_CONTROL_TOKENS`] response tokens (`score.control_tokens`): how much the
    /// feedback itself, rather than the template text, moves the teacher.
    ControlKl,
    /// Σ over the feedback's first [`DEFAULT_PMI_TOKENS`] tokens (`score.pmi_tokens`) of
    /// log p(f | history, response) − log p(f | ∅): how much the conversation makes the
    /// feedback (as the next user turn) predictable.
    Pmi,
    /// [`RelevanceMethod::Pmi`] divided by the number of feedback tokens it sums over.
    PmiMean,
    /// log p(f | history, response) − log p(f | history) over the same tokens as `pmi`: what the
    /// response itself adds.
    PmiAnswer,
    /// `pmi + ln(max(control_kl, 1e-6))`: the feedback must both relate to the conversation
    /// and move the teacher (a product of the PMI's likelihood ratio and the teacher's KL, in
    /// log space). The default: a request to continue a cut-off answer ("continue", "weiter")
    /// is predictable (high `pmi`) but leaves the teacher where a neutral "ok" does (tiny
    /// `control_kl`), and `pmi` alone keeps it; `eval-relevance` measures both per kind.
    #[default]
    PmiControl,
}

impl RelevanceMethod {
    /// Name recorded in metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kl => "kl",
            Self::ControlKl => "control_kl",
            Self::Pmi => "pmi",
            Self::PmiMean => "pmi_mean",
            Self::PmiAnswer => "pmi_answer",
            Self::PmiControl => "pmi_control",
        }
    }

    /// The threshold a pipeline uses when `score.relevance_threshold` is not set: for the PMI
    /// methods, the lowest threshold that keeps at most 20% of the irrelevant follow-ups of the
    /// sample data (`eval-relevance --labels pipelines/chat_logs.labels.jsonl`, embedded
    /// model), rounded up; for `kl` and `control_kl`, 0 (keep all: they barely separate).
    /// Thresholds are model-specific: measure yours with `eval-relevance`.
    pub fn default_threshold(self) -> f32 {
        match self {
            Self::Kl | Self::ControlKl => 0.0,
            Self::Pmi => 4.0,
            Self::PmiMean => 1.32,
            Self::PmiAnswer => 2.2,
            Self::PmiControl => 0.85,
        }
    }

    /// Whether the method reads the feedback probes (the scorer's `followup` setting).
    pub fn needs_followup(self) -> bool {
        matches!(
            self,
            Self::Pmi | Self::PmiMean | Self::PmiAnswer | Self::PmiControl
        )
    }

    /// Whether the method reads the history-only probe (`pmi_answer`). The other PMI methods
    /// need only the probes after the response and after the preamble, so their runs skip it:
    /// a third of the probes' forward tokens.
    pub fn needs_history_probe(self) -> bool {
        self == Self::PmiAnswer
    }

    /// Parses a config / CLI value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kl" => Some(Self::Kl),
            "control_kl" => Some(Self::ControlKl),
            "pmi" => Some(Self::Pmi),
            "pmi_mean" => Some(Self::PmiMean),
            "pmi_answer" => Some(Self::PmiAnswer),
            "pmi_control" => Some(Self::PmiControl),
            _ => None,
        }
    }
}

/// Response tokens the control context is scored on by default (`score.control_tokens`).
/// Whether the feedback moves the teacher shows in its first tokens: on the sample data the mean
/// control KL over the first 8 separates as well as over the whole response (eval-relevance), and
/// the control then costs a few rows per episode however long the response is.
pub const DEFAULT_CONTROL_TOKENS: usize = 8;

/// Feedback tokens the PMI probes score by default (`score.pmi_tokens`). Whether a follow-up
/// reacts to the response shows in its first words; a pasted log or file after them would cost
/// two forward passes over its length and add little.
pub const DEFAULT_PMI_TOKENS: usize = 32;

/// The length of a window of `limit` tokens (0: no limit) over `len` tokens.
pub fn window(len: usize, limit: usize) -> usize {
    if limit == 0 {
        len
    } else {
        len.min(limit)
    }
}

/// The `pmi_control` combination: `pmi + ln(max(control_kl, 1e-6))` (the floor keeps a teacher
/// that does not move at all finite). `validate` recomputes it from the stored columns.
pub fn pmi_control(pmi: f64, control_kl: f64) -> f64 {
    pmi + control_kl.max(1e-6).ln()
}

/// Identity of the model that produced a dataset: recorded in every shard so a trainer can refuse
/// data made by another model or tokenizer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub model_id: String,
    pub architecture: String,
    pub source: String,
    pub weights_sha256: String,
    pub tokenizer_sha256: String,
    pub chat_template_sha256: String,
    pub compute_dtype: String,
    pub vocab_size: usize,
}
