//! Dagster Pipes: launched by Dagster (`PipesSubprocessClient`, a `PipesK8sClient`, ...), a run
//! reports the dataset asset's materialization with its metadata and the audit as an asset
//! check, through the channel Dagster set up in `$DAGSTER_PIPES_CONTEXT` and
//! `$DAGSTER_PIPES_MESSAGES` (protocol 0.1: base64 of zlib-compressed JSON parameters, one JSON
//! message per line). Outside Dagster nothing here runs.

use std::io::{Read, Write};
use std::path::PathBuf;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::pipeline::publish::AuditSummary;

/// The variable whose presence means "launched by Dagster Pipes".
pub const CONTEXT_ENV: &str = "DAGSTER_PIPES_CONTEXT";
/// The variable naming where messages go.
pub const MESSAGES_ENV: &str = "DAGSTER_PIPES_MESSAGES";
/// The protocol version stamped on every message.
const PIPES_VERSION: &str = "0.1";
/// The asset check hindsight reports unless the context's extras name another
/// (`hindsight_asset_check`), or switch it off with `null`.
pub const DEFAULT_CHECK: &str = "audit";

/// Errors setting up the Pipes channel (reported as usage errors: Dagster's side is broken).
#[derive(Debug, thiserror::Error)]
pub enum PipesError {
    #[error("${var}: {message}")]
    Params { var: &'static str, message: String },
    #[error("reading the Dagster Pipes context {path}: {message}")]
    Context { path: PathBuf, message: String },
}

/// Where messages are written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    File(PathBuf),
    Stderr,
    Stdout,
}

/// An open Pipes session: the context Dagster sent and the channel back.
#[derive(Debug)]
pub struct PipesSession {
    channel: Channel,
    /// The asset this run materializes (the context's first asset key).
    pub asset_key: Option<String>,
    /// The asset check the audit reports as (`None`: not reported).
    pub check_name: Option<String>,
    /// Dagster's run id, for the log.
    pub run_id: Option<String>,
}

/// Decodes a Pipes parameter: base64 (standard alphabet) of zlib-compressed JSON.
fn decode_params(var: &'static str, raw: &str) -> Result<Value, PipesError> {
    let bad = |message: String| PipesError::Params { var, message };
    let zipped = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let mut text = String::new();
    flate2::read::ZlibDecoder::new(&zipped[..])
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("not zlib-compressed UTF-8: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))
}

impl PipesSession {
    /// The session Dagster set up in the environment (`env` looks a variable up); `None`
    /// when not launched by Dagster Pipes.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, PipesError> {
        let Some(context_raw) = env(CONTEXT_ENV) else {
            return Ok(None);
        };
        let params = decode_params(CONTEXT_ENV, &context_raw)?;
        let context = if let Some(path) = params.get("path").and_then(Value::as_str) {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|e| PipesError::Context {
                path: path.clone(),
                message: e.to_string(),
            })?;
            serde_json::from_str(&text).map_err(|e| PipesError::Context {
                path,
                message: e.to_string(),
            })?
        } else if let Some(data) = params.get("data") {
            data.clone()
        } else {
            return Err(PipesError::Params {
                var: CONTEXT_ENV,
                message: format!("neither \"path\" nor \"data\" in {params}"),
            });
        };
        let messages_raw = env(MESSAGES_ENV).ok_or(PipesError::Params {
            var: MESSAGES_ENV,
            message: "not set (Dagster sets it beside $DAGSTER_PIPES_CONTEXT)".into(),
        })?;
        let mp = decode_params(MESSAGES_ENV, &messages_raw)?;
        let channel = match (
            mp.get("path").and_then(Value::as_str),
            mp.get("stdio").and_then(Value::as_str),
        ) {
            (Some(p), _) => Channel::File(PathBuf::from(p)),
            (None, Some("stdout")) => Channel::Stdout,
            (None, Some("stderr")) => Channel::Stderr,
            _ => {
                return Err(PipesError::Params {
                    var: MESSAGES_ENV,
                    message: format!("no \"path\" or \"stdio\" in {mp}"),
                })
            }
        };
        let asset_key = context
            .get("asset_keys")
            .and_then(Value::as_array)
            .and_then(|keys| keys.first())
            .and_then(Value::as_str)
            .map(String::from);
        let check_name = match context
            .get("extras")
            .and_then(|e| e.get("hindsight_asset_check"))
        {
            None => Some(DEFAULT_CHECK.to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        };
        Ok(Some(PipesSession {
            channel,
            asset_key,
            check_name,
            run_id: context
                .get("run_id")
                .and_then(Value::as_str)
                .map(String::from),
        }))
    }

    /// Writes one message as one line in one write (Dagster reads the file as it grows, and a
    /// half-written line would end its reader).
    fn send(&self, method: &str, params: Value) {
        let mut line = json!({
            "__dagster_pipes_version": PIPES_VERSION,
            "method": method,
            "params": params,
        })
        .to_string();
        line.push('\n');
        let result = match &self.channel {
            Channel::File(p) => std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .and_then(|mut f| f.write_all(line.as_bytes())),
            Channel::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Channel::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
        };
        if let Err(e) = result {
            tracing::warn!("writing a Dagster Pipes message ({method}): {e}");
        }
    }

    /// Tells Dagster the process is up.
    pub fn opened(&self) {
        self.send("opened", json!({"extras": {}}));
        self.log("hindsight connected to Dagster Pipes");
    }

    /// A line in Dagster's run log.
    pub fn log(&self, message: &str) {
        self.send("log", json!({"message": message, "level": "INFO"}));
    }

    /// Reports the dataset asset's materialization.
    pub fn materialized(&self, metadata: Map<String, Value>) {
        let Some(key) = &self.asset_key else {
            tracing::warn!("Dagster Pipes: the context names no asset; nothing materialized");
            return;
        };
        self.send(
            "report_asset_materialization",
            json!({"asset_key": key, "metadata": metadata, "data_version": null}),
        );
    }

    /// Reports the audit as the asset check: an ERROR when the contract failed or a drift was
    /// enforced, a WARN for an accepted drift.
    pub fn audit_check(&self, audit: &AuditSummary) {
        let (Some(key), Some(check)) = (&self.asset_key, &self.check_name) else {
            return;
        };
        let severity = if audit.drift_accepted && audit.contract_ok() {
            "WARN"
        } else {
            "ERROR"
        };
        let mut metadata = Map::new();
        metadata.insert("violations".into(), int(audit.violations_total));
        metadata.insert("shards_checked".into(), int(audit.shards_checked));
        metadata.insert("rows_checked".into(), int(audit.rows_checked));
        metadata.insert(
            "violations_first".into(),
            typed(json!(audit.violations), "json"),
        );
        metadata.insert(
            "drift".into(),
            typed(
                serde_json::to_value(&audit.drift).unwrap_or_default(),
                "json",
            ),
        );
        metadata.insert(
            "drift_accepted".into(),
            typed(json!(audit.drift_accepted), "bool"),
        );
        self.send(
            "report_asset_check",
            json!({
                "asset_key": key,
                "check_name": check,
                "passed": audit.passed && !audit.drift_accepted,
                "severity": severity,
                "metadata": metadata,
            }),
        );
    }

    /// Closes the session; `error` is the run's failure, if any.
    pub fn closed(&self, error: Option<&str>) {
        let params = match error {
            None => json!({}),
            Some(message) => json!({"exception": {
                "name": "HindsightError",
                "message": message,
                "stack": [],
                "cause": null,
                "context": null,
            }}),
        };
        self.send("closed", params);
    }
}

