//! Rendering the model's own Jinja chat template, and locating which parts of the output are
//! template text and which are message text.
//!
//! Message contents are rendered as opaque markers first; special tokens are then only
//! looked for in what the template itself emitted, and the real message text is substituted back
//! afterwards. A user who types `<|im_end|>` therefore gets plain-text tokens, never a control token.

use std::collections::BTreeMap;

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::record::Message;

const MARK_OPEN: char = '\u{E000}';
const MARK_CLOSE: char = '\u{E001}';
/// The closing tag of a reasoning block inside an assistant message's content.
const THINK_CLOSE: &str = "</think>";
/// The opening tag of a reasoning block.
const THINK_OPEN: &str = "<think>";

/// Context variables the renderer sets itself; a template variable may not replace them.
pub const RESERVED_VARS: [&str; 5] = [
    "messages",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
    "raise_exception",
];

/// A compiled chat template plus the token strings it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    /// Template variables of the run (`model.chat_template_kwargs`: `enable_thinking`, a
    /// `date_string`, ...), passed to every rendering as transformers passes its kwargs.
    vars: BTreeMap<String, serde_json::Value>,
    /// The template parses reasoning blocks out of message content itself (its source
    /// mentions `</think>`), so marker renderings must present the same structure.
    splits_think: bool,
}

/// One piece of a rendered conversation: text to encode, or a template-emitted special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Special(u32),
}

#[derive(Serialize)]
struct TemplateMessage {
    role: String,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
}

/// A stretch of the marker rendering: template text, or the place of one message field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Template(String),
    Field(usize),
}

