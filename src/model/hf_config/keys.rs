//! A `config.json` object whose reads are recorded, so a key nothing read can be named in a
//! refusal.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{err, ConfigError};
use crate::model::architecture::{check_count, positive};

/// A JSON object whose reads are recorded, so unread keys can be reported.
pub(super) struct Keys<'a> {
    pub(super) map: &'a Map<String, Value>,
    read: BTreeSet<&'a str>,
}

impl<'a> Keys<'a> {
    pub(super) fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            read: BTreeSet::new(),
        }
    }

    /// The value of `key`, treating JSON `null` as absent.
    pub(super) fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.read.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    pub(super) fn usize(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| err(format!("'{key}' must be a non-negative integer, got {v}"))),
        }
    }

    /// An optional count or size: a positive integer within `max` (checked before anything is
    /// allocated from it).
    pub(super) fn count(&mut self, key: &str, max: usize) -> Result<Option<usize>, ConfigError> {
        let v = self.usize(key)?;
        if let Some(v) = v {
            check_count(&format!("'{key}'"), v, max).map_err(err)?;
        }
        Ok(v)
    }

    pub(super) fn need_count(&mut self, key: &str, max: usize) -> Result<usize, ConfigError> {
        self.count(key, max)?
            .ok_or_else(|| err(format!("missing required key '{key}'")))
    }

    pub(super) fn f64(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(err(format!("'{key}' must be a finite number, got {v}"))),
            },
        }
    }

    /// An optional float that must be finite and > 0 (a factor, a scale, a cap).
    pub(super) fn positive(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.f64(key)?
            .map(|v| positive(&format!("'{key}'"), v).map_err(err))
            .transpose()
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| err(format!("'{key}' must be true or false, got {v}"))),
        }
    }

    pub(super) fn str(&mut self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| err(format!("'{key}' must be a string, got {v}"))),
        }
    }

    /// Keys present (and not null-or-inert) that nothing read.
    pub(super) fn unread(&self, inert: &[&str]) -> Vec<&'a str> {
        self.map
            .iter()
            .filter(|(k, v)| {
                !self.read.contains(k.as_str()) && !inert.contains(&k.as_str()) && !is_off(v)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// A value that means "feature off" for any key: null, false, 0, empty.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}