/// A metadata value as Pipes carries it.
fn typed(raw: Value, kind: &str) -> Value {
    json!({"raw_value": raw, "type": kind})
}

/// An integer metadata value.
pub fn int(v: u64) -> Value {
    typed(json!(v), "int")
}

/// A float metadata value (always written with a fraction, as Pipes' float type demands).
pub fn float(v: f64) -> Value {
    typed(json!(if v.is_finite() { v } else { 0.0 }), "float")
}

/// A text metadata value.
pub fn text(v: &str) -> Value {
    typed(json!(v), "text")
}

/// A JSON metadata value.
pub fn json_value(v: Value) -> Value {
    typed(v, "json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &Value) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(v.to_string().as_bytes()).expect("zlib");
        base64::engine::general_purpose::STANDARD.encode(z.finish().expect("zlib"))
    }

    #[test]
    fn the_context_and_channel_come_from_dagsters_encoded_parameters() {
        let dir = tempfile::tempdir().expect("tmp");
        let messages = dir.path().join("messages");
        let ctx = encode(
            &json!({"data": {"asset_keys": ["nightly/ds"], "run_id": "r1",
            "extras": {"hindsight_asset_check": "contract"}}}),
        );
        let msg = encode(&json!({"path": messages}));
        let env = |k: &str| match k {
            CONTEXT_ENV => Some(ctx.clone()),
            MESSAGES_ENV => Some(msg.clone()),
            _ => None,
        };
        let s = PipesSession::from_env(env).expect("ok").expect("session");
        assert_eq!(s.asset_key.as_deref(), Some("nightly/ds"));
        assert_eq!(s.check_name.as_deref(), Some("contract"));
        s.opened();
        s.closed(None);
        let lines: Vec<Value> = std::fs::read_to_string(&messages)
            .expect("messages")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON per line"))
            .collect();
        let methods: Vec<&str> = lines.iter().filter_map(|l| l["method"].as_str()).collect();
        assert_eq!(methods, ["opened", "log", "closed"]);
        assert!(PipesSession::from_env(|_| None).expect("ok").is_none());
        let garbage = |k: &str| (k == CONTEXT_ENV).then(|| "%%%".to_string());
        assert!(PipesSession::from_env(garbage).is_err());
    }
}
