//! Demonstrations (SDFT): `{"id"?, "prompt": str | messages, "demonstration": str, ...}`.

use serde::Deserialize;
use serde_json::Value;

use super::{typed, DemonstrationRecord, FormatError, IdValue, PromptValue, TimeValue};

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<IdValue>,
    prompt: PromptValue,
    demonstration: String,
    #[serde(default)]
    timestamp: Option<TimeValue>,
}

/// Parses one demonstration record.
pub fn parse(value: &Value) -> Result<DemonstrationRecord, FormatError> {
    let raw: Raw = typed(value)?;
    Ok(DemonstrationRecord {
        id: raw.id.map(IdValue::into_string),
        prompt: raw.prompt.into_messages()?,
        demonstration: raw.demonstration,
        time_us: raw.timestamp.as_ref().and_then(TimeValue::to_us),
    })
}
