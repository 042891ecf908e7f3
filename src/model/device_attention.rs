//! The attention of one layer with tensor ops where the q/k/v rows are (a GPU's memory): q/k
//! norms, RoPE, and exact causal attention over a packed batch with parent segments, without
//! the host round trip of [`super::attention`] (which copies q/k/v to host slices every layer:
//! fine on a CPU, where host memory is the device's, a PCIe copy per layer on a GPU).
//!
//! Same math as the host path, op for op where it matters (q scaled before `q·k`, soft-cap,
//! masked keys excluded): masked scores are `-inf` before the softmax instead of skipped, so
//! they add exact zeros. The softmax is candle's (`softmax_last_dim`), whose `exp` differs from
//! the host's in the last bits; `tests/it/families.rs` holds this path (run on the CPU backend)
//! to the host path on every family.

use candle_core::{Device, Tensor};

use super::attention::{ancestor_ranges, AttentionShape};
use super::decoder::{RopeStyle, Segment};
use crate::error::Result;

/// Upper bound on the scores held for one query block (all heads): 256 MiB of f32.
const MAX_BLOCK_SCORES: usize = 64 << 20;

/// cos and sin of every row of a batch for one rotary embedding, on the device: `[N, half]`.
pub struct DeviceRope {
    pub cos: Tensor,
    pub sin: Tensor,
    pub half: usize,
}

impl DeviceRope {
    /// Uploads host tables of `n × half` values.
    pub fn new(cos: &[f32], sin: &[f32], half: usize, device: &Device) -> Result<Self> {
        let n = cos.len() / half.max(1);
        Ok(Self {
            cos: Tensor::from_slice(cos, (n, half), device)?,
            sin: Tensor::from_slice(sin, (n, half), device)?,
            half,
        })
    }
}

/// q/k norm weights of a layer, on the device: per head (`[head_dim]`) or over the whole
/// projection (`[heads * head_dim]`).
pub struct DeviceQkNorm {
    pub q: Tensor,
    pub k: Tensor,
}

/// RMSNorm of the rows of `x: [N, width]` by `w`, per head when `w` is one head wide.
fn rms(x: &Tensor, w: &Tensor, head_dim: usize, eps: f32) -> Result<Tensor> {
    let (n, width) = x.dims2()?;
    if w.dims1()? == width {
        return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)?);
    }
    let heads = x.contiguous()?.reshape((n * width / head_dim, head_dim))?;
    Ok(candle_nn::ops::rms_norm(&heads, w, eps)?.reshape((n, width))?)
}

/// Rotates the first `2 * half` dimensions of every head of `x: [N, heads, D]`.
fn rope(x: &Tensor, r: &DeviceRope, style: RopeStyle) -> Result<Tensor> {
    let (n, heads, d) = x.dims3()?;
    let half = r.half;
    let cos = r.cos.unsqueeze(1)?;
    let sin = r.sin.unsqueeze(1)?;
    let rot = x.narrow(2, 0, 2 * half)?;
    let rotated = match style {
        RopeStyle::HalfSplit => {
            let x1 = rot.narrow(2, 0, half)?;
            let x2 = rot.narrow(2, half, half)?;
            let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Tensor::cat(&[a, b], 2)?
        }
        RopeStyle::Interleaved => {
            let pairs = rot.contiguous()?.reshape((n, heads, half, 2))?;
            let x1 = pairs.narrow(3, 0, 1)?.squeeze(3)?;
            let x2 = pairs.narrow(3, 1, 1)?.squeeze(3)?;
            let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Tensor::stack(&[a, b], 3)?.reshape((n, heads, 2 * half))?
        }
    };
    if 2 * half == d {
        Ok(rotated)
    } else {
        Ok(Tensor::cat(
            &[rotated, x.narrow(2, 2 * half, d - 2 * half)?],
            2,
        )?)
    }
}

