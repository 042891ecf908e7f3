//! The decoder forward pass shared by every family: the variations (norm placement, q/k norms,
//! activation, soft-capping, sliding windows, RoPE variants) are fields of [`TransformerConfig`].
//!
//! Unlike candle-transformers' models, which return logits for the last position only, this
//! forward runs over a *packed* batch of segments and returns the final hidden state of every
//! position. Scoring then applies the LM head only to the rows that predict response tokens.
//! Segments may name a parent segment whose keys/values they attend to first: that is how a
//! shared prompt prefix is computed once and branched into student, teacher and control suffixes.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use rayon::prelude::*;

use super::architecture::{Activation, TransformerConfig};
use super::attention::{packed_causal_attention_with_prefix, AttentionShape, ExternalPrefix};
use super::device_attention::{DeviceQkNorm, DeviceRope};
use crate::error::Result;

mod kernels;
pub use kernels::*;

/// One contiguous run of tokens in a packed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First row of this segment in the packed batch.
    pub start: usize,
    /// Number of tokens.
    pub len: usize,
    /// Segment (index into the batch's segment list) whose tokens logically precede this one.
    /// Its keys/values are attended to in full; it must appear earlier in the list.
    pub parent: Option<usize>,
}

/// Several independent (or prefix-sharing) sequences laid end to end, so that every linear
/// layer runs as one large matrix multiply with no padding.
#[derive(Debug, Clone, Default)]
pub struct PackedBatch {
    pub tokens: Vec<u32>,
    /// Absolute position of each token in its logical sequence (RoPE).
    pub positions: Vec<u32>,
    pub segments: Vec<Segment>,
}

impl PackedBatch {
    /// Appends a segment of `tokens` whose first token sits at logical position `first_position`.
    pub fn push_segment(
        &mut self,
        tokens: &[u32],
        first_position: usize,
        parent: Option<usize>,
    ) -> usize {
        let start = self.tokens.len();
        self.tokens.extend_from_slice(tokens);
        self.positions
            .extend((0..tokens.len()).map(|i| (first_position + i) as u32));
        self.segments.push(Segment {
            start,
            len: tokens.len(),
            parent,
        });
        self.segments.len() - 1
    }

