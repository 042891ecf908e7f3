//! OpenAI chat messages: `{"messages": [{"role", "content": str | [parts] | null, "tool_calls"?}], "id"?}`.
//!
//! Content parts: the `text` of every part that has one, joined with `\n`; other parts (images,
//! audio) are dropped. An assistant message's separate reasoning (`reasoning_content`, or
//! `reasoning` as a string) is kept for the chat template to render. A record whose assistant
//! calls tools (`tool_calls`, `function_call`) is quarantined `tool_calls`: every chat template
//! renders tool calls its own way, and hindsight does not reproduce those renderings yet, so it
//! sets the record aside rather than score the model on text it never saw. Tool results keep
//! the role `tool` (the chat template renders them or refuses them).

use serde::Deserialize;
use serde_json::Value;

use super::{normalize_role, typed, unknown_role, ChatLog, FormatError, IdValue, TimeValue, Turn};
use crate::ingest::QuarantineReason;

#[derive(Deserialize)]
struct Raw {
    messages: Vec<OaMessage>,
    #[serde(default)]
    id: Option<IdValue>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    created: Option<TimeValue>,
    #[serde(default)]
    timestamp: Option<TimeValue>,
}

/// One OpenAI-style message.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct OaMessage {
    role: String,
    #[serde(default)]
    content: Option<OaContent>,
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    finish_reason: Option<String>,
    /// Separate reasoning (vLLM / DeepSeek `reasoning_content`).
    #[serde(default)]
    reasoning_content: Option<String>,
    /// Separate reasoning (OpenAI-compatible `reasoning` as a string; objects are ignored).
    #[serde(default)]
    reasoning: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OaContent {
    Text(String),
    Parts(Vec<OaPart>),
}

#[derive(Debug, Clone, Deserialize)]
struct OaPart {
    #[serde(default)]
    text: Option<String>,
}

impl OaMessage {
    /// Converts to a normalised turn (`path` names the message in errors).
    pub(crate) fn into_turn(self, path: &str, index: usize) -> Result<Turn, FormatError> {
        let role = normalize_role(&self.role)
            .ok_or_else(|| unknown_role(&format!("{path}.role"), &self.role))?;
        let calls = self.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            || self.function_call.as_ref().is_some_and(|c| !c.is_null());
        if calls {
            return Err(FormatError {
                reason: QuarantineReason::ToolCalls,
                detail: format!(
                    "{path}: the assistant calls tools; tool-call rendering through the model's \
                     chat template is not supported, so the record is not scored"
                ),
            });
        }
        let content = match self.content {
            None => String::new(),
            Some(OaContent::Text(s)) => s,
            Some(OaContent::Parts(parts)) => parts
                .into_iter()
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let logged_apart = match self.reasoning {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let reasoning = self
            .reasoning_content
            .or(logged_apart)
            .filter(|r| !r.is_empty());
        Ok(Turn {
            role: role.to_string(),
            content,
            orig_index: index,
            time_us: None,
            stopped_by_length: self.finish_reason.as_deref() == Some("length"),
            reasoning,
        })
    }
}

/// Parses one OpenAI-messages record.
pub fn parse(value: &Value) -> Result<ChatLog, FormatError> {
    let raw: Raw = typed(value)?;
    let turns = raw
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_turn(&format!("$.messages[{i}]"), i))
        .collect::<Result<Vec<_>, _>>()?;
    let time_us = raw
        .created
        .or(raw.timestamp)
        .as_ref()
        .and_then(TimeValue::to_us);
    Ok(ChatLog {
        conversation_id: raw.id.map(IdValue::into_string),
        turns,
        model: raw.model,
        time_us,
        ..ChatLog::default()
    })
}
