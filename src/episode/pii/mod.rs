//! PII scrubbing: personal data and credentials become placeholders (`[EMAIL]`, `[CARD]`,
//! `[API_KEY]`, ...) before anything is built or written, quarantine snippets included, so no raw
//! PII reaches disk. Every replacement is counted under its kind.
//!
//! Each kind is a *detector*: a regex that finds candidates plus, where a regex alone would
//! flag ordinary numbers and code, a check that a privacy reviewer would recognise: the Luhn
//! checksum and issuer prefixes for cards, ISO 13616 (country length, BBAN format, mod 97, via
//! the maintained `iban_validate` crate) for IBANs, the SSA's never-issued ranges for SSNs, a
//! real IPv6 parse with at least three groups for IPv6 (so `std::io` and `a::b` stay code),
//! E.164 digit counts for phone numbers, and a base64 `user:password` payload for HTTP Basic.
//! Credentials that only a keyword identifies (AWS secret keys, Azure account keys, quoted
//! passwords) keep the keyword and lose the value.
//!
//! Detectors run in a fixed order, user-defined ones first, each on the output of the previous
//! one; a text that no detector's regex can match (the common case) is neither copied nor
//! scanned more than once.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::ingest::IngestError;

/// A pattern the pipeline adds to the built-in detectors (`prefilter.pii_patterns`), for
/// identifiers only the user knows (employee ids, internal hostnames, customer numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiPattern {
    /// The kind counted in the run statistics and used for the placeholder: `employee_id`
    /// becomes `[EMPLOYEE_ID]`. Lowercase letters, digits and `_`.
    pub name: String,
    /// A Rust `regex` pattern; every match is replaced.
    pub pattern: String,
}

/// What, beyond its regex, a candidate must satisfy to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Luhn,
    Iban,
    Ipv6,
    /// Between this many digits (inclusive), E.164 allows at most 15.
    PhoneDigits(usize, usize),
    BasicAuth,
    /// A token, not an English word: has a digit, or is too long for a word.
    Opaque,
}

struct Detector {
    kind: String,
    token: String,
    re: Regex,
    check: Check,
}

/// Built-in detectors, in the order they run: the most specific (multi-line keys, prefixed
/// tokens) first, so a key is never half-eaten as a phone number.
const BUILTIN: &[(&str, &str, Check)] = &[
    (
        "private_key",
        // To the END line, or to the end of the text when it is cut off (a truncated key is
        // still a key). Legacy encrypted keys carry `Proc-Type:` headers, hence "no `--`".
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[^-]|-[^-])*(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?",
        Check::None,
    ),
    (
        "auth_token",
        r"(?i:bearer)[ \t]+(?P<v>[A-Za-z0-9._~+/\-]{16,}=*)",
        Check::Opaque,
    ),
    (
        "auth_token",
        r"(?i:basic)[ \t]+(?P<v>[A-Za-z0-9+/]{4,}={0,2})",
        Check::BasicAuth,
    ),
    (
        "api_key",
        concat!(
            r"(?-u:\b)(?:",
            // OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-...).
            r"sk-[A-Za-z0-9_\-]{20,}",
            // Stripe secret, restricted, publishable keys and webhook secrets.
            r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}",
            // GitHub, GitLab, npm, Hugging Face.
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}|glpat-[A-Za-z0-9_\-]{20,}",
            r"|npm_[A-Za-z0-9]{36}|hf_[A-Za-z0-9]{30,}",
            // AWS access key ids.
            r"|(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
            // Google API keys, OAuth access tokens, OAuth client secrets.
            r"|AIza[0-9A-Za-z_\-]{35}|ya29\.[0-9A-Za-z_\-]{20,}|GOCSPX-[0-9A-Za-z_\-]{24,}",
            // Slack tokens and app tokens.
            r"|xox[abposr]-[A-Za-z0-9\-]{10,}|xapp-[0-9]-[A-Za-z0-9\-]{10,}",
            // JSON Web Tokens.
            r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
            r")",
            // Slack incoming webhooks (the URL is the secret).
            r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,}",
        ),
        Check::None,
    ),
    (
        "api_key",
        // Keys that are only recognisable by their name: AWS secret access keys (40 base64
        // chars) and Azure storage account keys (88). The name stays, the value goes.
        concat!(
            r#"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key|accountkey)"#,
            r#"["']?[ \t]*[:=][ \t]*["']?(?P<v>[A-Za-z0-9/+]{40}(?:[A-Za-z0-9/+]{46}==)?)"#,
        ),
        Check::None,
    ),
    (
        "password",
        r#"(?i:password|passwd|pwd)["']?[ \t]*[:=][ \t]*["'](?P<v>[^"'\s]{4,})["']"#,
        Check::None,
    ),
    (
        "email",
        r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}",
        Check::None,
    ),
    (
        "iban",
        r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11,30}(?-u:\b)",
        Check::Iban,
    ),
    (
        "card",
        // Visa, Mastercard (51-55, 2221-2720), Amex, Discover, JCB, Diners; 13-19 digits in
        // groups separated by single spaces or dashes; Luhn-checked.
        r"(?-u:\b)(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6[05]|35)(?:[ \-]?[0-9]){10,18}(?-u:\b)",
        Check::Luhn,
    ),
    (
        "ssn",
        // Area 001-899 except 666, group 01-99, serial 0001-9999: the ranges the SSA issues.
        r"(?-u:\b)(?:00[1-9]|0[1-9][0-9]|[1-578][0-9]{2}|6[0-57-9][0-9]|66[0-57-9])-(?:0[1-9]|[1-9][0-9])-(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})(?-u:\b)",
        Check::None,
    ),
    (
        "ip",
        r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})?",
        Check::Ipv6,
    ),
    (
        "ip",
        r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
        Check::None,
    ),
    (
        "phone",
        // International: + country code, then groups.
        r"\+[0-9]{1,3}[ .\-]?(?:\(?[0-9]{1,4}\)?[ .\-]?){1,5}[0-9]{2,4}(?-u:\b)",
        Check::PhoneDigits(8, 15),
    ),
    (
        "phone",
        // North American: (415) 555-0134, 415-555-0134, 415.555.0134.
        r"\(?(?-u:\b)[0-9]{3}\)?[ .\-][0-9]{3}[ .\-][0-9]{4}(?-u:\b)",
        Check::None,
    ),
    (
        "phone",
        // National with a trunk prefix or 00: 020 7946 0958, 01 23 45 67 89, 0049 30 1234567.
        r"(?-u:\b)0[0-9]{1,4}[ \-/][0-9]{2,8}(?:[ \-][0-9]{2,4}){0,3}(?-u:\b)",
        Check::PhoneDigits(10, 15),
    ),
];

