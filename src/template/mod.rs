//! Teacher templates: (student messages, privileged context) → the teacher's messages.
//!
//! Every public trainer shares one convention, and so do we: keep every message as it is and
//! rewrite only the **last user message** with the template. The seven built-in templates are
//! byte-exact copies of the published ones (see `TEMPLATES.md`); a pipeline config may define its
//! own with [`TeacherTemplate::custom`]. The id is stored in every output row, so results stay
//! attributable to the exact text the teacher saw.

use serde::{Deserialize, Serialize};

use crate::record::{Message, PrivilegedContext};

/// A teacher template is unknown or malformed (its own error type: templates sit below the
/// readers and episode builders that report it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// The neutral privileged text used to build a *control* teacher context: the relevance score
/// compares the teacher with the real context against the teacher with this text, which cancels
/// the effect of the template wording itself.
pub const CONTROL_CONTEXT: &str = "ok";

/// Ids of the built-in templates, in the order of `TEMPLATES.md`.
pub const BUILTIN_IDS: [&str; 7] = [
    "sdft_paper_v1",
    "trl_sdft_default",
    "sdpo_reprompt_v1",
    "opsd_v1",
    "hindsight_offline_v1",
    "hindsight_online_v1",
    "opd_hint_v1",
];

const SDFT_PAPER_V1: &str = "{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\nNow answer with a response of your own, including the thinking process.";
const TRL_SDFT_DEFAULT: &str = "{prompt}\n\n{privileged_context}";
const SDPO_REPROMPT_V1: &str =
    "{prompt}{solution_block}{feedback_block}\n\nCorrectly solve the original question.\n";
const OPSD_V1: &str = "{prompt}\n\nHere is a reference solution to this problem:\n{solution}\n\n\nAfter understanding the reference solution and the rationale behind each step, now articulate your own step-by-step reasoning that derives the same final answer to the problem below:\n\nPlease reason step by step, and put your final answer within \\boxed{}.";
const HINDSIGHT_OFFLINE_V1: &str = "{prompt}\n\n[HINDSIGHT CONTEXT]\nThe following is a user response to your previous, insufficient attempt. Improve your response to the user prompt.\nFuture User Message: {followup}";
const HINDSIGHT_ONLINE_V1: &str = "{prompt}\n\n=== HINDSIGHT CONTEXT ===\n[The following is a future user message. Use this to guide your answer to the user prompt.]\n{followup}";
const OPD_HINT_V1: &str = "{prompt}\n\n[user's hint / instruction]\n{hint}";

/// A placeholder a template may use. Names are those of the published templates, so a template
/// copied from a paper works unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    /// `{prompt}`: the last user message's original content.
    Prompt,
    /// `{privileged_context}`, `{demonstration}`, `{followup}`, `{hint}`, `{feedback_raw}`,
    /// `{solution}` (opsd): the privileged text.
    Privileged,
    /// `{successful_previous_attempt}`: the peer solution, or empty.
    PeerSolution,
    /// `{solution_block}`: SDPO's `\nCorrect solution:\n\n{successful_previous_attempt}\n\n`, or empty.
    SolutionBlock,
    /// `{feedback_block}`: SDPO's `\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback_raw}\n\n`, or empty.
    FeedbackBlock,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "prompt" => Placeholder::Prompt,
            "privileged_context" | "demonstration" | "followup" | "hint" | "feedback_raw"
            | "solution" => Placeholder::Privileged,
            "successful_previous_attempt" => Placeholder::PeerSolution,
            "solution_block" => Placeholder::SolutionBlock,
            "feedback_block" => Placeholder::FeedbackBlock,
            _ => return None,
        })
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Slot(Placeholder),
}

/// A named, versioned teacher template, parsed once and applied to many episodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherTemplate {
    /// The id stored in every output row (`teacher_template`).
    pub id: String,
    /// The format string as written (kept for the run manifest).
    pub format: String,
    /// Wrap the rendered text in one leading and one trailing `\n` (the SDFT authors' code does).
    pub wrap_newlines: bool,
    pieces: Vec<Piece>,
}

/// A template defined in the pipeline config (`[[templates]]` table), so users can try their
/// own wording without a code change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDef {
    /// Template id; must not collide with a built-in id.
    pub id: String,
    /// Format string with `{prompt}`, `{privileged_context}` and the named placeholders.
    pub format: String,
    /// Add one leading and one trailing newline around the rendered text.
    #[serde(default)]
    pub wrap_newlines: bool,
}

