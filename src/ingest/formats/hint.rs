//! Hindsight hints (OPD): `{"id"?, "prompt", "response": str, "hint": str, ...}`.

use serde::Deserialize;
use serde_json::Value;

use super::{typed, FormatError, HintRecord, IdValue, PromptValue, TimeValue};

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<IdValue>,
    prompt: PromptValue,
    response: String,
    hint: String,
    #[serde(default)]
    timestamp: Option<TimeValue>,
}

/// Parses one hint record.
pub fn parse(value: &Value) -> Result<HintRecord, FormatError> {
    let raw: Raw = typed(value)?;
    Ok(HintRecord {
        id: raw.id.map(IdValue::into_string),
        prompt: raw.prompt.into_messages()?,
        response: raw.response,
        hint: raw.hint,
        time_us: raw.timestamp.as_ref().and_then(TimeValue::to_us),
    })
}
