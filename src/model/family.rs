//! What each model family is, as data: one row per family, read by both checkpoint loaders
//! (`hf_config.rs` for `config.json`, `gguf_checkpoint.rs` for GGUF metadata) and by the weight
//! loaders. A family's defaults, variations and refusals live in its row, so adding a family
//! or checking one against transformers' `modeling_*.py` means reading one table, not every
//! `match` in the loaders.

use serde::{Deserialize, Serialize};

/// Which family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3.x, SmolLM: pre-norm, SwiGLU, optional biases, RoPE scaling.
    Llama,
    /// Mistral: Llama plus a sliding attention window on every layer.
    Mistral,
    /// Qwen2 / Qwen2.5: biases on the q, k and v projections, optional sliding layers.
    Qwen2,
    /// Qwen3: RMSNorm on each query and key head before RoPE.
    Qwen3,
    /// Gemma 2: (1+w) norms before and after each sub-layer, scaled embeddings, GeGLU,
    /// soft-capped attention and final logits, alternating local/global layers.
    Gemma2,
    /// Gemma 3 (text): Gemma 2 with q/k norms instead of attention soft-capping and separate
    /// RoPE bases for local and global layers.
    Gemma3,
    /// Phi-3 / Phi-4: fused q/k/v and gate/up projections, optional partial rotary dims.
    Phi3,
    /// OLMo 2: norms after each sub-layer (none before) and RMSNorm over the whole q and k.
    Olmo2,
}

/// Placement of the RMSNorms in a decoder block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockNorms {
    /// `x + f(norm(x))` (Llama, Qwen, Mistral, Phi).
    Pre,
    /// `x + norm_post(f(norm_pre(x)))` (Gemma 2/3).
    PreAndPost,
    /// `x + norm(f(x))` (OLMo 2).
    Post,
}

/// The MLP's gating non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`, Gemma).
    GeluTanh,
}

impl Activation {
    /// The `hidden_act` spelling transformers writes for it (for error messages).
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::GeluTanh => "gelu_pytorch_tanh",
        }
    }

    /// Parses a `hidden_act` / `hidden_activation` value; `None` for one not implemented.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Self::Silu),
            "gelu_pytorch_tanh" | "gelu_tanh" => Some(Self::GeluTanh),
            _ => None,
        }
    }
}

/// RMSNorm applied to queries and keys before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QkNorm {
    /// One `[head_dim]` norm applied to every head (Qwen3, Gemma 3).
    PerHead,
    /// One norm over all query heads together and one over all key heads (OLMo 2).
    Whole,
}

/// Which projections carry a bias, and whether `attention_bias` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionBias {
    /// `attention_bias` (default false) sets the q, k, v and output biases together.
    Configurable,
    /// q, k and v always have biases, the output projection never (Qwen2); a config saying
    /// `attention_bias: false` contradicts the family and is refused.
    QkvAlways,
    /// No attention biases; the modeling code ignores `attention_bias` (Phi-3).
    Never,
}

/// Which layers attend through a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sliding {
    /// Not part of the family: a window is refused rather than guessing which layers use it.
    Never,
    /// Every layer, when a window is set. `default_window` applies only when the key is
    /// absent (an explicit `null` switches the window off, as transformers reads it).
    EveryLayer { default_window: Option<usize> },
    /// Off unless `use_sliding_window`; then layers from `max_window_layers` on slide
    /// (Qwen2/3, whose default `max_window_layers` is `first_default`).
    FromLayer { first_default: usize },
    /// Layer `i` slides when `i % period < period - 1`; the window defaults to
    /// `default_window` when absent or null. With `configurable`, `config.json`'s
    /// `sliding_window_pattern` may change the period (Gemma 3); GGUF always may.
    Periodic {
        period: usize,
        configurable: bool,
        default_window: usize,
    },
}