/// Compiled scrubber.
pub struct PiiScrubber {
    any: RegexSet,
    detectors: Vec<Detector>,
}

impl PiiScrubber {
    /// Compiles the built-in detectors; user patterns come from [`PiiScrubber::with_patterns`].
    pub fn new() -> Result<Self, IngestError> {
        Self::with_patterns(&[])
    }

    /// Compiles the user's patterns (run first) and the built-in detectors; a bad user pattern
    /// or name is a config error naming it.
    pub fn with_patterns(user: &[PiiPattern]) -> Result<Self, IngestError> {
        let mut detectors = Vec::with_capacity(user.len() + BUILTIN.len());
        for p in user {
            let valid_name = !p.name.is_empty()
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(IngestError::Config(format!(
                    "prefilter.pii_patterns: name {:?} must be lowercase letters, digits and `_`",
                    p.name
                )));
            }
            let re = Regex::new(&p.pattern).map_err(|e| {
                IngestError::Config(format!(
                    "prefilter.pii_patterns `{}`: invalid regex: {e}",
                    p.name
                ))
            })?;
            if re.is_match("") {
                return Err(IngestError::Config(format!(
                    "prefilter.pii_patterns `{}`: the pattern matches the empty string",
                    p.name
                )));
            }
            detectors.push(Detector {
                token: format!("[{}]", p.name.to_ascii_uppercase()),
                kind: p.name.clone(),
                re,
                check: Check::None,
            });
        }
        for (kind, pattern, check) in BUILTIN {
            let re = Regex::new(pattern)
                .map_err(|e| IngestError::Config(format!("PII regex {kind}: {e}")))?;
            detectors.push(Detector {
                kind: (*kind).to_string(),
                token: format!("[{}]", kind.to_ascii_uppercase()),
                re,
                check: *check,
            });
        }
        let any = RegexSet::new(detectors.iter().map(|d| d.re.as_str()))
            .map_err(|e| IngestError::Config(format!("PII regex set: {e}")))?;
        Ok(PiiScrubber { any, detectors })
    }

    /// Returns the scrubbed text, or `None` when nothing was replaced (no copy made); counts
    /// replacements per kind into `counts`.
    pub fn scrub(&self, text: &str, counts: &mut BTreeMap<String, u64>) -> Option<String> {
        let hits = self.any.matches(text);
        if !hits.matched_any() {
            return None;
        }
        let mut current: Option<String> = None;
        for (i, d) in self.detectors.iter().enumerate() {
            // Replacements never create a match for a later detector that the original text
            // lacked (placeholders are letters and brackets), except across a placeholder;
            // detectors that matched nothing in the original are skipped.
            if !hits.matched(i) {
                continue;
            }
            let src = current.as_deref().unwrap_or(text);
            if let Some(out) = d.replace(src, counts) {
                current = Some(out);
            }
        }
        current
    }

    /// Scrubs a string in place.
    pub fn scrub_in_place(&self, text: &mut String, counts: &mut BTreeMap<String, u64>) {
        if let Some(s) = self.scrub(text, counts) {
            *text = s;
        }
    }
}

