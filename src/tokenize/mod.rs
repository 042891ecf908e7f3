//! Tokenization: the model's BPE tokenizer (built from GGUF metadata or `tokenizer.json`), its chat
//! template, and the canonical, injection-safe encoding every row of a dataset is built from.
//!
//! Canonical encoding: render the conversation with the model's own chat template (generation
//! prompt included); recognise special tokens only where the template emitted them; encode each
//! stretch of text between two of them with special-token parsing off and no BOS. A completion is
//! encoded on its own the same way, followed by the end-of-turn token when the turn ended.

pub mod chat_template;
pub mod gguf_vocab;

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::record::Message;
pub use chat_template::{ChatTemplate, Piece};

/// A conversation rendered and encoded canonically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChat {
    /// The rendered template output (for humans and fixtures; never re-tokenized).
    pub rendered: String,
    pub ids: Vec<u32>,
}

/// A cheap, cloneable handle on the plain-text encoder, for length prefilters on other threads.
#[derive(Clone)]
pub struct TextEncoder(tokenizers::Tokenizer);

impl TextEncoder {
    /// Number of tokens in `text` (its byte length, an upper bound, if encoding fails).
    pub fn count(&self, text: &str) -> usize {
        self.0
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or(text.len())
    }
}

/// The tokenizer of one model.
pub struct Tokenizer {
    /// Plain-text encoder: knows no added tokens, so special strings in text stay text.
    text: tokenizers::Tokenizer,
    /// Control tokens the chat template may emit, longest first.
    specials: Vec<(String, u32)>,
    template: ChatTemplate,
    eot_id: u32,
    vocab_size: usize,
    fingerprint: String,
    /// Memo of encoded text stretches. Canonical encoding splits a conversation at template
    /// special tokens, so each message is its own stretch: a conversation's history, shared by the
    /// student and teacher contexts and by every later turn, is encoded once instead of once per
    /// context per turn. Encoding is a pure function, so the memo never changes results.
    stretch_cache: std::sync::Mutex<std::collections::HashMap<String, Vec<u32>>>,
    /// Added tokens that absorb the whitespace to their left / right (`lstrip` / `rstrip` in
    /// `tokenizer.json`), as the Hugging Face tokenizer does when it splits on them.
    strip: std::collections::HashMap<u32, (bool, bool)>,
}

