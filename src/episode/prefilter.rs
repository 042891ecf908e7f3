//! Episode-level prefilters (empty turns, length caps, language, acknowledgement-only
//! follow-ups, exact dedup), each counted under its own reason.

use std::collections::HashSet;

use xxhash_rust::xxh3::Xxh3;

use super::config::Prefilter;
use super::{Episode, SourceKind};

/// Counts tokens for the token cap. The pipeline plugs in the model's tokenizer; the default is
/// a cheap estimate so the cap works without one.
pub trait TokenCounter: Send {
    /// Number of tokens in `text`.
    fn count(&self, text: &str) -> usize;
}

/// ~4 bytes per token: a conservative, tokenizer-free estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproxTokenCounter;

impl TokenCounter for ApproxTokenCounter {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

/// Why an episode was filtered (keys of `episodes_filtered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpisodeFilter {
    /// Empty/whitespace-only response, last prompt message or follow-up.
    EmptyTurn,
    /// Nothing privileged to show the teacher (no feedback and no peer solution, or empty hint).
    EmptyPrivileged,
    /// A message or the whole episode is over the char cap.
    TooLong,
    /// Over the token cap.
    TooManyTokens,
    /// Reliably detected language not in the allow list.
    Language,
    /// The follow-up only acknowledges, and `drop_ack_only` is set.
    AckOnlyFollowup,
    /// Exact duplicate of an earlier episode.
    Duplicate,
}

impl EpisodeFilter {
    /// The snake_case reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            EpisodeFilter::EmptyTurn => "empty_turn",
            EpisodeFilter::EmptyPrivileged => "empty_privileged",
            EpisodeFilter::TooLong => "too_long",
            EpisodeFilter::TooManyTokens => "too_many_tokens",
            EpisodeFilter::Language => "language",
            EpisodeFilter::AckOnlyFollowup => "ack_only_followup",
            EpisodeFilter::Duplicate => "duplicate",
        }
    }
}

/// Stateful episode filter (holds the dedup set: 16 bytes per kept episode).
pub struct Prefilters {
    cfg: Prefilter,
    counter: Box<dyn TokenCounter>,
    seen: HashSet<u128>,
    allowed_langs: Vec<whatlang::Lang>,
}

/// Whether the summed `measure` of `texts` exceeds `max`, stopping at the first text that
/// crosses it.
fn over_limit<'a>(
    texts: impl Iterator<Item = &'a str>,
    max: usize,
    measure: impl Fn(&str) -> usize,
) -> bool {
    let mut total = 0usize;
    for t in texts {
        total = total.saturating_add(measure(t));
        if total > max {
            return true;
        }
    }
    false
}

fn char_len_over(s: &str, max: usize) -> bool {
    // Bytes >= chars, so the char count is only needed when the byte length is over.
    s.len() > max && s.chars().count() > max
}

/// ISO 639-1 → 639-3 for the languages common in chat logs.
fn iso1_to_iso3(code: &str) -> Option<&'static str> {
    Some(match code {
        "en" => "eng",
        "zh" => "cmn",
        "ru" => "rus",
        "fr" => "fra",
        "es" => "spa",
        "pt" => "por",
        "de" => "deu",
        "it" => "ita",
        "ja" => "jpn",
        "ko" => "kor",
        "ar" => "arb",
        "tr" => "tur",
        "vi" => "vie",
        "pl" => "pol",
        "nl" => "nld",
        "uk" => "ukr",
        "id" => "ind",
        "fa" => "pes",
        "hi" => "hin",
        "th" => "tha",
        "sv" => "swe",
        "he" => "heb",
        "el" => "ell",
        "cs" => "ces",
        _ => return None,
    })
}

/// Resolves a language name or code to a `whatlang` language.
pub fn resolve_lang(name: &str) -> Option<whatlang::Lang> {
    let n = name.trim().to_ascii_lowercase();
    let code = iso1_to_iso3(&n).unwrap_or(&n);
    whatlang::Lang::from_code(code).or_else(|| {
        whatlang::Lang::all()
            .iter()
            .copied()
            .find(|l| l.eng_name().eq_ignore_ascii_case(&n))
    })
}

/// Acknowledgement words; a follow-up made only of these (≤ 6 words) is ack-only.
const ACK_WORDS: &[&str] = &[
    "ok",
    "okay",
    "k",
    "kk",
    "thanks",
    "thank",
    "you",
    "thx",
    "ty",
    "tysm",
    "cool",
    "great",
    "nice",
    "perfect",
    "awesome",
    "got",
    "it",
    "sure",
    "yes",
    "yep",
    "yeah",
    "good",
    "fine",
    "alright",
    "much",
    "so",
    "very",
    "merci",
    "danke",
    "gracias",
    "grazie",
    "obrigado",
    "obrigada",
    "спасибо",
    "ок",
    "谢谢",
    "好的",
    "好",
    "明白了",
    "ありがとう",
    "了解",
    "감사합니다",
    "super",
    "bien",
    "vielen",
    "dank",
    "beaucoup",
    "muchas",
    "lol",
    "wow",
    "understood",
    "noted",
];

