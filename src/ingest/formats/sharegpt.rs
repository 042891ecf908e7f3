//! ShareGPT: `{"id": str|number, "conversations": [{"from": str, "value": str}]}`.
//!
//! `from` aliases (`human`, `gpt`, `chatgpt`, `bing`, `bard`, `system`, ...) map through
//! [`super::normalize_role`]; an unknown one is `unknown_role`. `id` is optional.

use serde::Deserialize;
use serde_json::Value;

use super::{normalize_role, typed, unknown_role, ChatLog, FormatError, IdValue, Turn};

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<IdValue>,
    conversations: Vec<RawTurn>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct RawTurn {
    from: String,
    value: String,
}

/// Parses one ShareGPT record.
pub fn parse(value: &Value) -> Result<ChatLog, FormatError> {
    let raw: Raw = typed(value)?;
    let mut turns = Vec::with_capacity(raw.conversations.len());
    for (i, t) in raw.conversations.into_iter().enumerate() {
        let role = normalize_role(&t.from)
            .ok_or_else(|| unknown_role(&format!("$.conversations[{i}].from"), &t.from))?;
        turns.push(Turn {
            role: role.to_string(),
            content: t.value,
            orig_index: i,
            time_us: None,
            stopped_by_length: false,
            reasoning: None,
        });
    }
    Ok(ChatLog {
        conversation_id: raw.id.map(IdValue::into_string),
        turns,
        model: raw.model,
        ..ChatLog::default()
    })
}