impl ChatTemplate {
    /// Compiles a Jinja chat template (Hugging Face conventions: `messages`,
    /// `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ChatTemplate(format!("compiling: {e}")))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            vars: BTreeMap::new(),
            splits_think: source.contains(THINK_CLOSE),
        })
    }

    /// Sets the template variables every rendering receives (transformers'
    /// `apply_chat_template(..., **kwargs)`). Names the renderer sets itself are refused.
    pub fn set_vars(&mut self, vars: BTreeMap<String, serde_json::Value>) -> Result<()> {
        if let Some(k) = vars.keys().find(|k| RESERVED_VARS.contains(&k.as_str())) {
            return Err(Error::ChatTemplate(format!(
                "template variable '{k}' is set by the renderer itself and cannot be configured"
            )));
        }
        self.vars = vars;
        Ok(())
    }

    /// The template variables in force.
    pub fn vars(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.vars
    }

    /// The template source (hashed into dataset metadata).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has a slot for an assistant turn's separate reasoning.
    pub fn renders_reasoning(&self) -> bool {
        self.source.contains("reasoning_content")
    }

    fn render_raw(
        &self,
        messages: Vec<TemplateMessage>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let mut ctx: BTreeMap<String, minijinja::Value> = self
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), minijinja::Value::from_serialize(v)))
            .collect();
        ctx.insert(
            "messages".into(),
            minijinja::Value::from_serialize(&messages),
        );
        ctx.insert(
            "add_generation_prompt".into(),
            minijinja::Value::from(add_generation_prompt),
        );
        ctx.insert(
            "bos_token".into(),
            minijinja::Value::from(self.bos_token.clone()),
        );
        ctx.insert(
            "eos_token".into(),
            minijinja::Value::from(self.eos_token.clone()),
        );
        tmpl.render(ctx)
            .map_err(|e| Error::ChatTemplate(format!("rendering: {e}")))
    }

    /// Renders `messages` to the exact string the model sees.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let msgs = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.clone(),
                content: m.content.to_string(),
                reasoning_content: m.reasoning.as_deref().map(str::to_string),
            })
            .collect();
        self.render_raw(msgs, add_generation_prompt)
    }

    /// The message list with every text field replaced by a marker, and the text each marker
    /// stands for. Content holding a reasoning block is presented as
    /// `marker</think>marker` to templates that parse such blocks, so the template takes the
    /// same branch as on the real text.
    fn marked<'m>(&self, messages: &'m [Message]) -> (Vec<TemplateMessage>, Vec<&'m str>) {
        let mut fields: Vec<&'m str> = Vec::new();
        let mut mark = |text: &'m str| {
            fields.push(text);
            format!("{MARK_OPEN}{}{MARK_CLOSE}", fields.len() - 1)
        };
        let msgs = messages
            .iter()
            .map(|m| {
                let splits = self.splits_think && m.role == "assistant";
                let content = match (splits, m.content.find(THINK_CLOSE)) {
                    (true, Some(first)) => {
                        let last = m.content.rfind(THINK_CLOSE).unwrap_or(first);
                        let before = mark(&m.content[..first]);
                        let after = mark(&m.content[last + THINK_CLOSE.len()..]);
                        format!("{before}{THINK_CLOSE}{after}")
                    }
                    _ => mark(&m.content),
                };
                TemplateMessage {
                    role: m.role.clone(),
                    content,
                    reasoning_content: m.reasoning.as_deref().map(&mut mark),
                }
            })
            .collect();
        (msgs, fields)
    }

    /// Renders `messages` and splits the result into text and special-token pieces, recognising
    /// special tokens (`specials`: string → id) only in template-emitted text.
    ///
    /// The conversation is rendered twice: with every message field replaced by a marker, and
    /// as it is. The marker rendering tells which stretches the template wrote; the real
    /// rendering must consist of exactly those stretches with each field's text between them,
    /// possibly as the template cut it (trimmed of whitespace or newlines, or the part after a
    /// `<think>` tag, as reasoning templates do). Anything else is refused rather than guessed.
    pub fn render_pieces(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        specials: &[(String, u32)],
    ) -> Result<(String, Vec<Piece>)> {
        // Roles steer template logic (`messages[0].role != 'system'`), so they are passed as they
        // are; they must be plain identifiers, which keeps them free of special-token strings.
        if let Some(m) = messages.iter().find(|m| !is_plain_role(&m.role)) {
            return Err(Error::ChatTemplate(format!(
                "invalid message role {:?}: roles are lowercase identifiers (system, user, assistant, tool)",
                m.role
            )));
        }
        let (marked, fields) = self.marked(messages);
        let skeleton = self.render_raw(marked, add_generation_prompt)?;
        let segments = segments(&skeleton)?;
        let rendered = self.render(messages, add_generation_prompt)?;
        let texts = align(&segments, &fields, &rendered).ok_or_else(|| {
            Error::ChatTemplate(
                "the chat template transforms message text (beyond trimming it or splitting \
                 off a reasoning block), so message boundaries cannot be located exactly for \
                 injection-safe tokenization"
                    .into(),
            )
        })?;
        let mut pieces: Vec<Piece> = Vec::new();
        let push_text = |pieces: &mut Vec<Piece>, t: &str| {
            if t.is_empty() {
                return;
            }
            match pieces.last_mut() {
                Some(Piece::Text(prev)) => prev.push_str(t),
                _ => pieces.push(Piece::Text(t.to_string())),
            }
        };
        // Specials by first byte (Gemma 3 has 6,415 added tokens; the template text is scanned
        // char by char), longest first as `specials` is ordered.
        let mut by_first: std::collections::HashMap<u8, Vec<&(String, u32)>> =
            std::collections::HashMap::new();
        for sp in specials {
            if let Some(&b) = sp.0.as_bytes().first() {
                by_first.entry(b).or_default().push(sp);
            }
        }
        let mut next_field = texts.iter();
        for seg in &segments {
            match seg {
                Segment::Field(_) => {
                    if let Some(t) = next_field.next() {
                        push_text(&mut pieces, t);
                    }
                }
                Segment::Template(t) => {
                    let mut rest = t.as_str();
                    let mut text = String::new();
                    while let Some(c) = rest.chars().next() {
                        let found = rest
                            .as_bytes()
                            .first()
                            .and_then(|b| by_first.get(b))
                            .and_then(|cands| {
                                cands.iter().find(|(s, _)| rest.starts_with(s.as_str()))
                            });
                        if let Some((tok, id)) = found {
                            push_text(&mut pieces, &std::mem::take(&mut text));
                            pieces.push(Piece::Special(*id));
                            rest = &rest[tok.len()..];
                        } else {
                            text.push(c);
                            rest = &rest[c.len_utf8()..];
                        }
                    }
                    push_text(&mut pieces, &text);
                }
            }
        }
        Ok((rendered, pieces))
    }
}

/// Splits a marker rendering into template text and field places.
fn segments(skeleton: &str) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    let mut rest = skeleton;
    while let Some(open) = rest.find(MARK_OPEN) {
        if open > 0 {
            out.push(Segment::Template(rest[..open].to_string()));
        }
        let after = &rest[open + MARK_OPEN.len_utf8()..];
        let close = after
            .find(MARK_CLOSE)
            .ok_or_else(|| Error::ChatTemplate("the template split a message marker".into()))?;
        let idx: usize = after[..close]
            .parse()
            .map_err(|_| Error::ChatTemplate(format!("unexpected marker '{}'", &after[..close])))?;
        out.push(Segment::Field(idx));
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    if !rest.is_empty() {
        out.push(Segment::Template(rest.to_string()));
    }
    Ok(out)
}

