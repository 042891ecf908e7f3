//! bf16 matrix multiply on CPUs with AVX512_BF16 (`vdpbf16ps`: two bf16 products summed into
//! each f32 lane per instruction, twice the multiply-adds of an f32 FMA). candle's CPU bf16
//! matmul converts to f32 inside `gemm` and ran at half hindsight's f32 speed; this kernel is
//! what makes `--compute bf16` pay on such CPUs (Intel Cooper Lake / Sapphire Rapids and later,
//! AMD Zen 4 and later). Other CPUs keep candle's path, and `HINDSIGHT_CPU_KERNELS=avx2`
//! switches this one off to stand for an AVX2 machine.
//!
//! Numerics are those of the bf16 mode: the activations are rounded to bf16 (round to nearest
//! even, as candle's cast), the products of bf16 values are exact in f32 and accumulate in f32,
//! and the result stays f32 (candle's path rounds it to bf16 once more). The summation order is
//! fixed (no split of the inner dimension across threads), so results are deterministic.
//!
//! Layout: the weight `[N, K]` is packed once at load into panels of [`NR`] output columns, each
//! `[K/2][NR][2]` bf16, so one 64-byte load feeds 16 columns with one pair of the inner
//! dimension. The activations are converted to bf16 rows; a microkernel of [`MR`] rows × [`NR`]
//! columns keeps its 24 accumulators in registers and broadcasts one pair of each row per step.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Output columns per packed panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per microkernel call.
pub const MR: usize = 12;
/// Inner-dimension pairs per block: a panel block (`KC2 × NR × 4` bytes = 32 KiB) stays in
/// L1/L2 (128, 256 and 512 measured alike within noise).
const KC2: usize = 256;
/// Rows of the activation handled by one task (with one panel): large, so that a panel is read
/// from memory once for all of them (the LM head's weight does not fit any cache); a multiple
/// of [`MR`], so tasks start on a packed row group.
const MB: usize = 21 * MR;

/// Whether this CPU runs the kernel, and it is not switched off.
pub fn available() -> bool {
    let off = std::env::var("HINDSIGHT_CPU_KERNELS").is_ok_and(|v| v == "avx2" || v == "baseline");
    !off && cpu_supports()
}

