//! Unit-test outcomes (SDPO): `{"id"?, "prompt", "attempt": str, "passed": bool, "feedback": str, "group"?}`.

use serde::Deserialize;
use serde_json::Value;

use super::{typed, FormatError, IdValue, PromptValue, TimeValue, UnitTestRecord};

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    id: Option<IdValue>,
    prompt: PromptValue,
    attempt: String,
    passed: bool,
    feedback: String,
    #[serde(default)]
    group: Option<IdValue>,
    #[serde(default)]
    timestamp: Option<TimeValue>,
}

/// Parses one unit-test record.
pub fn parse(value: &Value) -> Result<UnitTestRecord, FormatError> {
    let raw: Raw = typed(value)?;
    Ok(UnitTestRecord {
        id: raw.id.map(IdValue::into_string),
        prompt: raw.prompt.into_messages()?,
        attempt: raw.attempt,
        passed: raw.passed,
        feedback: raw.feedback,
        group: raw.group.map(IdValue::into_string),
        time_us: raw.timestamp.as_ref().and_then(TimeValue::to_us),
    })
}
