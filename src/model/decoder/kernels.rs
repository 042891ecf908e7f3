//! The host kernels of a block: RoPE rows, RMSNorm, q/k norms, the KV cache and the gated activations.

use super::*;

/// cos/sin for every row's position, computed the way the Hugging Face reference does (f32
/// inverse frequencies times f32 positions, then the attention factor on cos and sin).
pub(super) fn rope_rows(inv_freq: &[f32], factor: f32, positions: &[u32]) -> RopeRows {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in inv_freq {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32 * factor);
            sin.push(angle.sin() as f32 * factor);
        }
    }
    RopeRows { half, cos, sin }
}

/// RMSNorm of `x` in place with weight `w` (statistics in f64).
pub(super) fn rms_norm_slice(x: &mut [f32], w: &[f32], eps: f32) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len().max(1) as f64;
    let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * inv * g;
    }
}

/// Normalises the q and k parts of every fused q/k/v row: per head when the weights are
/// `[head_dim]`, over the whole q (k) width when they are `[heads * head_dim]`.
pub(super) fn qk_norm(qkv: &mut [f32], qn: &[f32], kn: &[f32], shape: &AttentionShape, eps: f32) {
    let d = shape.head_dim;
    let q_width = shape.num_heads * d;
    let k_width = shape.num_kv_heads * d;
    qkv.par_chunks_mut(shape.row_width()).for_each(|r| {
        let (q, rest) = r.split_at_mut(q_width);
        let k = &mut rest[..k_width];
        for (part, w) in [(q, qn), (k, kn)] {
            if w.len() == part.len() {
                rms_norm_slice(part, w, eps);
            } else {
                for head in part.chunks_exact_mut(d) {
                    rms_norm_slice(head, w, eps);
                }
            }
        }
    });
}

/// Keys and values (after RoPE) of one sequence for every layer: generation feeds only the new
/// token each step instead of the whole sequence.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: keys and values, `[len][kv_heads * head_dim]`.
    pub(super) layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub(super) len: usize,
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

    pub(super) fn prefix(&self, layer: usize) -> Option<ExternalPrefix<'_>> {
        self.layers.get(layer).and_then(|(k, v)| {
            (!k.is_empty()).then_some(ExternalPrefix {
                keys: k.as_slice(),
                values: v.as_slice(),
            })
        })
    }

    pub(super) fn append(
        &mut self,
        layer: usize,
        qkv: &[f32],
        seg: &Segment,
        shape: &AttentionShape,
    ) {
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

/// `o = silu(g) * u`, element by element.
#[inline(always)]
pub(super) fn silu_mul(o: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &x), &u) in o.iter_mut().zip(g).zip(u) {
        *o = x / (1.0 + super::super::fastmath::exp(-x)) * u;
    }
}

/// [`gated_activation`] as tensor ops on the tensor's device (candle's SiLU, and its `gelu`,
/// which is the tanh approximation `gelu_pytorch_tanh`).
pub(super) fn gated_activation_tensor(
    gate_up: &Tensor,
    inter: usize,
    activation: Activation,
) -> Result<Tensor> {
    let gate = gate_up.narrow(1, 0, inter)?;
    let up = gate_up.narrow(1, inter, inter)?;
    let act = match activation {
        Activation::Silu => candle_nn::ops::silu(&gate)?,
        Activation::GeluTanh => gate.gelu()?,
    };
    Ok((act * up)?)
}

/// `act(gate) * up` for a fused `[N, 2I]` tensor, returned as `[N, I]`.
pub(super) fn gated_activation(
    gate_up: &Tensor,
    inter: usize,
    activation: Activation,
) -> Result<Tensor> {
    let (n, _) = gate_up.dims2()?;
    let gu = gate_up.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n * inter];
    out.par_chunks_mut(inter)
        .zip(gu.par_chunks(2 * inter))
        .for_each(|(o, row)| {
            let (g, u) = row.split_at(inter);
            match activation {
                Activation::Silu => crate::model::fastmath::avx2!(silu_mul(o, g, u)),
                Activation::GeluTanh => {
                    // gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
                    const C: f32 = 0.797_884_6;
                    for i in 0..inter {
                        let x = g[i];
                        let t = (C * (x + 0.044_715 * x * x * x)).tanh();
                        o[i] = 0.5 * x * (1.0 + t) * u[i];
                    }
                }
            }
        });
    Ok(Tensor::from_vec(out, (n, inter), gate_up.device())?)
}
