//! Episode-building configuration (a section of the pipeline TOML), with defaults for every
//! field so an empty section is valid.

use serde::{Deserialize, Serialize};

use crate::template::TemplateDef;

/// What to do with two user (or two assistant) turns in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolePolicy {
    /// Join them with a blank line (`merged_turns` flag). Real dumps split one message in two
    /// often enough that dropping them would waste data.
    #[default]
    Merge,
    /// Quarantine the record (`non_alternating_roles`).
    Quarantine,
}

/// What to do with a conversation whose first non-system turn is the assistant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadingAssistantPolicy {
    /// Drop the leading assistant turns (they have no prompt); flag `dropped_leading_assistant`.
    #[default]
    Drop,
    /// Quarantine the record (`leading_assistant`).
    Quarantine,
}

/// Which privileged signals the SDPO re-prompt of a unit-test attempt carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpoContext {
    /// Feedback and, when a peer passed, its solution.
    #[default]
    Both,
    /// Only the environment feedback.
    FeedbackOnly,
    /// Only a passing peer's solution (attempts without one get an empty feedback block).
    SolutionOnly,
}

/// Template id per input kind (built-in or defined under `custom_templates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateChoice {
    /// Chat logs (default `hindsight_offline_v1`).
    pub chat_log: String,
    /// Demonstrations (default `sdft_paper_v1`).
    pub demonstration: String,
    /// Unit tests (default `sdpo_reprompt_v1`).
    pub unit_test: String,
    /// Hints (default `opd_hint_v1`).
    pub hint: String,
}

impl Default for TemplateChoice {
    fn default() -> Self {
        TemplateChoice {
            chat_log: "hindsight_offline_v1".into(),
            demonstration: "sdft_paper_v1".into(),
            unit_test: "sdpo_reprompt_v1".into(),
            hint: "opd_hint_v1".into(),
        }
    }
}

/// Prefilters: each is configurable and every drop is counted under its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prefilter {
    /// Drop episodes whose response, last prompt message or follow-up is empty/whitespace.
    pub drop_empty_turns: bool,
    /// Drop episodes with any prompt message or response longer than this (chars).
    pub max_message_chars: Option<usize>,
    /// Drop episodes whose prompt + response + privileged text exceed this (chars).
    pub max_episode_chars: Option<usize>,
    /// Drop episodes whose prompt + response + privileged text exceed this many tokens
    /// (approximate unless the pipeline plugs in its tokenizer).
    pub max_episode_tokens: Option<usize>,
    /// Keep only these languages (ISO 639-1/639-3 codes or English names); empty = all.
    /// Detected with `whatlang` on the last user message; unreliable detections are kept and
    /// flagged `language_uncertain`.
    pub languages: Vec<String>,
    /// Drop records the dataset marks `toxic` (WildChat).
    pub drop_toxic: bool,
    /// Drop records the dataset marks `redacted` (WildChat).
    pub drop_redacted: bool,
    /// Keep only records whose `model` is in this list; empty = all.
    pub models: Vec<String>,
    /// Keep only records at or after this time (RFC 3339), when the record has a time.
    pub time_from: Option<String>,
    /// Keep only records before this time (RFC 3339), when the record has a time.
    pub time_to: Option<String>,
    /// Drop exact duplicate episodes (content hash of kind, template, prompt, response, context).
    pub dedup: bool,
    /// Replace personal data and credentials (emails, phones, IPs, cards, IBANs, SSNs, private
    /// keys, auth headers, API keys; see docs/PII.md) with placeholders before anything is
    /// built or written (quarantine snippets included).
    pub scrub_pii: bool,
    /// Extra patterns scrubbed before the built-in ones (when `scrub_pii` is on). Omitted from
    /// the config fingerprint while empty, so adding the field did not change existing ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pii_patterns: Vec<super::pii::PiiPattern>,
    /// Flag follow-ups that only acknowledge ("thanks", "ok") as `ack_only_followup`.
    pub flag_ack_only: bool,
    /// Drop those episodes instead of only flagging them.
    pub drop_ack_only: bool,
}

impl Default for Prefilter {
    fn default() -> Self {
        Prefilter {
            drop_empty_turns: true,
            max_message_chars: Some(100_000),
            max_episode_chars: Some(400_000),
            max_episode_tokens: None,
            languages: Vec::new(),
            drop_toxic: true,
            drop_redacted: false,
            models: Vec::new(),
            time_from: None,
            time_to: None,
            dedup: true,
            scrub_pii: true,
            pii_patterns: Vec::new(),
            flag_ack_only: true,
            drop_ack_only: false,
        }
    }
}

/// Everything that decides how records become episodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EpisodeConfig {
    /// Template per kind.
    pub templates: TemplateChoice,
    /// Templates defined in config (usable by id in `templates`).
    pub custom_templates: Vec<TemplateDef>,
    /// Consecutive same-role turns: merge or quarantine.
    pub non_alternating: RolePolicy,
    /// Conversations starting with the assistant: drop those turns or quarantine.
    pub leading_assistant: LeadingAssistantPolicy,
    /// The logged responses were produced by this very model (then `is_on_policy = true`).
    pub logged_responses_on_policy: bool,
    /// Middle-truncate privileged text (and peer solutions) to this many chars; 0 = never.
    pub privileged_max_chars: usize,
    /// Remove `<think>…</think>` blocks from demonstrations and peer solutions.
    pub strip_think: bool,
    /// What the SDPO teacher of a unit-test attempt sees: the test feedback, a passing peer's
    /// solution, or both (a sample is never its own peer).
    pub sdpo_context: SdpoContext,
    /// Most consecutive unit-test records of one group buffered to find a passing peer.
    pub max_group_records: usize,
    /// Prefilters.
    pub prefilter: Prefilter,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        EpisodeConfig {
            templates: TemplateChoice::default(),
            custom_templates: Vec::new(),
            non_alternating: RolePolicy::default(),
            leading_assistant: LeadingAssistantPolicy::default(),
            logged_responses_on_policy: false,
            privileged_max_chars: 2000,
            strip_think: false,
            sdpo_context: SdpoContext::default(),
            max_group_records: 256,
            prefilter: Prefilter::default(),
        }
    }
}
