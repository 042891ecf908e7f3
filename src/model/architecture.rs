//! The hyper-parameters of every decoder we run.
//!
//! One decoder runs every family (`decoder.rs`); the families differ only in the small, named
//! variations below (norm placement, q/k norms, activation, soft-capping, sliding windows, RoPE
//! variants), whose per-family values are the table in `family.rs`. The loaders (`hf_config`
//! for `config.json`, `gguf_checkpoint.rs` for GGUF metadata) fill this struct from that table
//! and the checkpoint, and refuse any key that would change the math and is not represented
//! here: a teacher signal computed with a silently ignored setting is worse than no signal.

use serde::{Deserialize, Serialize};

pub use super::family::{Activation, Architecture, BlockNorms, QkNorm};

/// How the RoPE inverse frequencies are derived from the base ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (`rope_type: linear`).
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent interpolation (`rope_type: llama3`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN (`rope_type: yarn`), with its attention factor on cos/sin.
    Yarn {
        factor: f64,
        original_max_position_embeddings: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// Per-frequency divisors stored in a GGUF `rope_freqs` tensor (llama.cpp's form of Llama 3).
    FreqFactors(Vec<f32>),
}

/// One rotary embedding: the base, how many dimensions of a head rotate, and the scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    pub theta: f64,
    /// Leading dimensions of each head that rotate (`head_dim * partial_rotary_factor`).
    pub rotary_dim: usize,
    pub scaling: RopeScaling,
}

impl Rope {
    /// Inverse frequencies, one per rotated pair, computed as the Hugging Face reference does.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.rotary_dim as f64;
        let base: Vec<f64> = (0..self.rotary_dim / 2)
            .map(|i| 1.0 / self.theta.powf((2 * i) as f64 / dim))
            .collect();
        let out: Vec<f64> = match &self.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::FreqFactors(factors) => base
                .iter()
                .zip(factors.iter().chain(std::iter::repeat(&1.0)))
                .map(|(f, d)| f / *d as f64)
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: orig,
                beta_fast,
                beta_slow,
                truncate,
                ..
            } => {
                let correction_dim = |rotations: f64| {
                    dim * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0);
                let mut high = high.min(dim - 1.0);
                if low == high {
                    high += 0.001;
                }
                base.iter()
                    .enumerate()
                    .map(|(i, &f)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect()
            }
        };
        out.into_iter().map(|f| f as f32).collect()
    }

    /// Factor applied to cos and sin (YaRN's attention scaling; 1 otherwise).
    pub fn attention_factor(&self) -> f32 {
        match &self.scaling {
            RopeScaling::Yarn {
                attention_factor, ..
            } => *attention_factor as f32,
            _ => 1.0,
        }
    }
}

/// Per-layer attention settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// A query attends to at most this many most recent keys, itself included.
    pub sliding_window: Option<usize>,
    /// Index into [`TransformerConfig::ropes`].
    pub rope: usize,
}

