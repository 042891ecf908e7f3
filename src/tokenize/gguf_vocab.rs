//! Building a `tokenizers` BPE tokenizer from GGUF `tokenizer.ggml.*` metadata.
//!
//! candle's own `TokenizerFromGguf` does not know `pre = "smollm"` and falls back to a ByteLevel
//! pre-tokenizer with `add_prefix_space = true`, which puts a spurious space before text
//! (`Hello` becomes `ĠHello`). Here each known `pre` value maps to the pre-tokenizer of the
//! original `tokenizer.json`; an unknown one is an error rather than a silent mis-tokenization.

use sha2::{Digest, Sha256};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// GGUF token type of control tokens (`<|im_start|>` and friends).
const TOKEN_TYPE_CONTROL: u32 = 3;
/// GGUF token type of user-defined tokens, also matched only where the template emits them.
const TOKEN_TYPE_USER_DEFINED: u32 = 4;

const REGEX_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const REGEX_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Everything the tokenizer needs from the GGUF metadata.
pub struct GgufVocab {
    pub tokenizer: tokenizers::Tokenizer,
    pub tokens: Vec<String>,
    /// Special token strings and ids, longest string first.
    pub specials: Vec<(String, u32)>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub fingerprint: String,
}

fn string_array(gguf: &GgufFile, key: &str) -> Result<Vec<String>> {
    let arr = gguf
        .get(key)?
        .to_vec()
        .map_err(|e| Error::Tokenizer(format!("{key}: {e}")))?;
    arr.iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| Error::Tokenizer(format!("{key}: {e}")))
        })
        .collect()
}

fn opt_u32(gguf: &GgufFile, key: &str) -> Option<u32> {
    gguf.metadata().get(key).and_then(|v| {
        v.to_u32()
            .ok()
            .or_else(|| v.to_i32().ok().map(|x| x as u32))
            .or_else(|| v.to_u64().ok().map(|x| x as u32))
    })
}

fn pre_tokenizer(pre: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .into())
    };
    Ok(match pre {
        // SmolLM: GPT-2 byte-level without a prefix space. The vocabulary has no multi-digit
        // merges, so digits come out one per token anyway. The original tokenizer.json also runs
        // a Digits(individual) split first, which differs only for whitespace right before a
        // digit ("\n\n  1"); the reference implementation (transformers reading this GGUF) does
        // not, and our fixtures follow the reference.
        "smollm" | "gpt2" | "default" | "gpt-2" => (ByteLevel::new(false, true, true).into(), false),
        // StarCoder-style vocabularies: individual digits first, as their tokenizer.json does.
        "starcoder" | "refact" => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "qwen2" => (
            Sequence::new(vec![split(REGEX_QWEN2)?, ByteLevel::new(false, false, false).into()])
                .into(),
            true,
        ),
        "llama3" | "llama-bpe" | "smaug-bpe" => (
            Sequence::new(vec![split(REGEX_LLAMA3)?, ByteLevel::new(false, true, false).into()])
                .into(),
            false,
        ),
        other => {
            return Err(Error::Tokenizer(format!(
                "unsupported tokenizer.ggml.pre '{other}' (supported: smollm, gpt2, qwen2, llama-bpe); \
                 use a safetensors directory with tokenizer.json instead"
            )))
        }
    })
}

/// Reads the vocabulary, merges and special tokens and builds the plain-text tokenizer.
pub fn from_gguf(gguf: &GgufFile) -> Result<GgufVocab> {
    let model = gguf.get_str("tokenizer.ggml.model").unwrap_or("gpt2");
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "unsupported tokenizer.ggml.model '{model}' (only byte-level BPE 'gpt2' is supported)"
        )));
    }
    let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
    let merges_raw = string_array(gguf, "tokenizer.ggml.merges")?;
    let merges = merges_raw
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("invalid merge '{m}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let types: Vec<u32> = match gguf.metadata().get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .iter()
            .map(|t| {
                t.to_i32()
                    .map(|x| x as u32)
                    .or_else(|_| t.to_u32())
                    .unwrap_or(1)
            })
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("gpt2");
    let (pre_tok, nfc) = pre_tokenizer(pre)?;
    if nfc {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
    }
    tokenizer.with_pre_tokenizer(Some(pre_tok));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let mut specials: Vec<(String, u32)> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(i, (t, _))| (t.clone(), i as u32))
        .filter(|(t, _)| !t.is_empty())
        .collect();
    specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update(b"\0pre\0");
    h.update(pre.as_bytes());
    for t in &tokens {
        h.update(b"\0");
        h.update(t.as_bytes());
    }
    h.update(b"\0merges");
    for m in &merges_raw {
        h.update(b"\0");
        h.update(m.as_bytes());
    }
    for ty in &types {
        h.update(ty.to_le_bytes());
    }
    Ok(GgufVocab {
        tokenizer,
        tokens,
        specials,
        bos_id: opt_u32(gguf, "tokenizer.ggml.bos_token_id"),
        eos_id: opt_u32(gguf, "tokenizer.ggml.eos_token_id"),
        fingerprint: hex::encode(h.finalize()),
    })
}