impl Detector {
    fn replace(&self, text: &str, counts: &mut BTreeMap<String, u64>) -> Option<String> {
        let mut out = String::new();
        let mut last = 0;
        let mut replaced = 0u64;
        for caps in self.re.captures_iter(text) {
            let Some(whole) = caps.get(0) else { continue };
            // The secret part: the `v` group where the name must stay, else the whole match.
            let secret = caps.name("v").unwrap_or(whole);
            if !self.accepts(secret.as_str(), text, secret.start(), secret.end()) {
                continue;
            }
            out.push_str(&text[last..secret.start()]);
            out.push_str(&self.token);
            last = secret.end();
            replaced += 1;
        }
        if replaced == 0 {
            return None;
        }
        out.push_str(&text[last..]);
        *counts.entry(self.kind.clone()).or_insert(0) += replaced;
        Some(out)
    }

    fn accepts(&self, candidate: &str, text: &str, start: usize, end: usize) -> bool {
        match self.check {
            Check::None => true,
            Check::Luhn => luhn_card(candidate),
            Check::Iban => {
                let compact: String = candidate.chars().filter(|c| *c != ' ').collect();
                compact.parse::<iban::Iban>().is_ok()
            }
            Check::Ipv6 => ipv6_address(candidate, text, start, end),
            Check::PhoneDigits(lo, hi) => {
                let n = candidate.bytes().filter(u8::is_ascii_digit).count();
                (lo..=hi).contains(&n)
            }
            Check::BasicAuth => basic_credentials(candidate),
            Check::Opaque => candidate.len() >= 30 || candidate.bytes().any(|b| b.is_ascii_digit()),
        }
    }
}

/// Luhn checksum over the digits, as many as the issuer uses, separators consistent (all spaces, all
/// dashes or none), so that a run of unrelated numbers is not read as one card.
fn luhn_card(candidate: &str) -> bool {
    let has_space = candidate.contains(' ');
    let has_dash = candidate.contains('-');
    if has_space && has_dash {
        return false;
    }
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !issuer_length(&digits) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the number of digits is one the issuer (by prefix) uses: Amex 15, Diners 14-19,
/// Mastercard 16, Visa 13/16/19, Discover and JCB 16-19.
fn issuer_length(d: &[u32]) -> bool {
    let n = d.len();
    let two = d.first().copied().unwrap_or(0) * 10 + d.get(1).copied().unwrap_or(0);
    match two {
        34 | 37 => n == 15,
        30 | 36 | 38 | 39 => (14..=19).contains(&n),
        22..=27 | 51..=55 => n == 16,
        40..=49 => matches!(n, 13 | 16 | 19),
        35 | 60 | 65 => (16..=19).contains(&n),
        _ => false,
    }
}

/// A real IPv6 address, not code: parses, has at least three non-empty groups (or an
/// embedded IPv4), and is not glued to identifier characters on either side.
fn ipv6_address(candidate: &str, text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let glued = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
    if glued(before) || glued(after) {
        return false;
    }
    // A dot after the address is punctuation unless a digit follows (then it was cut short).
    if after == Some('.')
        && text[end + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    {
        return false;
    }
    if candidate.parse::<Ipv6Addr>().is_err() {
        return false;
    }
    let groups = candidate.split(':').filter(|g| !g.is_empty()).count();
    groups >= 3 || candidate.contains('.')
}

/// HTTP Basic credentials: base64 of `user:password`, printable.
fn basic_credentials(candidate: &str) -> bool {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(candidate) {
        Ok(bytes) => {
            bytes.contains(&b':')
                && bytes.len() >= 3
                && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
