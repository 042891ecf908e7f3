//! The decoder forward pass for llama-family models (and qwen2, which only adds q/k/v biases).
//!
//! Unlike candle-transformers' models, which return logits for the last position only, this
//! forward runs over a *packed* batch of segments and returns the final hidden state of every
//! position. Scoring then applies the LM head only to the rows that predict response tokens.
//! Segments may name a parent segment whose keys/values they attend to first: that is how a
//! shared prompt prefix is computed once and branched into student, teacher and control suffixes.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use rayon::prelude::*;

use super::attention::{packed_causal_attention_with_prefix, AttentionShape, ExternalPrefix};
use super::config::TransformerConfig;
use crate::error::Result;

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
}

impl Linear {
    /// Applies the layer to `x: [N, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self {
            Linear::Dense { w, .. } => x.matmul(&w.t()?)?,
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
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } => bias,
        };
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Weights of one decoder block.
pub struct Block {
    pub attn_norm: Tensor,
    /// Fused q, k, v projection: output columns are `[q | k | v]`.
    pub qkv: Linear,
    pub o: Linear,
    pub mlp_norm: Tensor,
    /// Fused gate and up projections: output columns are `[gate | up]`.
    pub gate_up: Linear,
    pub down: Linear,
}

/// A loaded decoder ready to run.
pub struct Transformer {
    pub config: TransformerConfig,
    /// `[vocab, hidden]` f32, used for the embedding lookup.
    pub embed: Tensor,
    /// LM head (tied to `embed` for SmolLM2).
    pub lm_head: Linear,
    pub final_norm: Tensor,
    pub blocks: Vec<Block>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    rope_max: usize,
    rope_style: RopeStyle,
    device: Device,
}

/// How RoPE pairs the dimensions of a head. Hugging Face checkpoints rotate (i, i + D/2); GGUF
/// llama checkpoints have q/k rows permuted by llama.cpp so that adjacent pairs (2i, 2i+1) rotate.
/// Dense loads undo the permutation (one code path); quantized loads keep it and rotate pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    HalfSplit,
    Interleaved,
}

impl Transformer {
    /// Assembles a transformer and precomputes its RoPE tables.
    pub fn new(
        config: TransformerConfig,
        embed: Tensor,
        lm_head: Linear,
        final_norm: Tensor,
        blocks: Vec<Block>,
        rope_style: RopeStyle,
        device: Device,
    ) -> Self {
        let rope_max = config.max_position_embeddings.clamp(1, 1 << 17);
        let (rope_cos, rope_sin) = rope_tables(config.head_dim, config.rope_theta, rope_max);
        Self {
            config,
            embed,
            lm_head,
            final_norm,
            blocks,
            rope_cos,
            rope_sin,
            rope_max,
            rope_style,
            device,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Longest sequence the RoPE tables cover.
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
        let mut x = self.embed.index_select(&ids, 0)?;
        let shape = AttentionShape {
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        let eps = cfg.rms_norm_eps as f32;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, eps)?;
            let qkv = block.qkv.forward(&h)?;
            let mut qkv = qkv.flatten_all()?.to_vec1::<f32>()?;
            self.apply_rope(&mut qkv, &batch.positions, &shape);
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
            x = (x + block.o.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &block.mlp_norm, eps)?;
            let gu = block.gate_up.forward(&h)?;
            let act = swiglu(&gu, cfg.intermediate_size)?;
            x = (x + block.down.forward(&act)?)?;
        }
        for (cache, seg) in caches.iter_mut().zip(&batch.segments) {
            cache.len += seg.len;
        }
        Ok(candle_nn::ops::rms_norm(&x, &self.final_norm, eps)?)
    }

    /// Applies the LM head to selected hidden rows: `[R, hidden] -> [R, vocab]` logits.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden_rows)
    }

    /// Rotates the q and k parts of a fused `[N, (H + 2 KV) * D]` buffer in place.
    fn apply_rope(&self, qkv: &mut [f32], positions: &[u32], shape: &AttentionShape) {
        let d = shape.head_dim;
        let half = d / 2;
        let row = shape.row_width();
        let rotated_heads = shape.num_heads + shape.num_kv_heads;
        let cos = &self.rope_cos;
        let sin = &self.rope_sin;
        let style = self.rope_style;
        qkv.par_chunks_mut(row)
            .zip(positions.par_iter())
            .for_each(|(r, &pos)| {
                let base = pos as usize * half;
                let c = &cos[base..base + half];
                let s = &sin[base..base + half];
                for head in r[..rotated_heads * d].chunks_exact_mut(d) {
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

/// Keys and values (after RoPE) of one sequence for every layer: generation feeds only the new
/// token each step instead of the whole sequence.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values, `[len][kv_heads * head_dim]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
}

impl KvCache {
    /// Tokens cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the prompt is fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn prefix(&self, layer: usize) -> Option<ExternalPrefix<'_>> {
        self.layers.get(layer).and_then(|(k, v)| {
            (!k.is_empty()).then_some(ExternalPrefix {
                keys: k.as_slice(),
                values: v.as_slice(),
            })
        })
    }

    fn append(&mut self, layer: usize, qkv: &[f32], seg: &Segment, shape: &AttentionShape) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, Default::default);
        }
        let row = shape.row_width();
        let q_width = shape.num_heads * shape.head_dim;
        let kv_width = shape.num_kv_heads * shape.head_dim;
        let (k, v) = &mut self.layers[layer];
        for r in seg.start..seg.start + seg.len {
            let base = r * row + q_width;
            k.extend_from_slice(&qkv[base..base + kv_width]);
            v.extend_from_slice(&qkv[base + kv_width..base + 2 * kv_width]);
        }
    }
}

/// `silu(gate) * up` for a fused `[N, 2I]` tensor, returned as `[N, I]`.
fn swiglu(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    let (n, _) = gate_up.dims2()?;
    let gu = gate_up.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * inter];
    out.par_chunks_mut(inter)
        .zip(gu.par_chunks(2 * inter))
        .for_each(|(o, row)| {
            let (g, u) = row.split_at(inter);
            for i in 0..inter {
                let x = g[i];
                o[i] = x / (1.0 + super::fastmath::exp(-x)) * u[i];
            }
        });
    Ok(Tensor::from_vec(out, (n, inter), gate_up.device())?)
}

/// cos/sin tables `[max_pos][head_dim/2]`, computed the way the Hugging Face reference does
/// (f32 inverse frequencies and f32 angles) so that positions far into a sequence agree.
fn rope_tables(head_dim: usize, theta: f64, max_pos: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect();
    let mut cos = Vec::with_capacity(max_pos * half);
    let mut sin = Vec::with_capacity(max_pos * half);
    for p in 0..max_pos {
        for &f in &inv_freq {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}
