//! Input formats: typed views of raw records, one module per format, plus autodetection.
//!
//! Each parser only reads the fields it needs; unknown extra fields are ignored (WildChat-4.8M
//! adds many), but a declared field with the wrong type or a missing required field is a
//! `schema_mismatch` whose detail names the field path (e.g. `$.conversation[2].content`).
//! Adding a format is one new module plus one line in [`parse`] and [`detect`].

pub mod demonstration;
pub mod hint;
pub mod openai;
pub mod sharegpt;
pub mod unit_test;
pub mod wildchat;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::parquet_rows::days_from_civil;
use super::quarantine::QuarantineReason;
use crate::record::{Message, SourceFormat};

/// One message of a chat log, normalised, with where it was in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text content (content parts joined, tool calls rendered as text).
    pub content: String,
    /// 0-based position in the record's original message list (becomes `turn_index`).
    pub orig_index: usize,
    /// When this message was produced, µs since the epoch, if logged.
    pub time_us: Option<i64>,
    /// The log says generation stopped on the length limit (`finish_reason = "length"`).
    pub stopped_by_length: bool,
    /// An assistant turn's reasoning logged apart from its content (`reasoning_content`,
    /// `reasoning`).
    pub reasoning: Option<String>,
}

/// A chat log (WildChat, ShareGPT, OpenAI messages) as a flat conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatLog {
    /// Conversation id (`conversation_hash`, `id`), not necessarily unique.
    pub conversation_id: Option<String>,
    /// Messages in order.
    pub turns: Vec<Turn>,
    /// Model that produced the assistant turns, if logged.
    pub model: Option<String>,
    /// Record-level time (µs), used when turns carry none.
    pub time_us: Option<i64>,
    /// Dataset flag: the conversation (or any turn) was marked toxic.
    pub toxic: bool,
    /// Dataset flag: PII was redacted in the conversation (or any turn).
    pub redacted: bool,
    /// Dataset-provided language label, if any.
    pub language: Option<String>,
}

/// A demonstration record (SDFT): the response is sampled from the student later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemonstrationRecord {
    /// Record id, if given.
    pub id: Option<String>,
    /// Student prompt (a string prompt becomes one user message).
    pub prompt: Vec<Message>,
    /// The demonstration: the teacher's privileged context.
    pub demonstration: String,
    /// Record time, if given.
    pub time_us: Option<i64>,
}

/// A unit-test outcome (SDPO): an attempt, whether it passed, and the real test output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTestRecord {
    /// Record id, if given.
    pub id: Option<String>,
    /// Student prompt.
    pub prompt: Vec<Message>,
    /// The attempt (the scored response).
    pub attempt: String,
    /// Whether the attempt passed the tests.
    pub passed: bool,
    /// Test/runtime output (tracebacks, failed assertions, timeouts).
    pub feedback: String,
    /// Group of attempts at the same problem (peers), if given.
    pub group: Option<String>,
    /// Record time, if given.
    pub time_us: Option<i64>,
}

/// A hindsight hint: a logged response plus a hint about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintRecord {
    /// Record id, if given.
    pub id: Option<String>,
    /// Student prompt.
    pub prompt: Vec<Message>,
    /// The logged response.
    pub response: String,
    /// The hint (privileged context).
    pub hint: String,
    /// Record time, if given.
    pub time_us: Option<i64>,
}

/// A record parsed according to its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// WildChat, ShareGPT or OpenAI messages.
    Chat(ChatLog),
    /// Demonstration.
    Demonstration(DemonstrationRecord),
    /// Unit-test outcome.
    UnitTest(UnitTestRecord),
    /// Hint.
    Hint(HintRecord),
}

/// Why a record does not fit its format (becomes a quarantine entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// `schema_mismatch` or `unknown_role`.
    pub reason: QuarantineReason,
    /// Field path and what was wrong.
    pub detail: String,
}

impl FormatError {
    /// A schema mismatch at `path`.
    pub fn schema(path: &str, detail: impl std::fmt::Display) -> Self {
        FormatError {
            reason: QuarantineReason::SchemaMismatch,
            detail: format!("{path}: {detail}"),
        }
    }
}

/// Parses a record in the given format.
pub fn parse(value: &Value, format: SourceFormat) -> Result<Parsed, FormatError> {
    if !value.is_object() {
        return Err(FormatError::schema(
            "$",
            format!("expected a JSON object, got {}", type_name(value)),
        ));
    }
    match format {
        SourceFormat::Wildchat => wildchat::parse(value).map(Parsed::Chat),
        SourceFormat::Sharegpt => sharegpt::parse(value).map(Parsed::Chat),
        SourceFormat::Openai => openai::parse(value).map(Parsed::Chat),
        SourceFormat::Demonstration => demonstration::parse(value).map(Parsed::Demonstration),
        SourceFormat::UnitTest => unit_test::parse(value).map(Parsed::UnitTest),
        SourceFormat::Hint => hint::parse(value).map(Parsed::Hint),
    }
}

/// Guesses the format of a record from its top-level keys (`None` if nothing fits).
/// The checks go from the most specific key to the least.
pub fn detect(value: &Value) -> Option<SourceFormat> {
    let o = value.as_object()?;
    if o.contains_key("demonstration") {
        Some(SourceFormat::Demonstration)
    } else if o.contains_key("attempt") && (o.contains_key("feedback") || o.contains_key("passed"))
    {
        Some(SourceFormat::UnitTest)
    } else if o.contains_key("hint") && o.contains_key("response") {
        Some(SourceFormat::Hint)
    } else if o.contains_key("conversation") {
        Some(SourceFormat::Wildchat)
    } else if o.contains_key("conversations") {
        Some(SourceFormat::Sharegpt)
    } else if o.contains_key("messages") {
        Some(SourceFormat::Openai)
    } else {
        None
    }
}