    /// Total number of token rows.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A linear layer, either dense f32 (exact) or candle's quantized matmul over the GGUF blocks.
pub enum Linear {
    /// `w` is `[out, in]` (the checkpoint layout); multiplying by its transposed view is the
    /// fastest gemm path measured here (and lets the tied LM head share the embedding matrix).
    Dense { w: Tensor, bias: Option<Tensor> },
    /// One or more quantized weights whose outputs are concatenated (fused q/k/v, gate/up).
    Quantized {
        parts: Vec<QMatMul>,
        bias: Option<Tensor>,
    },
    /// A bf16 weight packed for the AVX512_BF16 kernel ([`super::bf16_gemm`]): what the bf16
    /// mode uses on CPUs that have it.
    PackedBf16 {
        w: super::bf16_gemm::PackedBf16,
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// Applies the layer to `x: [N, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self {
            Linear::Dense { w, .. } if w.dtype() == DType::F32 => x.matmul(&w.t()?)?,
            // Reduced-precision weights: the input is rounded to their dtype, the product comes
            // back as f32 for the host-side kernels.
            Linear::Dense { w, .. } => x
                .to_dtype(w.dtype())?
                .matmul(&w.t()?)?
                .to_dtype(DType::F32)?,
            Linear::PackedBf16 { w, .. } => w.matmul_t(x)?,
            Linear::Quantized { parts, .. } => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                if outs.len() == 1 {
                    outs.into_iter()
                        .next()
                        .ok_or_else(|| candle_core::Error::Msg("empty".into()))?
                } else {
                    Tensor::cat(&outs, 1)?
                }
            }
        };
        let bias = match self {
            Linear::Dense { bias, .. }
            | Linear::Quantized { bias, .. }
            | Linear::PackedBf16 { bias, .. } => bias,
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Weights of one decoder block. Which norms are present follows the family's
/// [`BlockNorms`]; the loaders check that, so the forward never guesses.
pub struct Block {
    /// Norm before attention (absent in post-norm blocks).
    pub attn_norm: Option<Tensor>,
    /// Fused q, k, v projection: output columns are `[q | k | v]`.
    pub qkv: Linear,
    /// Norms on q and k before RoPE (`[head_dim]` per head, or the whole q / k width).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub o: Linear,
    /// Norm on the attention output before the residual add (Gemma, OLMo 2).
    pub post_attn_norm: Option<Tensor>,
    /// Norm before the MLP (absent in post-norm blocks).
    pub mlp_norm: Option<Tensor>,
    /// Fused gate and up projections: output columns are `[gate | up]`.
    pub gate_up: Linear,
    pub down: Linear,
    /// Norm on the MLP output before the residual add (Gemma, OLMo 2).
    pub post_mlp_norm: Option<Tensor>,
}

/// A loaded decoder ready to run.
pub struct Transformer {
    pub config: TransformerConfig,
    /// `[vocab, hidden]` f32, used for the embedding lookup.
    pub embed: Tensor,
    /// LM head (tied to `embed` when the checkpoint says so).
    pub lm_head: Linear,
    pub final_norm: Tensor,
    pub blocks: Vec<Block>,
    /// Per rotary embedding: inverse frequencies and the cos/sin multiplier.
    rope_freqs: Vec<(Vec<f32>, f32)>,
    rope_max: usize,
    rope_style: RopeStyle,
    device: Device,
    /// `None`: attention on the device path when the device is not the CPU.
    device_attention: Option<bool>,
}

/// How RoPE pairs the dimensions of a head. Hugging Face checkpoints rotate (i, i + D/2); GGUF
/// llama checkpoints have q/k rows permuted by llama.cpp so that adjacent pairs (2i, 2i+1) rotate.
/// Dense loads undo the permutation (one code path); quantized loads keep it and rotate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    HalfSplit,
    Interleaved,
}

/// Longest sequence a model is run on, whatever its config claims (positions are u32 and the
/// per-batch cos/sin tables are built from them).
const MAX_POSITIONS: usize = 1 << 20;

/// cos and sin of every rotated pair at every row of a batch, for one rotary embedding.
struct RopeRows {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Transformer {
    /// Assembles a transformer from its config and weights.
    pub fn new(
        config: TransformerConfig,
        embed: Tensor,
        lm_head: Linear,
        final_norm: Tensor,
        blocks: Vec<Block>,
        rope_style: RopeStyle,
        device: Device,
    ) -> Self {
        let rope_max = config.max_position_embeddings.clamp(1, MAX_POSITIONS);
        let rope_freqs = config
            .ropes
            .iter()
            .map(|r| (r.inv_freq(), r.attention_factor()))
            .collect();
        Self {
            config,
            embed,
            lm_head,
            final_norm,
            blocks,
            rope_freqs,
            rope_max,
            rope_style,
            device,
            device_attention: None,
        }
    }

