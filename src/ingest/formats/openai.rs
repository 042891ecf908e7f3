//! OpenAI chat messages: `{"messages": [{"role", "content": str | [parts] | null, "tool_calls"?}], "id"?}`.
//!
//! Content parts: the `text` of every part that has one, joined with `\n`; other parts (images,
//! audio) are dropped. An assistant message's `tool_calls` are rendered into its text as
//! `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` lines (the common convention for
//! chat templates without a tool-call slot), so nothing the model produced is lost. Tool
//! results keep the role `tool`.

use serde::Deserialize;
use serde_json::Value;

use super::{normalize_role, typed, unknown_role, ChatLog, FormatError, IdValue, TimeValue, Turn};

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

fn render_call(call: &Value) -> String {
    let f = call.get("function").unwrap_or(call);
    let name = f.get("name").cloned().unwrap_or(Value::Null);
    let args = match f.get("arguments") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let body = serde_json::json!({"name": name, "arguments": args});
    format!("<tool_call>\n{body}\n</tool_call>")
}

impl OaMessage {
    /// Converts to a normalised turn (`path` names the message in errors).
    pub(crate) fn into_turn(self, path: &str, index: usize) -> Result<Turn, FormatError> {
        let role = normalize_role(&self.role)
            .ok_or_else(|| unknown_role(&format!("{path}.role"), &self.role))?;
        let mut content = match self.content {
            None => String::new(),
            Some(OaContent::Text(s)) => s,
            Some(OaContent::Parts(parts)) => parts
                .into_iter()
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let calls: Vec<String> = self
            .tool_calls
            .iter()
            .flatten()
            .chain(self.function_call.iter())
            .map(render_call)
            .collect();
        for c in calls {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&c);
        }
        Ok(Turn {
            role: role.to_string(),
            content,
            orig_index: index,
            time_us: None,
            stopped_by_length: self.finish_reason.as_deref() == Some("length"),
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
