//! Rendering the model's own Jinja chat template, and locating which parts of the output are
//! template text and which are message text.
//!
//! Message contents are rendered as opaque markers first; special tokens are then only
//! looked for in what the template itself emitted, and the real message text is substituted back
//! afterwards. A user who types `<|im_end|>` therefore gets plain-text tokens, never a control token.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::record::Message;

const MARK_OPEN: char = '\u{E000}';
const MARK_CLOSE: char = '\u{E001}';

/// A compiled chat template plus the token strings it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
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
        })
    }

    /// The template source (hashed into dataset metadata).
    pub fn source(&self) -> &str {
        &self.source
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
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
        })
        .map_err(|e| Error::ChatTemplate(format!("rendering: {e}")))
    }

    /// Renders `messages` to the exact string the model sees.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let msgs = messages
            .iter()
            .map(|m| TemplateMessage {
                role: m.role.clone(),
                content: m.content.to_string(),
            })
            .collect();
        self.render_raw(msgs, add_generation_prompt)
    }

    /// Renders `messages` and splits the result into text and special-token pieces, recognising
    /// special tokens (`specials`: string → id) only in template-emitted text.
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
        let marked = messages
            .iter()
            .enumerate()
            .map(|(i, m)| TemplateMessage {
                role: m.role.clone(),
                content: format!("{MARK_OPEN}{i}{MARK_CLOSE}"),
            })
            .collect();
        let skeleton = self.render_raw(marked, add_generation_prompt)?;
        let mut raw_pieces: Vec<Result<String, u32>> = Vec::new();
        let mut text = String::new();
        let mut rest = skeleton.as_str();
        while let Some(c) = rest.chars().next() {
            if let Some((tok, id)) = specials.iter().find(|(s, _)| rest.starts_with(s.as_str())) {
                if !text.is_empty() {
                    raw_pieces.push(Ok(std::mem::take(&mut text)));
                }
                raw_pieces.push(Err(*id));
                rest = &rest[tok.len()..];
            } else {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !text.is_empty() {
            raw_pieces.push(Ok(text));
        }
        // The marker rendering must equal the real rendering; a template that rewrites message
        // text would otherwise silently misplace the boundaries. Templates that `trim` message
        // content (Llama 3's does) are recognised: the trimmed text is substituted instead.
        let rendered = self.render(messages, add_generation_prompt)?;
        for trim in [false, true] {
            let pieces = raw_pieces
                .iter()
                .map(|p| match p {
                    Ok(t) => substitute(t, messages, trim).map(Piece::Text),
                    Err(id) => Ok(Piece::Special(*id)),
                })
                .collect::<Result<Vec<_>>>()?;
            let reassembled: String = pieces
                .iter()
                .map(|p| match p {
                    Piece::Text(t) => t.clone(),
                    Piece::Special(id) => specials
                        .iter()
                        .find(|(_, i)| i == id)
                        .map(|(s, _)| s.clone())
                        .unwrap_or_default(),
                })
                .collect();
            if reassembled == rendered {
                return Ok((rendered, pieces));
            }
        }
        Err(Error::ChatTemplate(
            "the chat template transforms message text (beyond trimming it), so message \
             boundaries cannot be located exactly for injection-safe tokenization"
                .into(),
        ))
    }
}

/// A role the template may see verbatim: a short lowercase identifier.
fn is_plain_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 32
        && role.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Replaces content markers in template text with the messages' real text (trimmed of
/// surrounding whitespace when `trim`).
fn substitute(text: &str, messages: &[Message], trim: bool) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(MARK_OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + MARK_OPEN.len_utf8()..];
        let close = after
            .find(MARK_CLOSE)
            .ok_or_else(|| Error::ChatTemplate("the template split a message marker".into()))?;
        let marker = &after[..close];
        let idx: usize = marker
            .parse()
            .map_err(|_| Error::ChatTemplate(format!("unexpected marker '{marker}'")))?;
        let msg = messages
            .get(idx)
            .ok_or_else(|| Error::ChatTemplate(format!("marker for missing message {idx}")))?;
        out.push_str(if trim {
            msg.content.trim()
        } else {
            &msg.content
        });
        rest = &after[close + MARK_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}
