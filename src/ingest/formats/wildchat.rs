//! WildChat (1M and 4.8M shapes; Parquet or JSONL).
//!
//! Required: `conversation_hash` (string) and `conversation` (list of turns with string
//! `content` and `role`). Optional and type-checked when present: `model`, `timestamp`,
//! `toxic`, `redacted`, `language`, and per turn `timestamp` / `created` (4.8M), `toxic`,
//! `redacted`, `finish_reason`. All other fields (moderation, geography, headers, 4.8M's
//! `openai_id`, `usage`, ...) are ignored.

use serde::Deserialize;
use serde_json::Value;

use super::{normalize_role, typed, unknown_role, ChatLog, FormatError, TimeValue, Turn};

#[derive(Deserialize)]
struct Raw {
    conversation_hash: String,
    conversation: Vec<RawTurn>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    timestamp: Option<TimeValue>,
    #[serde(default)]
    toxic: Option<bool>,
    #[serde(default)]
    redacted: Option<bool>,
    #[serde(default)]
    language: Option<String>,
}

#[derive(Deserialize)]
struct RawTurn {
    content: String,
    role: String,
    #[serde(default)]
    timestamp: Option<TimeValue>,
    #[serde(default)]
    created: Option<TimeValue>,
    #[serde(default)]
    toxic: Option<bool>,
    #[serde(default)]
    redacted: Option<bool>,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// Parses one WildChat record.
pub fn parse(value: &Value) -> Result<ChatLog, FormatError> {
    let raw: Raw = typed(value)?;
    let mut toxic = raw.toxic.unwrap_or(false);
    let mut redacted = raw.redacted.unwrap_or(false);
    let mut turns = Vec::with_capacity(raw.conversation.len());
    for (i, t) in raw.conversation.into_iter().enumerate() {
        let role = normalize_role(&t.role)
            .ok_or_else(|| unknown_role(&format!("$.conversation[{i}].role"), &t.role))?;
        toxic |= t.toxic.unwrap_or(false);
        redacted |= t.redacted.unwrap_or(false);
        let time_us = t
            .timestamp
            .as_ref()
            .and_then(TimeValue::to_us)
            .or_else(|| t.created.as_ref().and_then(TimeValue::to_us));
        turns.push(Turn {
            role: role.to_string(),
            content: t.content,
            orig_index: i,
            time_us,
            stopped_by_length: t.finish_reason.as_deref() == Some("length"),
            reasoning: None,
        });
    }
    Ok(ChatLog {
        conversation_id: Some(raw.conversation_hash),
        turns,
        model: raw.model,
        time_us: raw.timestamp.as_ref().and_then(TimeValue::to_us),
        toxic,
        redacted,
        language: raw.language,
    })
}