/// Returns a built-in template by id (`None` for an unknown id).
pub fn builtin(id: &str) -> Option<TeacherTemplate> {
    let format = match id {
        "sdft_paper_v1" => SDFT_PAPER_V1,
        "trl_sdft_default" => TRL_SDFT_DEFAULT,
        "sdpo_reprompt_v1" => SDPO_REPROMPT_V1,
        "opsd_v1" => OPSD_V1,
        "hindsight_offline_v1" => HINDSIGHT_OFFLINE_V1,
        "hindsight_online_v1" => HINDSIGHT_ONLINE_V1,
        "opd_hint_v1" => OPD_HINT_V1,
        _ => return None,
    };
    // The built-in strings are constants checked by tests, so parsing cannot fail here.
    parse(format).ok().map(|pieces| TeacherTemplate {
        id: id.to_string(),
        format: format.to_string(),
        wrap_newlines: false,
        pieces,
    })
}

/// Resolves an id against the built-ins first, then the config-defined templates.
pub fn resolve(id: &str, custom: &[TemplateDef]) -> Result<TeacherTemplate, TemplateError> {
    if let Some(t) = builtin(id) {
        return Ok(t);
    }
    match custom.iter().find(|d| d.id == id) {
        Some(def) => TeacherTemplate::from_def(def),
        None => Err(TemplateError(format!(
            "unknown template id `{id}` (built-ins: {}; or define it under [[templates]])",
            BUILTIN_IDS.join(", ")
        ))),
    }
}

/// Parses a format string; `{name}` is a placeholder when `name` is a known one, `{{`/`}}` are
/// literal braces, and any other brace (e.g. `\boxed{}`) is literal text.
fn parse(format: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = format;
    while let Some(pos) = rest.find(['{', '}']) {
        lit.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            lit.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('{') {
            if let Some(end) = tail.find('}') {
                let name = &tail[1..end];
                let is_ident =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if is_ident {
                    let ph = Placeholder::from_name(name).ok_or_else(|| {
                        TemplateError(format!("unknown placeholder `{{{name}}}`"))
                    })?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Slot(ph));
                    rest = &tail[end + 1..];
                    continue;
                }
            }
        }
        lit.push_str(&tail[..1]);
        rest = &tail[1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

impl TeacherTemplate {
    /// Builds a user-defined template; it must use `{prompt}` and at least one privileged
    /// placeholder (a template that ignores the context would score nothing).
    pub fn custom(id: &str, format: &str, wrap_newlines: bool) -> Result<Self, TemplateError> {
        if builtin(id).is_some() {
            return Err(TemplateError(format!(
                "template id `{id}` is built in; pick another id for a custom template"
            )));
        }
        if id.is_empty() {
            return Err(TemplateError("template id is empty".into()));
        }
        let pieces = parse(format)?;
        let has = |p: Placeholder| pieces.contains(&Piece::Slot(p));
        if !has(Placeholder::Prompt) {
            return Err(TemplateError(format!(
                "template `{id}` does not use {{prompt}}"
            )));
        }
        if !(has(Placeholder::Privileged)
            || has(Placeholder::FeedbackBlock)
            || has(Placeholder::SolutionBlock)
            || has(Placeholder::PeerSolution))
        {
            return Err(TemplateError(format!(
                "template `{id}` uses no privileged placeholder (e.g. {{privileged_context}})"
            )));
        }
        Ok(TeacherTemplate {
            id: id.to_string(),
            format: format.to_string(),
            wrap_newlines,
            pieces,
        })
    }

    /// Builds a template from its config definition.
    pub fn from_def(def: &TemplateDef) -> Result<Self, TemplateError> {
        Self::custom(&def.id, &def.format, def.wrap_newlines)
    }

    /// Renders the rewritten last-user-message text.
    pub fn render(&self, prompt: &str, privileged: &PrivilegedContext) -> String {
        let mut out = String::with_capacity(prompt.len() + privileged.text.len() + 256);
        if self.wrap_newlines {
            out.push('\n');
        }
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Slot(Placeholder::Prompt) => out.push_str(prompt),
                Piece::Slot(Placeholder::Privileged) => out.push_str(&privileged.text),
                Piece::Slot(Placeholder::PeerSolution) => {
                    out.push_str(privileged.solution.as_deref().unwrap_or(""))
                }
                Piece::Slot(Placeholder::SolutionBlock) => {
                    if let Some(sol) = privileged.solution.as_deref() {
                        out.push_str("\nCorrect solution:\n\n");
                        out.push_str(sol);
                        out.push_str("\n\n");
                    }
                }
                Piece::Slot(Placeholder::FeedbackBlock) => {
                    if !privileged.text.is_empty() {
                        out.push_str(
                            "\nThe following is feedback from your unsuccessful earlier attempt:\n\n",
                        );
                        out.push_str(&privileged.text);
                        out.push_str("\n\n");
                    }
                }
            }
        }
        if self.wrap_newlines {
            out.push('\n');
        }
        out
    }

    /// Applies the template: every message is kept, and the last user message is rewritten.
    /// Fails only when there is no user message to rewrite.
    pub fn apply(
        &self,
        prompt: &[Message],
        privileged: &PrivilegedContext,
    ) -> Result<Vec<Message>, TemplateError> {
        let last_user = prompt
            .iter()
            .rposition(|m| m.role == "user")
            .ok_or_else(|| {
                TemplateError(format!(
                    "template `{}`: the prompt has no user message to rewrite",
                    self.id
                ))
            })?;
        let mut out = prompt.to_vec();
        out[last_user].content = self.render(&prompt[last_user].content, privileged).into();
        Ok(out)
    }

    /// Applies the template with the neutral [`CONTROL_CONTEXT`] in place of the privileged
    /// text (and no peer solution), for control-relative relevance scores.
    pub fn apply_control(&self, prompt: &[Message]) -> Result<Vec<Message>, TemplateError> {
        self.apply(prompt, &control_context())
    }
}