    /// Casts the dense weights (projections, LM head, embedding table) to the mode's dtype.
    /// Norms and biases stay f32. A no-op for f32 and quantized modes.
    pub fn with_compute(mut self, mode: super::ComputeMode) -> Result<Self> {
        let Some(dtype) = mode.weight_dtype().filter(|d| *d != DType::F32) else {
            return Ok(self);
        };
        // bf16 on a CPU with AVX512_BF16: weights packed for the kernel instead of a bf16
        // tensor for candle's (slower) bf16 matmul.
        let pack = dtype == DType::BF16 && self.device.is_cpu() && super::bf16_gemm::available();
        let cast = |l: &mut Linear| -> Result<()> {
            if let Linear::Dense { w, bias } = l {
                if pack {
                    *l = Linear::PackedBf16 {
                        w: super::bf16_gemm::PackedBf16::from_tensor(w)?,
                        bias: bias.take(),
                    };
                } else {
                    *w = w.to_dtype(dtype)?;
                }
            }
            Ok(())
        };
        for b in &mut self.blocks {
            cast(&mut b.qkv)?;
            cast(&mut b.o)?;
            cast(&mut b.gate_up)?;
            cast(&mut b.down)?;
        }
        self.embed = self.embed.to_dtype(dtype)?;
        match (&mut self.lm_head, self.config.tie_word_embeddings) {
            // The tied head shares the cast table instead of holding a second copy (packed for
            // the bf16 kernel, it needs its own layout).
            (Linear::Dense { w, .. }, true) if !pack => *w = self.embed.clone(),
            (head, _) => cast(head)?,
        }
        Ok(self)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Longest sequence the model accepts (its `max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.rope_max
    }

    /// Runs every block over the packed batch and returns the final-normed hidden states,
    /// `[N, hidden]`, one row per packed token.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> Result<Tensor> {
        self.forward_inner(batch, &mut [])
    }

    /// Generation step: segment `i` of `batch` continues the sequence cached in `caches[i]`
    /// (its positions must start at `caches[i].len()`, and it may have no parent). The new keys
    /// and values are appended to the caches.
    pub fn forward_cached(&self, batch: &PackedBatch, caches: &mut [KvCache]) -> Result<Tensor> {
        if caches.len() != batch.segments.len() || batch.segments.iter().any(|s| s.parent.is_some())
        {
            return Err(crate::error::Error::Request {
                id: None,
                message: "forward_cached needs one cache per segment and no parent segments".into(),
            });
        }
        self.forward_inner(batch, caches)
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            x,
            w,
            self.config.rms_norm_eps as f32,
        )?)
    }

    fn forward_inner(&self, batch: &PackedBatch, caches: &mut [KvCache]) -> Result<Tensor> {
        let cfg = &self.config;
        let n = batch.len();
        if n == 0 {
            return Ok(Tensor::zeros(
                (0, cfg.hidden_size),
                DType::F32,
                &self.device,
            )?);
        }
        if let Some(&p) = batch.positions.iter().max() {
            if p as usize >= self.rope_max {
                return Err(crate::error::Error::Request {
                    id: None,
                    message: format!(
                        "sequence position {p} exceeds the model's maximum of {}",
                        self.rope_max
                    ),
                });
            }
        }
        let ids = Tensor::from_slice(&batch.tokens, n, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?.to_dtype(DType::F32)?;
        if let Some(scale) = cfg.embed_scale {
            x = (x * scale as f64)?;
        }
        let rope_rows: Vec<RopeRows> = self
            .rope_freqs
            .iter()
            .map(|(inv_freq, factor)| rope_rows(inv_freq, *factor, &batch.positions))
            .collect();
        let eps = cfg.rms_norm_eps as f32;
        // On a GPU (or when asked) attention runs on the device; generation's KV cache is host
        // memory, so a cached forward keeps the host path.
        let on_device = caches.is_empty()
            && self
                .device_attention
                .unwrap_or_else(|| super::device_attention::default_for(&self.device));
        let device_rope = if on_device {
            rope_rows
                .iter()
                .map(|r| DeviceRope::new(&r.cos, &r.sin, r.half, &self.device))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let spec = &cfg.layers[layer];
            let shape = AttentionShape {
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: cfg.head_dim,
                scale: cfg.attn_scale as f32,
                sliding_window: spec.sliding_window,
                softcap: cfg.attn_softcap.map(|c| c as f32),
            };
            let h = match &block.attn_norm {
                Some(w) => self.norm(&x, w)?,
                None => x.clone(),
            };
            let qkv = block.qkv.forward(&h)?;
            if on_device {
                let norm = match (&block.q_norm, &block.k_norm) {
                    (Some(qn), Some(kn)) => Some(DeviceQkNorm {
                        q: Tensor::from_slice(qn, qn.len(), &self.device)?,
                        k: Tensor::from_slice(kn, kn.len(), &self.device)?,
                    }),
                    _ => None,
                };
                let attn = super::device_attention::attention(
                    &qkv,
                    norm.as_ref(),
                    eps,
                    &device_rope[spec.rope],
                    self.rope_style,
                    &batch.segments,
                    &shape,
                )?;
                x = self.finish_block(block, x, &attn, true)?;
                continue;
            }
            let mut qkv = qkv.flatten_all()?.to_vec1::<f32>()?;
            if let (Some(qn), Some(kn)) = (&block.q_norm, &block.k_norm) {
                qk_norm(&mut qkv, qn, kn, &shape, eps);
            }
            self.apply_rope(&mut qkv, &rope_rows[spec.rope], &shape);
            let prefixes: Vec<Option<ExternalPrefix<'_>>> =
                caches.iter().map(|c| c.prefix(layer)).collect();
            let attn = packed_causal_attention_with_prefix(
                &qkv,
                &batch.segments,
                &prefixes,
                &shape,
                &self.device,
            )?;
            drop(prefixes);
            for (cache, seg) in caches.iter_mut().zip(&batch.segments) {
                cache.append(layer, &qkv, seg, &shape);
            }
            let attn = Tensor::from_vec(attn, (n, cfg.num_heads * cfg.head_dim), &self.device)?;
            x = self.finish_block(block, x, &attn, false)?;
        }
        for (cache, seg) in caches.iter_mut().zip(&batch.segments) {
            cache.len += seg.len;
        }
        self.norm(&x, &self.final_norm)
    }

    /// The rest of a block after attention: output projection, residual, MLP, residual.
    /// `on_device`: the gated activation runs as tensor ops (no host round trip on a GPU).
    fn finish_block(
        &self,
        block: &Block,
        x: Tensor,
        attn: &Tensor,
        on_device: bool,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let mut a = block.o.forward(attn)?;
        if let Some(w) = &block.post_attn_norm {
            a = self.norm(&a, w)?;
        }
        let x = (x + a)?;
        let h = match &block.mlp_norm {
            Some(w) => self.norm(&x, w)?,
            None => x.clone(),
        };
        let gu = block.gate_up.forward(&h)?;
        let act = if on_device {
            gated_activation_tensor(&gu, cfg.intermediate_size, cfg.activation)?
        } else {
            gated_activation(&gu, cfg.intermediate_size, cfg.activation)?
        };
        let mut m = block.down.forward(&act)?;
        if let Some(w) = &block.post_mlp_norm {
            m = self.norm(&m, w)?;
        }
        Ok((x + m)?)
    }

    /// Forces attention on the device path (`Some(true)`), the host path (`Some(false)`), or
    /// leaves the choice to the device (`None`: device path on a GPU). Tests run the device path
    /// on the CPU backend against the host one.
    pub fn with_device_attention(mut self, choice: Option<bool>) -> Self {
        self.device_attention = choice;
        self
    }

    /// Applies the LM head (and the final soft-cap, if any) to selected hidden rows:
    /// `[R, hidden] -> [R, vocab]` logits.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden_rows)?;
        Ok(match self.config.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// Rotates the q and k parts of a fused `[N, (H + 2 KV) * D]` buffer in place (the first
    /// `rotary_dim` dimensions of each head; the rest pass through).
    fn apply_rope(&self, qkv: &mut [f32], rows: &RopeRows, shape: &AttentionShape) {
        let d = shape.head_dim;
        let half = rows.half;
        let row = shape.row_width();
        let rotated_heads = shape.num_heads + shape.num_kv_heads;
        let style = self.rope_style;
        qkv.par_chunks_mut(row).enumerate().for_each(|(ri, r)| {
            let c = &rows.cos[ri * half..(ri + 1) * half];
            let s = &rows.sin[ri * half..(ri + 1) * half];
            for head in r[..rotated_heads * d].chunks_exact_mut(d) {
                let head = &mut head[..2 * half];
                match style {
                    RopeStyle::HalfSplit => {
                        let (a, b) = head.split_at_mut(half);
                        for i in 0..half {
                            let (x1, x2) = (a[i], b[i]);
                            a[i] = x1 * c[i] - x2 * s[i];
                            b[i] = x2 * c[i] + x1 * s[i];
                        }
                    }
                    RopeStyle::Interleaved => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (x1, x2) = (pair[0], pair[1]);
                            pair[0] = x1 * c[i] - x2 * s[i];
                            pair[1] = x2 * c[i] + x1 * s[i];
                        }
                    }
                }
            }
        });
    }
}