/// Whether the CPU has the instructions the kernel uses (AVX512F and AVX512_BF16).
fn cpu_supports() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[N, K]` packed for the kernel.
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// `ceil(K / 2)`: the packed inner dimension in pairs.
    k2: usize,
    /// Panels of `k2 × NR` u32 (each a bf16 pair), zero-padded past `n` and `k`.
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Packs a CPU weight tensor `[N, K]` (any float dtype; rounded to bf16 if wider). Refused
    /// on a CPU without AVX512_BF16, so a packed weight can always run the kernel.
    pub fn from_tensor(w: &Tensor) -> Result<Self> {
        if !cpu_supports() {
            return Err(Error::Request {
                id: None,
                message: "the bf16 kernel needs a CPU with AVX512F and AVX512_BF16".into(),
            });
        }
        let (n, k) = w.dims2()?;
        let bits: Vec<u16> = w
            .to_dtype(DType::BF16)?
            .flatten_all()?
            .to_vec1::<half::bf16>()?
            .into_iter()
            .map(|x| x.to_bits())
            .collect();
        let k2 = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * k2 * NR];
        data.par_chunks_mut(k2 * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..NR {
                    let row = p * NR + c;
                    if row >= n {
                        break;
                    }
                    let src = &bits[row * k..(row + 1) * k];
                    for kk in 0..k2 {
                        let lo = src[2 * kk] as u32;
                        let hi = src.get(2 * kk + 1).copied().unwrap_or(0) as u32;
                        panel[kk * NR + c] = lo | (hi << 16);
                    }
                }
            });
        Ok(Self { n, k, k2, data })
    }

    /// Output width `N`.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// `x [M, K]` (f32, CPU) times the weight's transpose: `[M, N]` f32.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        if k != self.k {
            return Err(Error::Request {
                id: None,
                message: format!("bf16 matmul: input width {k}, weight width {}", self.k),
            });
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let a = pack_rows(&to_bf16_pairs(&xs, m, k, self.k2), m, self.k2);
        let mut out = vec![0f32; m * self.n];
        self.run(&a, m, &mut out);
        Ok(Tensor::from_vec(out, (m, self.n), &Device::Cpu)?)
    }

    fn run(&self, a: &[u32], m: usize, out: &mut [f32]) {
        let panels = self.n.div_ceil(NR);
        let m_blocks = m.div_ceil(MB);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..panels * m_blocks).into_par_iter().for_each(|task| {
            let (p, mb) = (task % panels, task / panels);
            let panel = &self.data[p * self.k2 * NR..(p + 1) * self.k2 * NR];
            let cols = NR.min(self.n - p * NR);
            let (r0, r1) = (mb * MB, (mb * MB + MB).min(m));
            let out_ptr = &out_ptr;
            let mut k0 = 0;
            while k0 < self.k2 {
                let kc = KC2.min(self.k2 - k0);
                let mut r = r0;
                while r < r1 {
                    let rows = MR.min(r1 - r);
                    let mut tile = [[0f32; NR]; MR];
                    // SAFETY: `from_tensor` refuses CPUs without the kernel's instructions;
                    // `a` holds `ceil(m / MR) × k2 × MR` pairs and the panel `k2 × NR`.
                    unsafe {
                        kernel::tile(
                            &a[(r / MR * self.k2 + k0) * MR..],
                            &panel[k0 * NR..],
                            kc,
                            rows,
                            &mut tile,
                        );
                    }
                    for (i, t) in tile.iter().enumerate().take(rows) {
                        // SAFETY: each task writes its own rows × columns of `out`, which
                        // outlives the parallel loop.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_ptr.0.add((r + i) * self.n + p * NR),
                                cols,
                            )
                        };
                        if k0 == 0 {
                            dst.copy_from_slice(&t[..cols]);
                        } else {
                            for (d, s) in dst.iter_mut().zip(t) {
                                *d += s;
                            }
                        }
                    }
                    r += rows;
                }
                k0 += kc;
            }
        });
    }
}

struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint regions (see `run`).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Lays bf16 pair rows `[M, K2]` out as groups of [`MR`] rows, `[M/MR][K2][MR]` (zero rows
/// past `m`): the microkernel then reads the pairs it broadcasts from one sequential stream.
fn pack_rows(a: &[u32], m: usize, k2: usize) -> Vec<u32> {
    let groups = m.div_ceil(MR);
    let mut out = vec![0u32; groups * k2 * MR];
    out.par_chunks_mut(k2 * MR)
        .enumerate()
        .for_each(|(gi, dst)| {
            for i in 0..MR.min(m - gi * MR) {
                let src = &a[(gi * MR + i) * k2..(gi * MR + i + 1) * k2];
                for (kk, &pair) in src.iter().enumerate() {
                    dst[kk * MR + i] = pair;
                }
            }
        });
    out
}

/// Rounds f32 rows `[M, K]` to bf16 pairs `[M, K2]` (round to nearest even; a NaN stays NaN).
fn to_bf16_pairs(xs: &[f32], m: usize, k: usize, k2: usize) -> Vec<u32> {
    let mut a = vec![0u32; m * k2];
    a.par_chunks_mut(k2).enumerate().for_each(|(r, dst)| {
        let src = &xs[r * k..(r + 1) * k];
        // SAFETY: only reached through a `PackedBf16`, which exists only where the CPU has
        // AVX512F and AVX512_BF16 (`from_tensor`).
        let done = unsafe { kernel::convert(src, dst) };
        for (kk, d) in dst.iter_mut().enumerate().skip(done) {
            let lo = half::bf16::from_f32(src[2 * kk]).to_bits() as u32;
            let hi = src
                .get(2 * kk + 1)
                .map_or(0, |&x| half::bf16::from_f32(x).to_bits() as u32);
            *d = lo | (hi << 16);
        }
    });
    a
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Rounds 32 f32 at a time into 16 bf16 pairs (the same rounding as `half`'s, NaN kept);
    /// returns how many pairs it wrote (the rest is left to the caller).
    ///
    /// # Safety
    /// The CPU must have AVX512F and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert(src: &[f32], dst: &mut [u32]) -> usize {
        let blocks = (src.len() / 32).min(dst.len() / 16);
        for b in 0..blocks {
            let lo = _mm512_loadu_ps(src.as_ptr().add(32 * b));
            let hi = _mm512_loadu_ps(src.as_ptr().add(32 * b + 16));
            // Lanes 0..16 of the result come from the second operand.
            let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.as_mut_ptr().add(16 * b).cast(), packed);
        }
        blocks * 16
    }

    /// `tile[0..rows] = A[rows × kc pairs] · panel[kc × NR]`, A packed `[kc][MR]`.
    ///
    /// # Safety
    /// The CPU must have AVX512F and AVX512_BF16; `a` must hold `kc * MR` pairs and `panel`
    /// `kc * NR`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile(
        a: &[u32],
        panel: &[u32],
        kc: usize,
        rows: usize,
        tile: &mut [[f32; NR]; MR],
    ) {
        macro_rules! dispatch {
            ($($n:literal)*) => {
                match rows {
                    $($n => micro::<$n>(a, panel, kc, tile),)*
                    _ => {}
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn micro<const R: usize>(
        a: &[u32],
        panel: &[u32],
        kc: usize,
        tile: &mut [[f32; NR]; MR],
    ) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let ap = a.as_ptr();
        let bp = panel.as_ptr();
        for kk in 0..kc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(kk * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(kk * NR + 16).cast()));
            for i in 0..R {
                let pair = *ap.add(kk * MR + i);
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], av, b0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], av, b1);
            }
        }
        for i in 0..R {
            _mm512_storeu_ps(tile[i].as_mut_ptr(), acc0[i]);
            _mm512_storeu_ps(tile[i].as_mut_ptr().add(16), acc1[i]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::{MR, NR};
    /// Never called: [`super::available`] is false off x86_64.
    pub unsafe fn convert(_src: &[f32], _dst: &mut [u32]) -> usize {
        0
    }
    /// Never called: [`super::available`] is false off x86_64.
    pub unsafe fn tile(
        _a: &[u32],
        _panel: &[u32],
        _kc: usize,
        _rows: usize,
        _tile: &mut [[f32; NR]; MR],
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_round(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }

    #[test]
    fn packed_matmul_equals_f64_reference_of_bf16_inputs() {
        if !available() {
            eprintln!("no AVX512_BF16 here: kernel not exercised");
            return;
        }
        // Odd K and N, M not a multiple of the tile, K spanning several blocks.
        for (m, n, k) in [
            (1, 1, 1),
            (13, 33, 7),
            (100, 70, 515),
            (5, 40, 1100),
            (300, 45, 64),
        ] {
            let xs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let ws: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 23.0)
                .collect();
            let x = Tensor::from_vec(xs.clone(), (m, k), &Device::Cpu).unwrap();
            let w = Tensor::from_vec(ws.clone(), (n, k), &Device::Cpu).unwrap();
            let got = PackedBf16::from_tensor(&w)
                .unwrap()
                .matmul_t(&x)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|t| {
                            bf16_round(xs[i * k + t]) as f64 * bf16_round(ws[j * k + t]) as f64
                        })
                        .sum();
                    let tol = 1e-5 * (k as f64).sqrt() * want.abs().max(1.0) * 10.0;
                    assert!(
                        (got[i][j] as f64 - want).abs() < tol,
                        "m{m} n{n} k{k} [{i},{j}]: {} vs {want}",
                        got[i][j]
                    );
                }
            }
        }
    }
}