/// The privileged context used for control teacher prompts.
pub fn control_context() -> PrivilegedContext {
    PrivilegedContext {
        text: CONTROL_CONTEXT.to_string(),
        solution: None,
    }
}

/// Shortens `text` to at most `max_chars` characters by cutting out its middle and inserting a
/// marker `\n... [N characters omitted] ...\n`. Middle-out keeps both the start (what the text
/// is about) and the end (the final error line of a traceback). Char-boundary safe; a text that
/// already fits is returned unchanged.
pub fn truncate_middle(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    // The marker length depends on the digit count of N; two rounds settle it.
    let mut omitted = total - max_chars;
    let mut marker = omitted_marker(omitted);
    for _ in 0..2 {
        let keep = max_chars.saturating_sub(marker.chars().count());
        omitted = total - keep;
        marker = omitted_marker(omitted);
    }
    let keep = total - omitted;
    if keep == 0 {
        // Too small a budget for the marker: keep a plain head.
        return text.chars().take(max_chars).collect();
    }
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let head_end = byte_index_of_char(text, head);
    let tail_start = byte_index_of_char(text, total - tail);
    let mut out = String::with_capacity(head_end + marker.len() + (text.len() - tail_start));
    out.push_str(&text[..head_end]);
    out.push_str(&marker);
    out.push_str(&text[tail_start..]);
    out
}

fn omitted_marker(n: usize) -> String {
    format!("\n... [{n} characters omitted] ...\n")
}

fn byte_index_of_char(text: &str, char_idx: usize) -> usize {
    text.char_indices()
        .nth(char_idx)
        .map(|(i, _)| i)
        .unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_builtins_parse() {
        for id in BUILTIN_IDS {
            assert!(builtin(id).is_some(), "{id}");
        }
        assert!(builtin("nope").is_none());
    }

    #[test]
    fn opsd_keeps_literal_boxed_braces() {
        let t = builtin("opsd_v1").unwrap();
        let p = PrivilegedContext {
            text: "x=2".into(),
            solution: None,
        };
        let s = t.render("Q", &p);
        assert!(s.ends_with("within \\boxed{}."));
        assert!(s.contains("problem:\nx=2\n\n\nAfter"));
    }

    #[test]
    fn truncate_middle_is_bounded_and_char_safe() {
        let text: String = "日本語テキスト".repeat(100);
        let out = truncate_middle(&text, 100);
        assert_eq!(out.chars().count(), 100);
        assert!(out.contains("characters omitted"));
        assert!(out.starts_with("日本語"));
        assert_eq!(truncate_middle("short", 100), "short");
        assert_eq!(truncate_middle("abcdefghij", 3), "abc");
    }

    #[test]
    fn custom_templates_validate() {
        assert!(
            TeacherTemplate::custom("mine", "{prompt}\n\nHint: {privileged_context}", false)
                .is_ok()
        );
        assert!(TeacherTemplate::custom("mine", "{prompt} {bogus}", false).is_err());
        assert!(TeacherTemplate::custom("mine", "{prompt} only", false).is_err());
        assert!(TeacherTemplate::custom("opd_hint_v1", "{prompt}{hint}", false).is_err());
        let t = TeacherTemplate::custom("w", "{prompt}|{{lit}}|{hint}", true).unwrap();
        let p = PrivilegedContext {
            text: "h".into(),
            solution: None,
        };
        assert_eq!(t.render("P", &p), "\nP|{lit}|h\n");
    }
}