/// One family's facts: everything both loaders need to know that the checkpoint does not say.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub architecture: Architecture,
    /// The canonical name recorded in outputs.
    pub name: &'static str,
    /// `config.json` `model_type` spellings.
    pub model_types: &'static [&'static str],
    /// GGUF `general.architecture` spellings (empty: llama.cpp converts it as another family).
    pub gguf_architectures: &'static [&'static str],
    pub block_norms: BlockNorms,
    /// Q/k norms are implied by the family (neither format carries a key for them).
    pub qk_norm: Option<QkNorm>,
    /// The activation when the config names none.
    pub activation: Activation,
    /// The key the modeling code reads the activation from; the other spelling is a fallback.
    pub activation_key: &'static str,
    /// `1 + w` RMSNorm weights in Hugging Face checkpoints (llama.cpp stores them offset).
    pub norm_weight_offset: f32,
    /// Token embeddings multiplied by `√hidden_size`.
    pub embeddings_scaled: bool,
    /// `tie_word_embeddings` when the config does not say.
    pub tied_embeddings_default: bool,
    /// `head_dim` when absent (`None`: `hidden_size / num_attention_heads`).
    pub head_dim_default: Option<usize>,
    /// transformers refuses `hidden_size % num_attention_heads != 0` even with an explicit
    /// `head_dim`.
    pub heads_must_divide_hidden: bool,
    pub max_position_default: usize,
    pub rms_norm_eps_default: f64,
    pub attention_bias: AttentionBias,
    /// `mlp_bias` is implemented (it is refused elsewhere).
    pub mlp_bias_allowed: bool,
    /// q/k/v and gate/up are stored as single fused projections.
    pub fused_projections: bool,
    /// `partial_rotary_factor` < 1 is implemented.
    pub partial_rotary: bool,
    pub rope_theta_default: f64,
    /// A second RoPE base for sliding layers (`rope_local_base_freq`, its default): the
    /// family keeps one rotary embedding per layer type.
    pub local_rope_theta_default: Option<f64>,
    pub sliding: Sliding,
    /// Gemma's `query_pre_attn_scalar` default: queries scale by its `-1/2` power instead of
    /// `head_dim`'s. `None`: the key is not part of the family.
    pub query_pre_attn_scalar_default: Option<f64>,
    /// Attention and final-logit soft-caps when the keys are absent; `Some` also means the
    /// soft-cap keys are part of the family.
    pub softcap_defaults: Option<(Option<f64>, Option<f64>)>,
    /// llama.cpp's rule for Gemma's query scale (the HF scalar is not in GGUF): models with
    /// this many layers (the 27B ones) scale by `hidden / heads`, others by `head_dim`.
    pub gguf_query_scale_by_hidden_at: Option<usize>,
    /// llama.cpp permutes this family's q/k rows for its interleaved RoPE.
    pub gguf_permuted_qk: bool,
}

const LLAMA: Family = Family {
    architecture: Architecture::Llama,
    name: "llama",
    model_types: &["llama", "smollm", "smollm2"],
    gguf_architectures: &["llama", "smollm", "smollm2"],
    block_norms: BlockNorms::Pre,
    qk_norm: None,
    activation: Activation::Silu,
    activation_key: "hidden_act",
    norm_weight_offset: 0.0,
    embeddings_scaled: false,
    tied_embeddings_default: false,
    head_dim_default: None,
    heads_must_divide_hidden: true,
    max_position_default: 2048,
    rms_norm_eps_default: 1e-6,
    attention_bias: AttentionBias::Configurable,
    mlp_bias_allowed: true,
    fused_projections: false,
    partial_rotary: false,
    rope_theta_default: 10_000.0,
    local_rope_theta_default: None,
    sliding: Sliding::Never,
    query_pre_attn_scalar_default: None,
    softcap_defaults: None,
    gguf_query_scale_by_hidden_at: None,
    gguf_permuted_qk: true,
};

const MISTRAL: Family = Family {
    architecture: Architecture::Mistral,
    name: "mistral",
    model_types: &["mistral"],
    // llama.cpp converts Mistral checkpoints as "llama".
    gguf_architectures: &[],
    heads_must_divide_hidden: false,
    max_position_default: 131_072,
    mlp_bias_allowed: false,
    sliding: Sliding::EveryLayer {
        default_window: Some(4096),
    },
    gguf_permuted_qk: false,
    ..LLAMA
};

const QWEN2: Family = Family {
    architecture: Architecture::Qwen2,
    name: "qwen2",
    model_types: &["qwen2"],
    gguf_architectures: &["qwen2"],
    heads_must_divide_hidden: false,
    max_position_default: 32_768,
    attention_bias: AttentionBias::QkvAlways,
    mlp_bias_allowed: false,
    sliding: Sliding::FromLayer { first_default: 28 },
    gguf_permuted_qk: false,
    ..LLAMA
};

const QWEN3: Family = Family {
    architecture: Architecture::Qwen3,
    name: "qwen3",
    model_types: &["qwen3"],
    gguf_architectures: &["qwen3"],
    qk_norm: Some(QkNorm::PerHead),
    attention_bias: AttentionBias::Configurable,
    ..QWEN2
};

const GEMMA2: Family = Family {
    architecture: Architecture::Gemma2,
    name: "gemma2",
    model_types: &["gemma2"],
    gguf_architectures: &["gemma2"],
    block_norms: BlockNorms::PreAndPost,
    activation: Activation::GeluTanh,
    activation_key: "hidden_activation",
    norm_weight_offset: 1.0,
    embeddings_scaled: true,
    tied_embeddings_default: true,
    head_dim_default: Some(256),
    heads_must_divide_hidden: true,
    max_position_default: 8192,
    sliding: Sliding::Periodic {
        period: 2,
        configurable: false,
        default_window: 4096,
    },
    query_pre_attn_scalar_default: Some(256.0),
    softcap_defaults: Some((Some(50.0), Some(30.0))),
    gguf_query_scale_by_hidden_at: Some(46),
    ..MISTRAL
};

