//! The per-position statistics computed where the logits are (a GPU's memory), with tensor ops:
//! only a few values per row come back to the host instead of the full-vocabulary row (0.5 MB
//! per position for a 128k vocabulary), and the reductions run on the device instead of the
//! host's cores.
//!
//! Same quantities as the host path ([`super::logprobs`]): the log-softmax normaliser, the
//! log-probs at given ids, the top-k (teacher and student), the tail mass outside the top-k
//! (summed directly, never as `1 - Σ top`), and the full-vocabulary KL. Reductions run in f32
//! on the device where the host accumulates in f64, so values agree to ~1e-5, not bit for bit
//! (`tests/it/device_stats.rs` holds them to the host path on the CPU backend).
//!
//! Top-k uses only sorts of at most [`SORT_WIDTH`] columns (candle's CUDA arg-sort is one
//! thread block per row): the row is cut into blocks, the k blocks with the largest maxima
//! hold the top k, and the candidates of those blocks are sorted. Ties go to the lower id, as
//! on the host, where the sort is stable (the CPU backend); CUDA's bitonic sort is not stable,
//! so there exact ties (rare in f32 logits) may come back in another order.

use candle_core::{DType, Tensor};

use super::logprobs::kl_topk_tail;
use super::{StudentSide, TokenResult};
use crate::error::Result;

/// Widest row one device sort may handle (candle's CUDA arg-sort runs a row in one block of at
/// most 1024 threads).
pub const SORT_WIDTH: usize = 1024;

/// Whether [`top_k`] can run on the device for rows of `width` columns: the block reduction
/// must shrink the row (k well below the width), else the host path is used.
pub fn device_top_k_supported(width: usize, k: usize) -> bool {
    k <= SORT_WIDTH && (width <= SORT_WIDTH || 4 * k <= width)
}

/// Log-sum-exp of every row of `[R, V]` logits: `[R, 1]`.
pub fn log_normaliser(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(1)?;
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()?;
    Ok((sum + max)?)
}

/// The `k` largest entries of every row of `x` (`[R, N]`, f32), descending: `(ids [R, k] u32,
/// values [R, k])`. Sorts stay within [`SORT_WIDTH`] columns when
/// [`device_top_k_supported`] holds; otherwise one sort spans the row, which only the CPU
/// backend can do (the scorer uses the host path then).
pub fn top_k(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let (rows, n) = x.dims2()?;
    let k = k.min(n);
    let x = x.contiguous()?;
    if n <= SORT_WIDTH || 4 * k > n {
        // Small rows (or a k too close to the row width to reduce): one sort.
        let ids = x.arg_sort_last_dim(false)?.narrow(1, 0, k)?.contiguous()?;
        let vals = x.gather(&ids, 1)?;
        return Ok((ids, vals));
    }
    // Blocks of b columns, b ≈ √(n/k) so that both the block maxima and the candidates shrink.
    let b = ((n as f64 / k as f64).sqrt().ceil() as usize).max(2);
    let nb = n.div_ceil(b);
    let pad = nb * b - n;
    let padded = if pad > 0 {
        let fill = Tensor::full(f32::NEG_INFINITY, (rows, pad), x.device())?;
        Tensor::cat(&[&x, &fill], 1)?
    } else {
        x.clone()
    };
    let blocks = padded.reshape((rows, nb, b))?;
    // The k blocks with the largest maxima hold the k largest entries (ties: lower block
    // first, so a tie between entries goes to the lower id as well).
    let (chosen, _) = top_k(&blocks.max(2)?, k)?;
    // In ascending block order, so the candidates keep the ids' order for tie-breaking.
    let order = chosen.to_dtype(DType::F32)?.arg_sort_last_dim(true)?;
    let chosen = chosen.gather(&order, 1)?;
    let index = chosen
        .unsqueeze(2)?
        .broadcast_as((rows, k, b))?
        .contiguous()?;
    let candidates = blocks.gather(&index, 1)?.reshape((rows, k * b))?;
    let offsets = Tensor::arange(0u32, b as u32, x.device())?.reshape((1, 1, b))?;
    let candidate_ids = chosen
        .affine(b as f64, 0.0)?
        .unsqueeze(2)?
        .broadcast_add(&offsets)?
        .reshape((rows, k * b))?;
    let (pos, vals) = top_k(&candidates, k)?;
    let ids = candidate_ids.gather(&pos, 1)?;
    Ok((ids, vals))
}