/// Entries kept in the stretch memo before it is cleared (bounds memory on endless streams).
const STRETCH_CACHE_MAX: usize = 4096;

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata and chat template.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let parts = gguf_vocab::from_gguf(gguf)?;
        let template_src = gguf
            .get_str("tokenizer.chat_template")
            .ok_or_else(|| Error::Tokenizer("GGUF has no tokenizer.chat_template".into()))?;
        let token = |id: Option<u32>| {
            id.and_then(|i| parts.tokens.get(i as usize).cloned())
                .unwrap_or_default()
        };
        let template = ChatTemplate::new(template_src, &token(parts.bos_id), &token(parts.eos_id))?;
        let eot_id = end_of_turn_id(&parts.specials, parts.eos_id)
            .ok_or_else(|| Error::Tokenizer("no end-of-turn token (eos) in GGUF".into()))?;
        Ok(Self::assemble(
            parts.tokenizer,
            parts.specials,
            template,
            eot_id,
            parts.tokens.len(),
            parts.fingerprint,
        ))
    }

    /// Loads `tokenizer.json` + `tokenizer_config.json` (chat template, eos) from a directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let raw = std::fs::read(&tok_path).map_err(|source| Error::Io {
            action: "reading",
            path: tok_path.clone(),
            source,
        })?;
        let mut json: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        // Every added token, special or not (`<think>`, `<tool_call>`), maps to its single id
        // where the template emits it; none is ever parsed out of message text.
        let mut specials = Vec::new();
        let mut strip = std::collections::HashMap::new();
        if let Some(added) = json.get("added_tokens").and_then(|v| v.as_array()) {
            for t in added {
                let content = t.get("content").and_then(|v| v.as_str());
                let id = t.get("id").and_then(|v| v.as_u64());
                let flag = |k: &str| t.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                if let (Some(c), Some(id)) = (content, id) {
                    if c.is_empty() {
                        continue;
                    }
                    specials.push((c.to_string(), id as u32));
                    if flag("lstrip") || flag("rstrip") {
                        strip.insert(id as u32, (flag("lstrip"), flag("rstrip")));
                    }
                }
            }
        }
        // The text encoder must not know the added tokens: they would be parsed out of user text.
        json["added_tokens"] = serde_json::Value::Array(vec![]);
        json["post_processor"] = serde_json::Value::Null;
        let text = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes())
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let token_str = |key: &str| -> String {
            match cfg.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        // transformers 5 saves the template beside the config as `chat_template.jinja`.
        let jinja_path = dir.join("chat_template.jinja");
        let jinja = std::fs::read_to_string(&jinja_path).ok();
        let template_src = match cfg.get("chat_template").and_then(|v| v.as_str()) {
            Some(t) => t,
            None => jinja.as_deref().ok_or_else(|| {
                Error::Tokenizer(format!(
                    "no chat template: neither {} has a chat_template nor {} exists",
                    cfg_path.display(),
                    jinja_path.display()
                ))
            })?,
        };
        let eos = token_str("eos_token");
        let template = ChatTemplate::new(template_src, &token_str("bos_token"), &eos)?;
        let eos_id = specials
            .iter()
            .find(|(s, _)| *s == eos)
            .map(|(_, id)| *id)
            .or_else(|| text.token_to_id(&eos));
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let eot_id = end_of_turn_id(&specials, eos_id).ok_or_else(|| {
            Error::Tokenizer("no end-of-turn token (eos_token) configured".into())
        })?;
        let vocab_size = text.get_vocab_size(true).max(
            specials
                .iter()
                .map(|(_, id)| *id as usize + 1)
                .max()
                .unwrap_or(0),
        );
        let fingerprint = hex::encode(Sha256::digest(&raw));
        let mut tok = Self::assemble(text, specials, template, eot_id, vocab_size, fingerprint);
        tok.strip = strip;
        Ok(tok)
    }

    fn assemble(
        text: tokenizers::Tokenizer,
        specials: Vec<(String, u32)>,
        template: ChatTemplate,
        eot_id: u32,
        vocab_size: usize,
        fingerprint: String,
    ) -> Self {
        Self {
            text,
            specials,
            template,
            eot_id,
            vocab_size,
            fingerprint,
            stretch_cache: Default::default(),
            strip: Default::default(),
        }
    }

    /// Encodes plain text: special-token parsing off, no BOS.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .text
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A handle on the plain-text encoder that can move to another thread.
    pub fn text_encoder(&self) -> TextEncoder {
        TextEncoder(self.text.clone())
    }

    /// Renders and encodes a conversation canonically (see the module docs).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<EncodedChat> {
        let (rendered, pieces) =
            self.template
                .render_pieces(messages, add_generation_prompt, &self.specials)?;
        let pieces = self.absorb_whitespace(pieces);
        let mut ids = Vec::new();
        for p in pieces {
            match p {
                Piece::Special(id) => ids.push(id),
                Piece::Text(t) if t.is_empty() => {}
                Piece::Text(t) => ids.extend(self.encode_stretch(t)?),
            }
        }
        Ok(EncodedChat { rendered, ids })
    }

    /// Sets the chat template's variables (`model.chat_template_kwargs`), e.g.
    /// `enable_thinking = false` for a Qwen3 non-thinking turn.
    pub fn set_template_vars(
        &mut self,
        vars: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<()> {
        self.template.set_vars(vars)
    }

    /// Encodes a logged response the way the model's own template renders it: the student
    /// context is the generation prompt after `history`, and the response tokens are what the
    /// template writes after that prompt when it renders the whole conversation
    /// (`history + [response]`), up to and including the end-of-turn token (excluded when
    /// the turn did not end, e.g. cut off at the length limit). So `prompt + completion` is the
    /// template's own rendering, including what the template inserts into an assistant turn
    /// (Qwen3's empty think block) and how it cuts the text (Llama 3 trims it).
    ///
    /// Fails, rather than guess, when the rendering of the whole conversation does not start
    /// with the generation prompt's tokens ([`Error::TemplateMismatch`]) or has no end-of-turn
    /// token after it.
    pub fn encode_response(
        &self,
        history: &[Message],
        response: &Message,
        ends_turn: bool,
    ) -> Result<(EncodedChat, Vec<u32>)> {
        let prompt = self.encode_chat(history, true)?;
        let completion = self.completion_after(&prompt.ids, history, response, ends_turn)?;
        Ok((prompt, completion))
    }

    /// The response tokens after an already encoded generation prompt `prompt_ids` of
    /// `history` (see [`Tokenizer::encode_response`]).
    pub fn completion_after(
        &self,
        prompt_ids: &[u32],
        history: &[Message],
        response: &Message,
        ends_turn: bool,
    ) -> Result<Vec<u32>> {
        let mut whole = history.to_vec();
        whole.push(response.clone());
        let full = self.encode_chat(&whole, false)?;
        let Some(rest) = full.ids.strip_prefix(prompt_ids) else {
            let common = full
                .ids
                .iter()
                .zip(prompt_ids)
                .take_while(|(a, b)| a == b)
                .count();
            return Err(Error::TemplateMismatch(format!(
                "the template's rendering of the whole conversation does not start with its \
                 generation prompt (they differ at token {common} of {}): the response cannot be \
                 placed after the prompt exactly",
                prompt_ids.len()
            )));
        };
        let Some(end) = rest.iter().position(|&id| id == self.eot_id) else {
            return Err(Error::TemplateMismatch(
                "the template does not end the response with the end-of-turn token".into(),
            ));
        };
        Ok(rest[..end + usize::from(ends_turn)].to_vec())
    }

    /// Encodes a conversation up to where its last message's text begins (no generation
    /// prompt): the context in which that text is the next thing the model reads. Used to score
    /// feedback as the next user turn. The template text before the message is tokenized as in
    /// [`Tokenizer::encode_chat`]; the message text itself is left out.
    pub fn encode_chat_before_last(&self, messages: &[Message]) -> Result<Vec<u32>> {
        const CUT: &str = "\u{E002}";
        let Some((last, head)) = messages.split_last() else {
            return Err(Error::ChatTemplate("no message to stop before".into()));
        };
        let mut msgs = head.to_vec();
        msgs.push(Message {
            role: last.role.clone(),
            content: CUT.into(),
            reasoning: None,
        });
        let (_, pieces) = self.template.render_pieces(&msgs, false, &self.specials)?;
        let pieces = self.absorb_whitespace(pieces);
        let mut ids = Vec::new();
        for p in pieces {
            match p {
                Piece::Special(id) => ids.push(id),
                Piece::Text(t) => match t.find(CUT) {
                    Some(at) => {
                        if at > 0 {
                            ids.extend(self.encode_stretch(t[..at].to_string())?);
                        }
                        return Ok(ids);
                    }
                    None if t.is_empty() => {}
                    None => ids.extend(self.encode_stretch(t)?),
                },
            }
        }
        Err(Error::ChatTemplate(
            "the chat template dropped the last message's text".into(),
        ))
    }

    /// Removes the whitespace that `lstrip` / `rstrip` added tokens absorb from the text beside
    /// them.
    fn absorb_whitespace(&self, mut pieces: Vec<Piece>) -> Vec<Piece> {
        if self.strip.is_empty() {
            return pieces;
        }
        for i in 0..pieces.len() {
            let Piece::Special(id) = pieces[i] else {
                continue;
            };
            let Some(&(lstrip, rstrip)) = self.strip.get(&id) else {
                continue;
            };
            if lstrip && i > 0 {
                if let Piece::Text(t) = &mut pieces[i - 1] {
                    t.truncate(t.trim_end().len());
                }
            }
            if rstrip {
                if let Some(Piece::Text(t)) = pieces.get_mut(i + 1) {
                    *t = t.trim_start().to_string();
                }
            }
        }
        pieces
    }

    fn encode_stretch(&self, text: String) -> Result<Vec<u32>> {
        if let Ok(cache) = self.stretch_cache.lock() {
            if let Some(ids) = cache.get(&text) {
                return Ok(ids.clone());
            }
        }
        let ids = self.encode_text(&text)?;
        if let Ok(mut cache) = self.stretch_cache.lock() {
            if cache.len() >= STRETCH_CACHE_MAX {
                cache.clear();
            }
            cache.insert(text, ids.clone());
        }
        Ok(ids)
    }

    /// Encodes a response's text on its own, plus the end-of-turn token when the turn ended.
    /// Not what the pipeline scores (that is [`Tokenizer::encode_response`]: the template may
    /// insert tokens or cut the text); kept for length estimates and for the scorer's tests.
    pub fn encode_completion(&self, text: &str, ends_turn: bool) -> Result<Vec<u32>> {
        let mut ids = self.encode_text(text)?;
        if ends_turn {
            ids.push(self.eot_id);
        }
        Ok(ids)
    }

    /// Decodes ids to text (special tokens rendered as their strings).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        let mut run: Vec<u32> = Vec::new();
        for &id in ids {
            if let Some((s, _)) = self.specials.iter().find(|(_, i)| *i == id) {
                out.push_str(&self.decode_run(&run)?);
                run.clear();
                out.push_str(s);
            } else {
                run.push(id);
            }
        }
        out.push_str(&self.decode_run(&run)?);
        Ok(out)
    }

    fn decode_run(&self, ids: &[u32]) -> Result<String> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.text
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The display string of one token (byte-level pieces decoded), for reports.
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_else(|_| format!("<{id}>"))
    }

    /// The id that ends an assistant turn (`<|im_end|>` for ChatML models).
    pub fn eot_id(&self) -> u32 {
        self.eot_id
    }

    /// Ids of the special tokens the template may emit.
    pub fn special_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.specials.iter().map(|(_, id)| *id)
    }

    /// The id of a special token string, if it is one.
    pub fn special_id(&self, s: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(t, _)| t == s)
            .map(|(_, id)| *id)
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// sha256 identifying the tokenizer (vocabulary, merges, pre-tokenizer, specials).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// sha256 of the chat template source.
    pub fn chat_template_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.template.source().as_bytes()))
    }

    /// The chat template.
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Writes `tokenizer.json` (with the special tokens as added tokens, as Hugging Face expects)
    /// and `tokenizer_config.json` (chat template, eos) into `dir`.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let mut full = self.text.clone();
        let added: Vec<tokenizers::AddedToken> = self
            .specials
            .iter()
            .map(|(s, _)| tokenizers::AddedToken::from(s.clone(), true))
            .collect();
        full.add_special_tokens(added)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let path = dir.join("tokenizer.json");
        full.save(&path, true)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let eos = self
            .specials
            .iter()
            .find(|(_, i)| *i == self.eot_id)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        let cfg = serde_json::json!({
            "chat_template": self.template.source(),
            "eos_token": eos,
            "add_bos_token": false,
            "model_max_length": 8192,
        });
        let cfg_path = dir.join("tokenizer_config.json");
        std::fs::write(&cfg_path, cfg.to_string()).map_err(|source| Error::Io {
            action: "writing",
            path: cfg_path,
            source,
        })
    }
}

/// The end-of-turn id: `<|im_end|>` when the vocabulary has it (ChatML), else eos.
fn end_of_turn_id(specials: &[(String, u32)], eos: Option<u32>) -> Option<u32> {
    specials
        .iter()
        .find(|(s, _)| {
            matches!(
                s.as_str(),
                "<|im_end|>" | "<|eot_id|>" | "<end_of_turn>" | "<|end|>"
            )
        })
        .map(|(_, id)| *id)
        .or(eos)
}