/// Deserializes `value` into `T`, reporting the failing field path.
pub(crate) fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, FormatError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "$".to_string()
        } else {
            format!("$.{path}")
        };
        FormatError::schema(&path, e.inner())
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Maps a role name from any supported dump to `system` / `user` / `assistant` / `tool`.
/// ShareGPT uses `human`, `gpt`, `chatgpt`, `bing`, `bard`; OpenAI uses `developer`, `function`.
pub fn normalize_role(role: &str) -> Option<&'static str> {
    Some(match role.trim().to_ascii_lowercase().as_str() {
        "system" | "developer" => "system",
        "user" | "human" | "prompter" => "user",
        "assistant" | "gpt" | "chatgpt" | "bing" | "bard" | "model" | "bot" | "claude" => {
            "assistant"
        }
        "tool" | "function" | "ipython" | "observation" => "tool",
        _ => return None,
    })
}

/// An error for a role no alias maps to.
pub(crate) fn unknown_role(path: &str, role: &str) -> FormatError {
    FormatError {
        reason: QuarantineReason::UnknownRole,
        detail: format!("{path}: unknown role `{role}`"),
    }
}

/// An id that dumps write as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IdValue {
    Str(String),
    Int(i64),
    Float(f64),
}

impl IdValue {
    pub(crate) fn into_string(self) -> String {
        match self {
            IdValue::Str(s) => s,
            IdValue::Int(i) => i.to_string(),
            IdValue::Float(f) => f.to_string(),
        }
    }
}

/// A time written as an RFC 3339 / ISO 8601 string or a Unix epoch number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TimeValue {
    Int(i64),
    Float(f64),
    Str(String),
}

impl TimeValue {
    /// Microseconds since the epoch; `None` if the string is not a recognisable time.
    /// Epoch numbers are read as seconds, milliseconds or microseconds by magnitude.
    pub(crate) fn to_us(&self) -> Option<i64> {
        match self {
            TimeValue::Int(i) => Some(epoch_number_to_us(*i as f64)),
            TimeValue::Float(f) => Some(epoch_number_to_us(*f)),
            TimeValue::Str(s) => parse_time_us(s),
        }
    }
}

fn epoch_number_to_us(x: f64) -> i64 {
    let a = x.abs();
    let us = if a < 1e11 {
        x * 1e6
    } else if a < 1e14 {
        x * 1e3
    } else {
        x
    };
    us as i64
}

/// Parses `YYYY-MM-DD[(T| )HH:MM[:SS[.f+]]][Z|±HH[:]MM]` (no zone means UTC) to µs since epoch.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut us = days_from_civil(y, mo as u32, d as u32) * 86_400_000_000;
    let mut pos = 10;
    if b.len() > pos && (b[pos] == b'T' || b[pos] == b't' || b[pos] == b' ') {
        let h = digits(pos + 1..pos + 3)?;
        if b.get(pos + 3) != Some(&b':') {
            return None;
        }
        let mi = digits(pos + 4..pos + 6)?;
        pos += 6;
        let mut sec = 0;
        if b.get(pos) == Some(&b':') {
            sec = digits(pos + 1..pos + 3)?;
            pos += 3;
        }
        us += ((h * 60 + mi) * 60 + sec) * 1_000_000;
        if b.get(pos) == Some(&b'.') || b.get(pos) == Some(&b',') {
            pos += 1;
            let start = pos;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            let frac = &s[start..pos];
            let mut micros = 0i64;
            for (k, c) in frac.bytes().take(6).enumerate() {
                micros += (c - b'0') as i64 * 10i64.pow(5 - k as u32);
            }
            us += micros;
        }
        match b.get(pos) {
            None => {}
            Some(b'Z') | Some(b'z') if pos + 1 == b.len() => {}
            Some(&sign) if sign == b'+' || sign == b'-' => {
                let zone = &s[pos + 1..];
                let zone: String = zone.chars().filter(|c| *c != ':').collect();
                if zone.len() != 4 || !zone.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let zh: i64 = zone[..2].parse().ok()?;
                let zm: i64 = zone[2..].parse().ok()?;
                let off = (zh * 60 + zm) * 60_000_000;
                us += if sign == b'+' { -off } else { off };
            }
            _ => return None,
        }
    } else if b.len() != 10 {
        return None;
    }
    Some(us)
}

/// `str | [messages]` as used by demonstrations, unit tests and hints.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum PromptValue {
    Text(String),
    Messages(Vec<openai::OaMessage>),
}

impl PromptValue {
    /// Converts to messages; a string becomes one user message.
    pub(crate) fn into_messages(self) -> Result<Vec<Message>, FormatError> {
        match self {
            PromptValue::Text(t) => Ok(vec![Message {
                role: "user".into(),
                content: t.into(),
                reasoning: None,
            }]),
            PromptValue::Messages(ms) => ms
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    m.into_turn(&format!("$.prompt[{i}]"), i).map(|t| Message {
                        role: t.role,
                        content: t.content.into(),
                        reasoning: t.reasoning.map(Into::into),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_us("1970-01-02"), Some(86_400_000_000));
        assert_eq!(
            parse_time_us("2023-04-09T00:02:53.5+01:00"),
            Some(1_680_994_973_500_000)
        );
        assert_eq!(
            parse_time_us("2023-04-09 00:02:53"),
            Some(1_680_998_573_000_000)
        );
        assert_eq!(parse_time_us("yesterday"), None);
        assert_eq!(
            TimeValue::Int(1_680_998_573).to_us(),
            Some(1_680_998_573_000_000)
        );
    }
}
