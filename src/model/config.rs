//! Architecture hyper-parameters shared by every decoder we run (llama and qwen2 families).

use serde::{Deserialize, Serialize};

/// Which family a checkpoint belongs to; the families differ only in biases and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama / SmolLM / Mistral-style decoders: no attention biases.
    Llama,
    /// Qwen2 / Qwen2.5: biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    /// Parses the `general.architecture` / `model_type` string of a checkpoint.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" | "smollm" | "smollm2" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// The canonical name recorded in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// Hyper-parameters of a decoder-only transformer with RMSNorm, RoPE, GQA and a SwiGLU MLP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
}

impl TransformerConfig {
    /// Multiply-accumulate FLOPs (2 per MAC) of the transformer body for one token, excluding
    /// attention scores and the LM head; used by the benchmark to report FLOP savings.
    pub fn body_flops_per_token(&self) -> u64 {
        let h = self.hidden_size as u64;
        let kv = (self.num_kv_heads * self.head_dim) as u64;
        let q = (self.num_heads * self.head_dim) as u64;
        let i = self.intermediate_size as u64;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * i;
        2 * per_layer * self.num_layers as u64
    }

    /// FLOPs of the LM head for one scored row.
    pub fn head_flops_per_row(&self) -> u64 {
        2 * (self.hidden_size * self.vocab_size) as u64
    }
}
