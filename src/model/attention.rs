//! Exact causal attention over a packed batch, computed in query blocks.
//!
//! Each segment attends to the keys of its ancestor segments (a shared prefix) and causally to
//! its own. Queries are processed in blocks sized so that a block's score matrix stays bounded
//! (never a full `T x T` per head when `T` is large); every block sees exactly the keys it may
//! attend to, so the result equals dense masked attention up to float rounding.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::decoder::Segment;
use crate::error::Result;

/// Upper bound on the number of f32 scores held for one query block (all heads together).
const MAX_BLOCK_SCORES: usize = 4 << 20;
/// Query rows per block: smaller blocks skip more of the masked upper triangle (at 128 rows a
/// 512-token segment computes 62% of the full score matrix), larger ones amortise op overhead.
const MAX_BLOCK_ROWS: usize = 128;

/// Head layout of the fused `[q | k | v]` rows the attention reads, and the layer's scoring
/// rule (scale, sliding window, soft-cap).
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier on `q·k` (usually `head_dim^-0.5`).
    pub scale: f32,
    /// A query at position `p` sees keys at positions `p - window + 1 ..= p` only.
    pub sliding_window: Option<usize>,
    /// Scores become `cap * tanh(score / cap)` before masking (Gemma 2).
    pub softcap: Option<f32>,
}

impl AttentionShape {
    /// Width of one fused q/k/v row.
    pub fn row_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Query heads sharing one key/value head (grouped-query attention).
    pub fn groups(&self) -> usize {
        self.num_heads / self.num_kv_heads.max(1)
    }
}

/// Keys and values computed earlier for a sequence (generation's KV cache), laid out
/// `[len][kv_heads * head_dim]`, that a segment attends to before its own tokens.
#[derive(Debug, Clone, Copy)]
pub struct ExternalPrefix<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
}

/// The `(start, len)` row ranges of a segment's ancestors, outermost first: the keys it
/// attends to before its own.
pub fn ancestor_ranges(segments: &[Segment], seg: &Segment) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut parent = seg.parent;
    while let Some(pi) = parent {
        let p = &segments[pi];
        ranges.push((p.start, p.len));
        parent = p.parent;
    }
    ranges.reverse();
    ranges
}

/// Computes attention for every segment of a packed batch.
///
/// `qkv` is `[N, (H + 2 KV) * D]` with RoPE already applied; returns `[N, H * D]`.
pub fn packed_causal_attention(
    qkv: &[f32],
    segments: &[Segment],
    shape: &AttentionShape,
    device: &Device,
) -> Result<Vec<f32>> {
    packed_causal_attention_with_prefix(qkv, segments, &[], shape, device)
}

/// [`packed_causal_attention`] where segment `i` first attends to `prefixes[i]` (if present).
pub fn packed_causal_attention_with_prefix(
    qkv: &[f32],
    segments: &[Segment],
    prefixes: &[Option<ExternalPrefix<'_>>],
    shape: &AttentionShape,
    device: &Device,
) -> Result<Vec<f32>> {
    let (h, kvh, d) = (shape.num_heads, shape.num_kv_heads, shape.head_dim);
    let g = shape.groups();
    let row = shape.row_width();
    let n = qkv.len() / row;
    let scale = shape.scale;
    let mut out = vec![0f32; n * h * d];

    let kv_width = kvh * d;
    for (si, seg) in segments.iter().enumerate() {
        if seg.len == 0 {
            continue;
        }
        let external = prefixes.get(si).copied().flatten();
        let external_len = external
            .map(|e| e.keys.len() / kv_width.max(1))
            .unwrap_or(0);
        let mut ranges = ancestor_ranges(segments, seg);
        let prefix_len: usize = external_len + ranges.iter().map(|r| r.1).sum::<usize>();
        ranges.push((seg.start, seg.len));
        let total = prefix_len + seg.len;

        let mut k = vec![0f32; kvh * total * d];
        let mut v = vec![0f32; kvh * total * d];
        for head in 0..kvh {
            let mut j = 0;
            if let Some(e) = external {
                for r in 0..external_len {
                    let src = r * kv_width + head * d;
                    let dst = (head * total + j) * d;
                    k[dst..dst + d].copy_from_slice(&e.keys[src..src + d]);
                    v[dst..dst + d].copy_from_slice(&e.values[src..src + d]);
                    j += 1;
                }
            }
            for &(start, len) in &ranges {
                for r in start..start + len {
                    let src = r * row;
                    let k_off = src + (h + head) * d;
                    let v_off = src + (h + kvh + head) * d;
                    let dst = (head * total + j) * d;
                    k[dst..dst + d].copy_from_slice(&qkv[k_off..k_off + d]);
                    v[dst..dst + d].copy_from_slice(&qkv[v_off..v_off + d]);
                    j += 1;
                }
            }
        }
        let k = Tensor::from_vec(k, (kvh, total, d), device)?;
        let v = Tensor::from_vec(v, (kvh, total, d), device)?;

        let block = (MAX_BLOCK_SCORES / (h * total).max(1)).clamp(16, MAX_BLOCK_ROWS);
        let mut b0 = 0;
        while b0 < seg.len {
            let b1 = (b0 + block).min(seg.len);
            let m = b1 - b0;
            let keys = prefix_len + b1;
            // Queries laid out [kv_head][group][m][d] so one batched matmul covers GQA.
            let mut q = vec![0f32; h * m * d];
            for head in 0..h {
                for i in 0..m {
                    let src = (seg.start + b0 + i) * row + head * d;
                    let dst = (head * m + i) * d;
                    for t in 0..d {
                        q[dst + t] = qkv[src + t] * scale;
                    }
                }
            }
            let q = Tensor::from_vec(q, (kvh, g * m, d), device)?;
            let kb = k.narrow(1, 0, keys)?;
            let vb = v.narrow(1, 0, keys)?;
            let scores = q.matmul(&kb.t()?)?;
            let mut probs = scores.flatten_all()?.to_vec1::<f32>()?;
            // Causal softmax in place: query i (absolute prefix_len + b0 + i) sees keys 0..=that,
            // and within a sliding window only the last `window` of them.
            let (window, softcap) = (shape.sliding_window, shape.softcap);
            probs.par_chunks_mut(keys).enumerate().for_each(|(ri, r)| {
                let i = ri % m;
                let valid = prefix_len + b0 + i + 1;
                let first = window.map_or(0, |w| valid.saturating_sub(w));
                let (live, masked) = r.split_at_mut(valid);
                masked.fill(0.0);
                let (outside, live) = live.split_at_mut(first);
                outside.fill(0.0);
                if let Some(cap) = softcap {
                    for x in live.iter_mut() {
                        *x = cap * (*x / cap).tanh();
                    }
                }
                super::fastmath::softmax_in_place(live);
            });
            let probs = Tensor::from_vec(probs, (kvh, g * m, keys), device)?;
            let o = probs.matmul(&vb)?.flatten_all()?.to_vec1::<f32>()?;
            // o is [kv_head][group][m][d]; head index = kv_head * groups + group.
            for head in 0..h {
                for i in 0..m {
                    let src = (head * m + i) * d;
                    let dst = (seg.start + b0 + i) * h * d + head * d;
                    out[dst..dst + d].copy_from_slice(&o[src..src + d]);
                }
            }
            b0 = b1;
        }
    }
    Ok(out)
}
