//! Extraction rules: records → episodes, per input kind (INPUTS.md), with record-level filters.
//!
//! Chat logs: after normalisation, every assistant turn that directly follows a user turn and is
//! directly followed by a user turn gives one episode (prompt = all earlier messages, response =
//! that turn, privileged = the next user turn). The final assistant turn gives none; assistant
//! turns after a tool result give none (their prompt would not end with a user message).
//! Demonstrations: one episode, no response (`completion = None`, rolled out on-policy later).
//! Unit tests: one episode per attempt, privileged = feedback, peer solution = another passing
//! attempt of the same group (see [`EpisodeBuilder::build_unit_test_group`]). Hints: one episode.
//!
//! Bad-input outcomes decided here (see INGEST.md): empty conversation → filtered
//! `empty_conversation`; no assistant turn followed by a user turn → filtered `no_episode`;
//! two same-role turns in a row → merged (or quarantined `non_alternating_roles`); leading
//! assistant turns → dropped (or quarantined `leading_assistant`); a prompt that does not end
//! with a user message → quarantined `schema_mismatch`. Text is never altered except by PII
//! scrubbing and middle-truncation of privileged text; special-token look-alikes stay as text.

use std::collections::BTreeMap;

use regex::Regex;

use super::config::{EpisodeConfig, LeadingAssistantPolicy, RolePolicy, SdpoContext};
use super::pii::PiiScrubber;
use super::prefilter::is_ack_only;
use super::{
    Episode, FinishReason, Message, Method, PrivilegedContext, Provenance, SourceFormat, SourceKind,
};
use crate::ingest::formats::{self, ChatLog, Parsed, Turn, UnitTestRecord};
use crate::ingest::quarantine::{QuarantineEntry, QuarantineReason};
use crate::ingest::IngestError;
use crate::ingest::RawRecord;
use crate::template::{self, truncate_middle, TeacherTemplate};

mod episodes;

/// Why a whole record was filtered (keys of `records_filtered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFilter {
    /// The conversation has no messages.
    EmptyConversation,
    /// No assistant turn is followed by a user turn (or the prompt-style record is unusable).
    NoEpisode,
    /// Marked toxic by the dataset.
    Toxic,
    /// Marked redacted by the dataset.
    Redacted,
    /// Model not in the allow list.
    Model,
    /// Outside the configured time window.
    TimeWindow,
}

impl RecordFilter {
    /// The snake_case reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordFilter::EmptyConversation => "empty_conversation",
            RecordFilter::NoEpisode => "no_episode",
            RecordFilter::Toxic => "toxic",
            RecordFilter::Redacted => "redacted",
            RecordFilter::Model => "model",
            RecordFilter::TimeWindow => "time_window",
        }
    }
}

/// Why a record produced no episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Filtered by a rule (counted, not written anywhere).
    Filtered(RecordFilter),
    /// Does not fit its schema (written to quarantine).
    Quarantined(QuarantineEntry),
}

/// Where a record came from (kept while unit-test groups are buffered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Source file.
    pub source_uri: String,
    /// Record index.
    pub record_index: i64,
    /// Byte offset.
    pub byte_offset: Option<u64>,
}

impl RecordMeta {
    /// Provenance fields of a raw record.
    pub fn of(record: &RawRecord) -> Self {
        RecordMeta {
            source_uri: record.source_uri.clone(),
            record_index: record.record_index,
            byte_offset: record.byte_offset,
        }
    }

    fn quarantine(&self, reason: QuarantineReason, detail: String, raw: &[u8]) -> Rejection {
        Rejection::Quarantined(QuarantineEntry::new(
            &self.source_uri,
            self.record_index,
            self.byte_offset,
            reason,
            detail,
            raw,
        ))
    }
}

/// Turns records into episodes; holds resolved templates and compiled regexes.
pub struct EpisodeBuilder {
    cfg: EpisodeConfig,
    templates: [TeacherTemplate; 4],
    scrubber: Option<PiiScrubber>,
    think: Option<Regex>,
    time_from: Option<i64>,
    time_to: Option<i64>,
    /// PII replacements so far, per kind.
    pub pii_counts: BTreeMap<String, u64>,
}

fn parse_bound(v: &Option<String>, name: &str) -> Result<Option<i64>, IngestError> {
    match v {
        None => Ok(None),
        Some(s) => formats::parse_time_us(s).map(Some).ok_or_else(|| {
            IngestError::Config(format!("prefilter.{name}: `{s}` is not an RFC 3339 time"))
        }),
    }
}