/// Whether a follow-up only acknowledges ("thanks!", "ok 👍", "谢谢"): cheap, before the model runs.
pub fn is_ack_only(text: &str) -> bool {
    let lowered = text.to_lowercase();
    let words: Vec<&str> = lowered
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    !words.is_empty() && words.len() <= 6 && words.iter().all(|w| ACK_WORDS.contains(w))
}

impl Prefilters {
    /// Builds the filters; unknown language names are a config error.
    pub fn new(cfg: Prefilter) -> Result<Self, crate::ingest::IngestError> {
        let mut allowed_langs = Vec::new();
        for l in &cfg.languages {
            allowed_langs.push(resolve_lang(l).ok_or_else(|| {
                crate::ingest::IngestError::Config(format!(
                    "unknown language `{l}` in prefilter.languages"
                ))
            })?);
        }
        Ok(Prefilters {
            cfg,
            counter: Box::new(ApproxTokenCounter),
            seen: HashSet::new(),
            allowed_langs,
        })
    }

    /// Plugs in the model's tokenizer for `max_episode_tokens`.
    pub fn set_token_counter(&mut self, counter: Box<dyn TokenCounter>) {
        self.counter = counter;
    }

    /// Checks one episode; may add flags (`language_uncertain`). Filters run in the order of
    /// [`EpisodeFilter`]; dedup runs last so only kept episodes enter the dedup set.
    pub fn check(&mut self, ep: &mut Episode) -> Result<(), EpisodeFilter> {
        let cfg = &self.cfg;
        let last_user = super::last_user(&ep.prompt);
        if cfg.drop_empty_turns {
            let empty_completion = ep
                .completion
                .as_deref()
                .is_some_and(|c| c.trim().is_empty());
            let empty_followup =
                ep.source_kind == SourceKind::ChatLog && ep.privileged.text.trim().is_empty();
            if last_user.trim().is_empty() || empty_completion || empty_followup {
                return Err(EpisodeFilter::EmptyTurn);
            }
        }
        if ep.privileged.text.trim().is_empty()
            && ep
                .privileged
                .solution
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(EpisodeFilter::EmptyPrivileged);
        }
        let completion = ep.completion.as_deref().unwrap_or("");
        if let Some(max) = cfg.max_message_chars {
            if ep.prompt.iter().any(|m| char_len_over(&m.content, max))
                || char_len_over(completion, max)
            {
                return Err(EpisodeFilter::TooLong);
            }
        }
        let texts = || {
            ep.prompt
                .iter()
                .map(|m| &*m.content)
                .chain([completion, ep.privileged.text.as_str()])
                .chain(ep.privileged.solution.as_deref())
        };
        // Both totals stop counting once over the limit: a long conversation's late turns carry
        // megabytes of history, and counting all of it for every turn would be quadratic.
        if let Some(max) = cfg.max_episode_chars {
            let bytes: usize = texts().map(str::len).sum();
            if bytes > max && over_limit(texts(), max, |t| t.chars().count()) {
                return Err(EpisodeFilter::TooLong);
            }
        }
        if let Some(max) = cfg.max_episode_tokens {
            if over_limit(texts(), max, |t| self.counter.count(t)) {
                return Err(EpisodeFilter::TooManyTokens);
            }
        }
        if !self.allowed_langs.is_empty() {
            let sample = crate::ingest::quarantine::cut_to_bytes(last_user, 2000);
            match whatlang::detect(sample) {
                Some(info) if info.is_reliable() => {
                    if !self.allowed_langs.contains(&info.lang()) {
                        return Err(EpisodeFilter::Language);
                    }
                }
                _ => ep.flags.push("language_uncertain".into()),
            }
        }
        if cfg.drop_ack_only && ep.has_flag("ack_only_followup") {
            return Err(EpisodeFilter::AckOnlyFollowup);
        }
        if cfg.dedup && !self.seen.insert(content_hash(ep)) {
            return Err(EpisodeFilter::Duplicate);
        }
        Ok(())
    }
}

/// 128-bit content hash of what makes an episode distinct (kind, template, prompt, response,
/// privileged context); provenance is deliberately excluded.
pub fn content_hash(ep: &Episode) -> u128 {
    let mut h = Xxh3::new();
    let mut put = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    put(ep.source_kind.as_str());
    put(&ep.teacher_template);
    for m in &ep.prompt {
        put(&m.role);
        put(&m.content);
    }
    put(ep.completion.as_deref().unwrap_or("\u{0}none"));
    put(&ep.privileged.text);
    put(ep.privileged.solution.as_deref().unwrap_or("\u{0}none"));
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_only() {
        assert!(is_ack_only("thanks!"));
        assert!(is_ack_only("Ok, thank you 🙏"));
        assert!(is_ack_only("谢谢"));
        assert!(!is_ack_only(
            "thanks! unrelated, but what's a good name for a cat?"
        ));
        assert!(!is_ack_only(""));
        assert!(!is_ack_only("ok but make it Python"));
    }

    #[test]
    fn langs_resolve() {
        assert_eq!(resolve_lang("en"), Some(whatlang::Lang::Eng));
        assert_eq!(resolve_lang("French"), Some(whatlang::Lang::Fra));
        assert_eq!(resolve_lang("cmn"), Some(whatlang::Lang::Cmn));
        assert_eq!(resolve_lang("klingon"), None);
    }
}