/// The ways a template may cut a field's text before writing it: as is, trimmed of whitespace
/// (`| trim`, `.strip()`), of newlines only (`.strip('\n')`, `.lstrip('\n')`), and the part after
/// the last `<think>` (reasoning templates), in order of preference.
fn candidates(text: &str) -> Vec<&str> {
    let mut bases = vec![text];
    if let Some(at) = text.rfind(THINK_OPEN) {
        bases.push(&text[at + THINK_OPEN.len()..]);
    }
    let mut out: Vec<&str> = Vec::new();
    for b in bases {
        for c in [
            b,
            b.trim(),
            b.trim_matches('\n'),
            b.trim_start_matches('\n'),
            b.trim_end_matches('\n'),
            b.trim_start(),
            b.trim_end(),
        ] {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// Finds, for every field place of `segments` in order, the text it has in `rendered`
/// (one of its [`candidates`]), such that template text and field texts make up `rendered`
/// exactly. Backtracks over the candidates; `None` when no assignment fits.
fn align(segments: &[Segment], fields: &[&str], rendered: &str) -> Option<Vec<String>> {
    fn go<'a>(
        segments: &[Segment],
        fields: &[&'a str],
        rendered: &str,
        pos: usize,
        out: &mut Vec<&'a str>,
        budget: &mut usize,
    ) -> bool {
        let Some((first, rest)) = segments.split_first() else {
            return pos == rendered.len();
        };
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match first {
            Segment::Template(t) => {
                rendered[pos..].starts_with(t.as_str())
                    && go(rest, fields, rendered, pos + t.len(), out, budget)
            }
            Segment::Field(i) => {
                let Some(text) = fields.get(*i) else {
                    return false;
                };
                // The template text that must follow, to rule candidates out early.
                let next = match rest.first() {
                    Some(Segment::Template(t)) => t.as_str(),
                    _ => "",
                };
                for c in candidates(text) {
                    let end = pos + c.len();
                    if rendered[pos..].starts_with(c)
                        && rendered.get(end..).is_some_and(|r| r.starts_with(next))
                    {
                        out.push(c);
                        if go(rest, fields, rendered, end, out, budget) {
                            return true;
                        }
                        out.pop();
                    }
                }
                false
            }
        }
    }
    let mut out = Vec::new();
    // Bounds the search on pathological inputs (each field has at most 14 candidates).
    let mut budget = 100_000usize;
    go(segments, fields, rendered, 0, &mut out, &mut budget)
        .then(|| out.into_iter().map(str::to_string).collect())
}

/// A role the template may see verbatim: a short lowercase identifier.
fn is_plain_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 32
        && role.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(src: &str, messages: &[Message]) -> Result<Vec<Piece>> {
        let t = ChatTemplate::new(src, "", "")?;
        let specials = vec![("<s>".to_string(), 1), ("</think>".to_string(), 2)];
        t.render_pieces(messages, false, &specials).map(|(_, p)| p)
    }

    #[test]
    fn fields_are_found_as_the_template_cut_them() {
        let m = [Message::new("user", "\n  hi <s> there \n")];
        // Verbatim, trimmed, and stripped of newlines only: the text is found each time and the
        // typed `<s>` stays text.
        for (src, text) in [
            ("<s>{{ messages[0].content }}<s>", "\n  hi <s> there \n"),
            ("<s>{{ messages[0].content | trim }}<s>", "hi <s> there"),
            (
                "<s>{{ messages[0].content.strip('\\n') }}<s>",
                "  hi <s> there ",
            ),
        ] {
            let p = pieces(src, &m).expect(src);
            assert_eq!(
                p,
                vec![
                    Piece::Special(1),
                    Piece::Text(text.into()),
                    Piece::Special(1)
                ],
                "{src}"
            );
        }
    }

    #[test]
    fn a_template_that_rewrites_text_is_refused() {
        let m = [Message::new("user", "hi")];
        let e = pieces("<s>{{ messages[0].content | upper }}", &m).expect_err("refused");
        assert!(e.to_string().contains("transforms message text"), "{e}");
    }

    #[test]
    fn reasoning_is_split_only_for_assistant_turns_of_think_templates() {
        let src =
            "{% for m in messages %}{% if m.role == 'assistant' and '</think>' in m.content %}\
                   [{{ m.content.split('</think>')[-1].lstrip('\\n') }}]{% else %}\
                   [{{ m.content }}]{% endif %}{% endfor %}";
        let assistant = [Message::new("assistant", "<think>\nr\n</think>\n\nanswer")];
        assert_eq!(
            pieces(src, &assistant).expect("assistant"),
            vec![Piece::Text("[answer]".into())]
        );
        // A user who types the tag gets text, not the token.
        let user = [Message::new("user", "a </think> b")];
        assert_eq!(
            pieces(src, &user).expect("user"),
            vec![Piece::Text("[a </think> b]".into())]
        );
    }

    #[test]
    fn template_variables_reach_the_template_and_reserved_names_are_refused() {
        let mut t = ChatTemplate::new("{{ 'on' if flag else 'off' }}", "", "").expect("t");
        assert_eq!(t.render(&[], false).expect("r"), "off");
        t.set_vars([("flag".to_string(), serde_json::json!(true))].into())
            .expect("vars");
        assert_eq!(t.render(&[], false).expect("r"), "on");
        let reserved = [("messages".to_string(), serde_json::json!([]))].into();
        assert!(t.set_vars(reserved).is_err());
    }
}
