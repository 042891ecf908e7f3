//! Regex PII scrubbing: emails, phone numbers, IP addresses, API keys and tokens become
//! `[EMAIL]`, `[PHONE]`, `[IP]`, `[API_KEY]`. Applied to every text of a record before episodes
//! are built, and to quarantine snippets before they are written, so no raw PII reaches disk.
//!
//! One combined regex, one pass per text; texts without a match are not copied. IPv6 is only
//! matched in its full 8-group form; phone numbers need separators (or a leading `+`) so plain
//! long numbers in math and code are left alone.

use std::collections::BTreeMap;

use regex::Regex;

const PATTERN: &str = concat!(
    r"(?P<key>(?-u:\b)(?:sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}|xox[abprs]-[A-Za-z0-9\-]{10,}|hf_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_\-]{20,}",
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})|(?i:bearer)[ \t]+[A-Za-z0-9._~+/\-]{20,}=*)",
    r"|(?P<email>[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})",
    r"|(?P<ip>(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
    r"|(?-u:\b)(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?-u:\b))",
    r"|(?P<phone>\+[0-9]{1,3}[ .\-]?(?:\(?[0-9]{1,4}\)?[ .\-]?){2,5}[0-9]{2,4}(?-u:\b)",
    r"|\(?(?-u:\b)[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}(?-u:\b))",
);

/// Compiled scrubber.
pub struct PiiScrubber {
    re: Regex,
}

impl PiiScrubber {
    /// Compiles the patterns (a constant; a failure here is a bug caught by tests).
    pub fn new() -> Result<Self, crate::ingest::IngestError> {
        let re = Regex::new(PATTERN)
            .map_err(|e| crate::ingest::IngestError::Config(format!("PII regex: {e}")))?;
        Ok(PiiScrubber { re })
    }

    /// Returns the scrubbed text, or `None` when nothing matched (no copy made); counts
    /// replacements per kind into `counts`.
    pub fn scrub(&self, text: &str, counts: &mut BTreeMap<String, u64>) -> Option<String> {
        if !self.re.is_match(text) {
            return None;
        }
        let out = self.re.replace_all(text, |caps: &regex::Captures<'_>| {
            let (kind, token) = if caps.name("key").is_some() {
                ("api_key", "[API_KEY]")
            } else if caps.name("email").is_some() {
                ("email", "[EMAIL]")
            } else if caps.name("ip").is_some() {
                ("ip", "[IP]")
            } else {
                ("phone", "[PHONE]")
            };
            *counts.entry(kind.to_string()).or_insert(0) += 1;
            token.to_string()
        });
        Some(out.into_owned())
    }

    /// Scrubs a string in place.
    pub fn scrub_in_place(&self, text: &mut String, counts: &mut BTreeMap<String, u64>) {
        if let Some(s) = self.scrub(text, counts) {
            *text = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_each_kind_and_leaves_numbers() {
        let s = PiiScrubber::new().unwrap();
        let mut c = BTreeMap::new();
        let out = s
            .scrub(
                "mail jane.doe@example.com, call +1 (415) 555-0134 or 415-555-0199, host 192.168.1.20, key sk-proj-abcdefghijklmnopqrstuvwx1234",
                &mut c,
            )
            .unwrap();
        assert_eq!(
            out,
            "mail [EMAIL], call [PHONE] or [PHONE], host [IP], key [API_KEY]"
        );
        assert_eq!(c["phone"], 2);
        assert!(s
            .scrub(
                "What is 12345 * 6789? It is 83810205. Date 2023-04-09, v1.2.3",
                &mut c
            )
            .is_none());
        assert!(s.scrub("<|im_start|>system", &mut c).is_none());
    }
}