/// Attention of one layer: `qkv` is the fused projection `[N, (H + 2 KV) * D]` before norms
/// and RoPE; returns `[N, H * D]`.
pub fn attention(
    qkv: &Tensor,
    norm: Option<&DeviceQkNorm>,
    eps: f32,
    rope_rows: &DeviceRope,
    style: RopeStyle,
    segments: &[Segment],
    shape: &AttentionShape,
) -> Result<Tensor> {
    let (h, kvh, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let g = shape.groups();
    let n = qkv.dim(0)?;
    let dev = qkv.device().clone();
    let mut q = qkv.narrow(1, 0, h * d)?;
    let mut k = qkv.narrow(1, h * d, kvh * d)?;
    let v = qkv
        .narrow(1, (h + kvh) * d, kvh * d)?
        .reshape((n, kvh, d))?;
    if let Some(nw) = norm {
        q = rms(&q, &nw.q, d, eps)?;
        k = rms(&k, &nw.k, d, eps)?;
    }
    let q = rope(&q.reshape((n, h, d))?, rope_rows, style)?;
    let k = rope(&k.reshape((n, kvh, d))?, rope_rows, style)?;
    let q = (q * f64::from(shape.scale))?;

    let mut outs = Vec::with_capacity(segments.len());
    let mut next_row = 0;
    for seg in segments {
        if seg.len == 0 {
            continue;
        }
        if seg.start != next_row {
            return Err(crate::error::Error::Request {
                id: None,
                message: format!(
                    "packed batch: segment at row {} where row {next_row} was expected",
                    seg.start
                ),
            });
        }
        next_row += seg.len;
        // Key rows: ancestors first (outermost first), then the segment itself.
        let mut ranges = ancestor_ranges(segments, seg);
        ranges.push((seg.start, seg.len));
        let rows: Vec<u32> = ranges
            .iter()
            .flat_map(|&(s, l)| (s as u32)..(s + l) as u32)
            .collect();
        let total = rows.len();
        let prefix_len = total - seg.len;
        let idx = Tensor::from_vec(rows, total, &dev)?;
        // [KV, total, D]
        let keys = k.index_select(&idx, 0)?.transpose(0, 1)?.contiguous()?;
        let values = v.index_select(&idx, 0)?.transpose(0, 1)?.contiguous()?;
        let block = (MAX_BLOCK_SCORES / (h * total).max(1)).clamp(16, seg.len.max(16));
        let mut b0 = 0;
        while b0 < seg.len {
            let b1 = (b0 + block).min(seg.len);
            let m = b1 - b0;
            let visible = prefix_len + b1;
            // Queries [KV, G * m, D]: head = kv_head * G + group.
            let qb = q
                .narrow(0, seg.start + b0, m)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kvh, g * m, d))?;
            let kb = keys.narrow(1, 0, visible)?;
            let vb = values.narrow(1, 0, visible)?;
            let mut scores = qb.matmul(&kb.t()?)?;
            if let Some(cap) = shape.softcap {
                scores = ((scores / f64::from(cap))?.tanh()? * f64::from(cap))?;
            }
            let mut mask = vec![f32::NEG_INFINITY; m * visible];
            for i in 0..m {
                let valid = prefix_len + b0 + i + 1;
                let first = shape.sliding_window.map_or(0, |w| valid.saturating_sub(w));
                mask[i * visible + first..i * visible + valid].fill(0.0);
            }
            let mask = Tensor::from_vec(mask, (m, visible), &dev)?;
            let scores = scores
                .reshape((kvh, g, m, visible))?
                .broadcast_add(&mask)?
                .reshape((kvh, g * m, visible))?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = probs
                .matmul(&vb)?
                .reshape((h, m, d))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((m, h * d))?;
            outs.push(o);
            b0 = b1;
        }
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Whether a forward on `device` uses this path: any device but the CPU, where the host path
/// is the device path and measured faster.
pub fn default_for(device: &Device) -> bool {
    !device.is_cpu()
}