/// The statistics of one chunk of `c` response positions from its logits `[R, V]`, rows laid
/// out `[teacher | student | control]` (`c` rows each, then a control row for each of the first
/// `cc` positions: the control's window may end inside the chunk), for the targets of those
/// positions; the host computes only the K-sized KL estimates from what comes back.
pub(super) fn chunk_results(
    logits: &Tensor,
    c: usize,
    cc: usize,
    targets: &[u32],
    k: usize,
    ks: usize,
) -> Result<Vec<TokenResult>> {
    let logits = logits.to_dtype(DType::F32)?;
    let dev = logits.device().clone();
    let lse = log_normaliser(&logits)?;
    let lp = logits.broadcast_sub(&lse)?;
    let teacher = lp.narrow(0, 0, c)?;
    let student = lp.narrow(0, c, c)?;
    let tgt = Tensor::from_slice(targets, (c, 1), &dev)?;
    let (ids, t_top) = top_k(&teacher, k)?;
    let hidden_top = Tensor::full(f32::NEG_INFINITY, (c, k), &dev)?;
    let tail = log_normaliser(&teacher.scatter(&ids, &hidden_top, 1)?)?;
    let kl_full = (teacher.exp()? * (&teacher - &student)?)?.sum_keepdim(1)?;
    let mut floats = vec![
        teacher.gather(&tgt, 1)?,
        student.gather(&tgt, 1)?,
        lse.narrow(0, 0, c)?,
        lse.narrow(0, c, c)?,
        tail,
        kl_full,
        t_top,
        student.gather(&ids, 1)?,
    ];
    // The control's log-probs at the teacher's top-k, for the positions in its window.
    let control = if cc > 0 {
        lp.narrow(0, 2 * c, cc)?
            .gather(&ids.narrow(0, 0, cc)?.contiguous()?, 1)?
            .to_vec2::<f32>()?
    } else {
        Vec::new()
    };
    let mut id_parts = vec![ids];
    if ks > 0 {
        let (s_ids, s_self) = top_k(&student, ks)?;
        floats.push(s_self);
        floats.push(teacher.gather(&s_ids, 1)?);
        id_parts.push(s_ids);
    }
    // One copy back per kind, K values per row.
    let floats = Tensor::cat(&floats, 1)?.to_vec2::<f32>()?;
    let ids = Tensor::cat(&id_parts, 1)?.to_vec2::<u32>()?;
    let f64s = |xs: &[f32]| xs.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let results = floats
        .iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (f, id))| {
            let topk_lp = f64s(&f[6..6 + k]);
            let student_topk = f64s(&f[6 + k..6 + 2 * k]);
            let at = 6 + 2 * k;
            let control_kl = control.get(i).map(|ctl| kl_topk_tail(&topk_lp, &f64s(ctl)));
            let student_side = if ks > 0 {
                StudentSide {
                    ids: id[k..k + ks].to_vec(),
                    student: f64s(&f[at..at + ks]),
                    teacher: f64s(&f[at + ks..at + 2 * ks]),
                }
            } else {
                StudentSide::default()
            };
            let tail = f64::from(f[4]);
            TokenResult {
                teacher: f64::from(f[0]),
                student: f64::from(f[1]),
                lse_t: f64::from(f[2]),
                lse_s: f64::from(f[3]),
                // The host path's clamps: below 1 (a top-k holding everything still leaves a
                // sliver), finite when the tail underflows.
                tail: if tail.is_finite() {
                    tail.clamp(-1e4, -1e-7)
                } else {
                    -1e4
                },
                kl_full: f64::from(f[5]),
                kl: kl_topk_tail(&topk_lp, &student_topk),
                topk_ids: id[..k].to_vec(),
                topk_lp,
                student_topk,
                student_side,
                control_kl,
            }
        })
        .collect();
    Ok(results)
}

/// `log p(target)` of every row of `[R, V]` logits: `R` values back, not `R × V`.
pub(super) fn target_logprobs(logits: &Tensor, targets: &[u32]) -> Result<Vec<f64>> {
    let logits = logits.to_dtype(DType::F32)?;
    let tgt = Tensor::from_slice(targets, (targets.len(), 1), logits.device())?;
    let lp = logits
        .gather(&tgt, 1)?
        .broadcast_sub(&log_normaliser(&logits)?)?;
    Ok(lp
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}
