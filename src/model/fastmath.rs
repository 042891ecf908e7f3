//! A branch-free `exp` that the compiler vectorizes. Softmax in attention and SiLU in the MLP
//! call `exp` tens of millions of times per forward pass; libm's scalar `expf` was ~15% of the
//! forward time. Cephes' polynomial: relative error ~2e-7 (about one f32 ulp) over the range.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for f32, accurate to about one ulp; saturates outside [-87.3, 88.7].
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + 0.5;
    // floor(t) without libm: truncate, then step down where truncation rounded up (t < 0).
    let mut n = t as i32;
    n -= ((n as f32) > t) as i32;
    let fx = n as f32;
    let r = x - fx * LN2_HI - fx * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    f32::from_bits(((n + 127) as u32) << 23) * y
}

/// Maximum of a slice, with independent lanes so the compiler can vectorize it.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut m = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for l in lanes {
        m = m.max(l);
    }
    m
}

/// Sum of a slice in eight independent lanes (vectorizable; differs from a serial sum only in
/// rounding order).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

/// In-place softmax of a row.
#[inline]
pub fn softmax_in_place(row: &mut [f32]) {
    avx2!(softmax_body(row))
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let m = max(row);
    for x in row.iter_mut() {
        *x = exp(*x - m);
    }
    let inv = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Whether the CPU has AVX2 (cached by std after the first call).
#[inline(always)]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Evaluates an expression of `#[inline(always)]` code compiled for AVX2 where the CPU has it:
/// 8-wide lanes instead of the baseline's 4-wide SSE2. The operations are the same IEEE ones
/// (Rust never contracts `a * b + c` into an FMA), so results are identical bit for bit; only
/// the speed changes (README, "Against the script a user would write").
#[macro_export]
macro_rules! avx2 {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if $crate::model::fastmath::has_avx2() {
                // SAFETY: the CPU has AVX2.
                unsafe { with_avx2(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}
pub use avx2;

#[cfg(test)]
mod tests {
    #[test]
    fn matches_std_exp_to_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(super::exp(-1000.0), super::exp(-87.3));
        assert!(super::exp(f32::NEG_INFINITY) < 1e-37);
    }
}