impl EpisodeBuilder {
    /// Resolves templates and compiles patterns; config errors surface here, before any input.
    pub fn new(cfg: EpisodeConfig) -> Result<Self, IngestError> {
        let t = &cfg.templates;
        let custom = &cfg.custom_templates;
        let templates = [
            template::resolve(&t.chat_log, custom)?,
            template::resolve(&t.demonstration, custom)?,
            template::resolve(&t.unit_test, custom)?,
            template::resolve(&t.hint, custom)?,
        ];
        let scrubber = if cfg.prefilter.scrub_pii {
            Some(PiiScrubber::with_patterns(&cfg.prefilter.pii_patterns)?)
        } else {
            None
        };
        let think = if cfg.strip_think {
            Some(
                Regex::new(r"(?s)<think>.*?</think>\s*")
                    .map_err(|e| IngestError::Config(e.to_string()))?,
            )
        } else {
            None
        };
        let time_from = parse_bound(&cfg.prefilter.time_from, "time_from")?;
        let time_to = parse_bound(&cfg.prefilter.time_to, "time_to")?;
        Ok(EpisodeBuilder {
            cfg,
            templates,
            scrubber,
            think,
            time_from,
            time_to,
            pii_counts: BTreeMap::new(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &EpisodeConfig {
        &self.cfg
    }

    /// The template used for a kind.
    pub fn template_for(&self, kind: SourceKind) -> &TeacherTemplate {
        match kind {
            SourceKind::ChatLog => &self.templates[0],
            SourceKind::Demonstration => &self.templates[1],
            SourceKind::UnitTest => &self.templates[2],
            SourceKind::Hint => &self.templates[3],
        }
    }

    /// Scrubs PII from a text (no-op when disabled).
    pub fn scrub(&mut self, text: &mut String) {
        if let Some(s) = &self.scrubber {
            s.scrub_in_place(text, &mut self.pii_counts);
        }
    }

    fn scrub_messages(&mut self, msgs: &mut [Message]) {
        for m in msgs {
            let mut text = m.content.to_string();
            self.scrub(&mut text);
            if *text != *m.content {
                m.content = text.into();
            }
            if let Some(r) = &m.reasoning {
                let mut text = r.to_string();
                self.scrub(&mut text);
                if *text != **r {
                    m.reasoning = Some(text.into());
                }
            }
        }
    }

    /// Parses a record in `format`, or quarantines it.
    pub fn parse(&self, record: &RawRecord, format: SourceFormat) -> Result<Parsed, Rejection> {
        formats::parse(&record.value, format).map_err(|e| {
            let raw = serde_json::to_vec(&record.value).unwrap_or_default();
            RecordMeta::of(record).quarantine(e.reason, e.detail, &raw)
        })
    }

    /// Builds the episodes of one record (unit tests without peer lookup; the stream driver
    /// uses [`Self::build_unit_test_group`] to add peers).
    pub fn build(
        &mut self,
        record: &RawRecord,
        format: SourceFormat,
    ) -> Result<Vec<Episode>, Rejection> {
        let parsed = self.parse(record, format)?;
        let meta = RecordMeta::of(record);
        match parsed {
            Parsed::Chat(chat) => self.chat_episodes(&meta, format, chat, record),
            Parsed::Demonstration(mut d) => {
                self.scrub_messages(&mut d.prompt);
                self.scrub(&mut d.demonstration);
                let demo = self.strip_think(d.demonstration);
                let prov = self.prov(&meta, d.id, d.prompt.len(), d.time_us);
                let ep = self.episode(
                    &meta,
                    SourceKind::Demonstration,
                    format,
                    prov,
                    d.prompt,
                    demo,
                    None,
                    None,
                    true,
                    Vec::new(),
                )?;
                Ok(vec![ep])
            }
            Parsed::UnitTest(u) => {
                let mut out = self.build_unit_test_group(vec![(meta, u)]);
                out.pop().map(|(_, r)| r).unwrap_or(Ok(Vec::new()))
            }
            Parsed::Hint(mut h) => {
                self.scrub_messages(&mut h.prompt);
                self.scrub(&mut h.response);
                self.scrub(&mut h.hint);
                let prov = self.prov(&meta, h.id, h.prompt.len(), h.time_us);
                let on_policy = self.cfg.logged_responses_on_policy;
                let ep = self.episode(
                    &meta,
                    SourceKind::Hint,
                    format,
                    prov,
                    h.prompt,
                    h.hint,
                    None,
                    Some(h.response),
                    on_policy,
                    Vec::new(),
                )?;
                Ok(vec![ep])
            }
        }
    }

    /// Builds the episodes of a group of unit-test records of the same problem: a failed
    /// attempt's peer solution is the first *other* passing attempt of the group.
    pub fn build_unit_test_group(
        &mut self,
        group: Vec<(RecordMeta, UnitTestRecord)>,
    ) -> Vec<(RecordMeta, Result<Vec<Episode>, Rejection>)> {
        let mut group = group;
        for (_, u) in group.iter_mut() {
            self.scrub_messages(&mut u.prompt);
            self.scrub(&mut u.attempt);
            self.scrub(&mut u.feedback);
        }
        let passing: Vec<usize> = group
            .iter()
            .enumerate()
            .filter(|(_, (_, u))| u.passed)
            .map(|(i, _)| i)
            .collect();
        let peers: Vec<Option<String>> = (0..group.len())
            .map(|i| {
                passing
                    .iter()
                    .find(|&&j| j != i)
                    .map(|&j| self.strip_think(group[j].1.attempt.clone()))
            })
            .collect();
        let on_policy = self.cfg.logged_responses_on_policy;
        let mode = self.cfg.sdpo_context;
        group
            .into_iter()
            .zip(peers)
            .map(|((meta, mut u), peer)| {
                let peer = match mode {
                    SdpoContext::FeedbackOnly => None,
                    _ => peer,
                };
                if mode == SdpoContext::SolutionOnly {
                    u.feedback.clear();
                }
                let prov = self.prov(&meta, u.id, u.prompt.len(), u.time_us);
                let mut flags = Vec::new();
                if u.passed {
                    flags.push("attempt_passed".to_string());
                }
                let res = self
                    .episode(
                        &meta,
                        SourceKind::UnitTest,
                        SourceFormat::UnitTest,
                        prov,
                        u.prompt,
                        u.feedback,
                        peer,
                        Some(u.attempt),
                        on_policy,
                        flags,
                    )
                    .map(|e| vec![e]);
                (meta, res)
            })
            .collect()
    }
}

/// Normalises a conversation: drops (or rejects) leading assistant turns, merges (or rejects)
/// consecutive same-role user/assistant turns. Returns the reason and detail on rejection.
pub fn normalize_turns(
    turns: Vec<Turn>,
    roles: RolePolicy,
    leading: LeadingAssistantPolicy,
    flags: &mut Vec<String>,
) -> Result<Vec<Turn>, (QuarantineReason, String)> {
    let mut out: Vec<Turn> = Vec::with_capacity(turns.len());
    let mut seen_non_system = false;
    for t in turns {
        if !seen_non_system && t.role != "system" {
            if t.role == "assistant" || t.role == "tool" {
                if leading == LeadingAssistantPolicy::Quarantine {
                    return Err((
                        QuarantineReason::LeadingAssistant,
                        format!(
                            "message {} ({}) comes before any user message",
                            t.orig_index, t.role
                        ),
                    ));
                }
                if !flags.iter().any(|f| f == "dropped_leading_assistant") {
                    flags.push("dropped_leading_assistant".into());
                }
                continue;
            }
            seen_non_system = true;
        }
        if let Some(last) = out.last_mut() {
            if last.role == t.role && (t.role == "user" || t.role == "assistant") {
                if roles == RolePolicy::Quarantine {
                    return Err((
                        QuarantineReason::NonAlternatingRoles,
                        format!(
                            "messages {} and {} are both `{}`",
                            last.orig_index, t.orig_index, t.role
                        ),
                    ));
                }
                if !flags.iter().any(|f| f == "merged_turns") {
                    flags.push("merged_turns".into());
                }
                if last.content.trim().is_empty() {
                    last.content = t.content;
                } else if !t.content.trim().is_empty() {
                    last.content.push_str("\n\n");
                    last.content.push_str(&t.content);
                }
                last.reasoning = match (last.reasoning.take(), t.reasoning) {
                    (Some(a), Some(b)) => Some(format!("{a}\n\n{b}")),
                    (a, b) => a.or(b),
                };
                last.time_us = t.time_us.or(last.time_us);
                last.stopped_by_length = t.stopped_by_length;
                continue;
            }
        }
        out.push(t);
    }
    Ok(out)
}