const GEMMA3: Family = Family {
    architecture: Architecture::Gemma3,
    name: "gemma3",
    // "gemma3" in a config.json is the multimodal checkpoint, refused with a hint.
    model_types: &["gemma3_text"],
    gguf_architectures: &["gemma3"],
    qk_norm: Some(QkNorm::PerHead),
    max_position_default: 131_072,
    rope_theta_default: 1_000_000.0,
    local_rope_theta_default: Some(10_000.0),
    sliding: Sliding::Periodic {
        period: 6,
        configurable: true,
        default_window: 4096,
    },
    softcap_defaults: Some((None, None)),
    gguf_query_scale_by_hidden_at: Some(62),
    ..GEMMA2
};

const PHI3: Family = Family {
    architecture: Architecture::Phi3,
    name: "phi3",
    model_types: &["phi3"],
    gguf_architectures: &["phi3"],
    heads_must_divide_hidden: false,
    max_position_default: 4096,
    rms_norm_eps_default: 1e-5,
    attention_bias: AttentionBias::Never,
    mlp_bias_allowed: false,
    fused_projections: true,
    partial_rotary: true,
    sliding: Sliding::EveryLayer {
        default_window: None,
    },
    gguf_permuted_qk: false,
    ..LLAMA
};

const OLMO2: Family = Family {
    architecture: Architecture::Olmo2,
    name: "olmo2",
    model_types: &["olmo2"],
    gguf_architectures: &["olmo2"],
    block_norms: BlockNorms::Post,
    qk_norm: Some(QkNorm::Whole),
    rms_norm_eps_default: 1e-5,
    mlp_bias_allowed: false,
    heads_must_divide_hidden: false,
    gguf_permuted_qk: false,
    ..LLAMA
};

/// Every supported family, in the order error messages list them.
pub static FAMILIES: [Family; 8] = [LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA2, GEMMA3, PHI3, OLMO2];

impl Architecture {
    /// This family's row of [`FAMILIES`].
    pub fn facts(self) -> &'static Family {
        let i = match self {
            Self::Llama => 0,
            Self::Mistral => 1,
            Self::Qwen2 => 2,
            Self::Qwen3 => 3,
            Self::Gemma2 => 4,
            Self::Gemma3 => 5,
            Self::Phi3 => 6,
            Self::Olmo2 => 7,
        };
        &FAMILIES[i]
    }

    /// How the family normalises queries and keys before RoPE (`None`: it does not).
    pub fn qk_norm(self) -> Option<QkNorm> {
        self.facts().qk_norm
    }

    /// Where the RMSNorms sit in a block.
    pub fn block_norms(self) -> BlockNorms {
        self.facts().block_norms
    }

    /// The canonical name recorded in outputs.
    pub fn as_str(self) -> &'static str {
        self.facts().name
    }

    /// The family a `config.json` `model_type` names.
    pub fn from_model_type(name: &str) -> Option<Self> {
        FAMILIES
            .iter()
            .find(|f| f.model_types.contains(&name))
            .map(|f| f.architecture)
    }

    /// The family a GGUF `general.architecture` names.
    pub fn from_gguf_architecture(name: &str) -> Option<Self> {
        FAMILIES
            .iter()
            .find(|f| f.gguf_architectures.contains(&name))
            .map(|f| f.architecture)
    }

    /// The `model_type` names accepted, for error messages.
    pub fn supported_model_types() -> String {
        names(|f| f.model_types.first().copied())
    }

    /// The GGUF architecture names accepted, for error messages.
    pub fn supported_gguf_architectures() -> String {
        names(|f| f.gguf_architectures.first().copied())
    }
}

fn names(pick: impl Fn(&Family) -> Option<&'static str>) -> String {
    FAMILIES
        .iter()
        .filter_map(pick)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_its_own_family() {
        for (i, f) in FAMILIES.iter().enumerate() {
            assert!(std::ptr::eq(f.architecture.facts(), &FAMILIES[i]));
            assert_eq!(f.architecture.as_str(), f.name);
            for t in f.model_types {
                assert_eq!(Architecture::from_model_type(t), Some(f.architecture));
            }
            for t in f.gguf_architectures {
                assert_eq!(
                    Architecture::from_gguf_architecture(t),
                    Some(f.architecture)
                );
            }
        }
    }

    #[test]
    fn the_names_listed_in_errors_match_the_old_lists() {
        assert_eq!(
            Architecture::supported_model_types(),
            "llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3, olmo2"
        );
        assert_eq!(
            Architecture::supported_gguf_architectures(),
            "llama, qwen2, qwen3, gemma2, gemma3, phi3, olmo2"
        );
        assert_eq!(Architecture::from_model_type("gemma3"), None);
        assert_eq!(Architecture::from_gguf_architecture("mistral"), None);
    }
}