/// Everything that determines a decoder's forward pass.
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
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    /// Biases on the q, k and v projections.
    pub attention_bias: bool,
    /// Bias on the attention output projection.
    pub attention_out_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    pub qk_norm: Option<QkNorm>,
    /// Added to every RMSNorm weight at load time (Gemma's `x * (1 + w)` checkpoints: 1).
    pub norm_weight_offset: f32,
    /// Multiplier on the token embeddings (Gemma: `sqrt(hidden_size)`).
    pub embed_scale: Option<f32>,
    /// Multiplier on `q·k` (`head_dim^-0.5`, Gemma: `query_pre_attn_scalar^-0.5`).
    pub attn_scale: f64,
    /// `cap * tanh(score / cap)` on attention scores (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// `cap * tanh(logit / cap)` on the LM head's output (Gemma 2).
    pub final_softcap: Option<f64>,
    /// The rotary embeddings the layers use (Gemma 3: local and global).
    pub ropes: Vec<Rope>,
    /// One entry per layer.
    pub layers: Vec<LayerAttention>,
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

    /// Checks the shapes agree with each other and every float is usable, so a malformed
    /// config fails at load time with a message instead of panicking (or mis-indexing, or
    /// computing NaN) inside the forward pass. The loaders check each key where they read it,
    /// naming it; this is the backstop for any way a config is built.
    pub fn check(&self) -> Result<(), String> {
        let bounded = [
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE,
            ),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONTEXT,
            ),
        ];
        for (name, v, max) in bounded {
            check_count(name, v, max)?;
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.layers.len() != self.num_layers {
            return Err(format!(
                "{} per-layer attention entries (layer_types) for {} layers",
                self.layers.len(),
                self.num_layers
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!(
                "rms_norm_eps must be a finite number >= 0, got {}",
                self.rms_norm_eps
            ));
        }
        if !(self.attn_scale.is_finite() && self.attn_scale > 0.0) {
            return Err(format!(
                "the attention scale {} is not a positive number (query_pre_attn_scalar / head_dim)",
                self.attn_scale
            ));
        }
        for (name, cap) in [
            ("attn_logit_softcapping", self.attn_softcap),
            ("final_logit_softcapping", self.final_softcap),
        ] {
            if let Some(c) = cap {
                positive(name, c)?;
            }
        }
        if let Some(s) = self.embed_scale {
            positive("the embedding scale", f64::from(s))?;
        }
        for rope in &self.ropes {
            if rope.rotary_dim == 0 || rope.rotary_dim % 2 != 0 || rope.rotary_dim > self.head_dim {
                return Err(format!(
                    "rotary dimension {} does not fit head_dim {} (partial_rotary_factor)",
                    rope.rotary_dim, self.head_dim
                ));
            }
            if !(rope.theta.is_finite() && rope.theta > 1.0) {
                return Err(format!("rope_theta {} is not a usable base", rope.theta));
            }
            // Whatever the scaling's parameters, what reaches the forward must be finite.
            if let Some(f) = rope
                .inv_freq()
                .iter()
                .find(|f| !(f.is_finite() && **f > 0.0))
            {
                return Err(format!(
                    "the RoPE parameters ({:?}) give an inverse frequency of {f}",
                    rope.scaling
                ));
            }
            let a = rope.attention_factor();
            if !(a.is_finite() && a > 0.0) {
                return Err(format!(
                    "the RoPE attention factor {a} is not a positive number"
                ));
            }
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.rope >= self.ropes.len() {
                return Err(format!("layer {i} names a missing rotary embedding"));
            }
            if let Some(w) = l.sliding_window {
                check_count("sliding_window", w, MAX_WINDOW)?;
            }
        }
        Ok(())
    }
}

/// Upper bounds on a config's counts and sizes. Far above any released model, they exist so that
/// a crafted header is refused before anything is allocated from it (a layer count of 10^16
/// used to abort the process with a capacity overflow).
pub const MAX_LAYERS: usize = 1024;
/// Largest `hidden_size` (4 × 65,536).
pub const MAX_HIDDEN: usize = 1 << 18;
/// Largest `intermediate_size` (the MLP width).
pub const MAX_INTERMEDIATE: usize = 1 << 20;
/// Largest number of query (or key/value) heads.
pub const MAX_HEADS: usize = 1 << 12;
/// Largest `head_dim`.
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Largest vocabulary (2^24).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest `max_position_embeddings` (2^24, above the 10M of the longest-context models).
pub const MAX_CONTEXT: usize = 1 << 24;
/// Largest sliding window (positions are u32).
pub const MAX_WINDOW: usize = u32::MAX as usize;

/// A count or size must be positive and within its bound.
pub fn check_count(name: &str, v: usize, max: usize) -> Result<(), String> {
    if v == 0 {
        return Err(format!("{name} must be positive"));
    }
    if v > max {
        return Err(format!(
            "{name} = {v} is beyond the largest supported ({max})"
        ));
    }
    Ok(())
}

/// A float that must be finite and strictly positive (a factor, a cap, a scale).
pub fn positive(name: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{name} must be a finite number > 0, got {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope {
            theta: 500_000.0,
            rotary_dim: 128,
            scaling,
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_frequencies_and_divides_low_ones() {
        let plain = rope(RopeScaling::None).inv_freq();
        let scaled = rope(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        })
        .inv_freq();
        assert_eq!(plain.len(), 64);
        assert_eq!(plain[0], scaled[0]);
        assert!((plain[63] / 8.0 - scaled[63]).abs() < 1e-12);
        // Somewhere in between the smooth interpolation lies strictly between the two.
        assert!(plain
            .iter()
            .zip(&scaled)
            .any(|(p, s)| *s < *p && *s > *p / 8.0));
    }

    #[test]
    fn yarn_attention_factor_is_carried() {
        let r = rope(RopeScaling::Yarn {
            factor: 4.0,
            original_max_position_embeddings: 32.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.1386,
            truncate: true,
        });
        assert!((r.attention_factor() - 1.1386).abs() < 1e-6);
        let f = r.inv_freq();
        let plain = rope(RopeScaling::None).inv_freq();
        assert!((f[63] - plain[63] / 4.0).abs() < 1e-12);
    }
}
