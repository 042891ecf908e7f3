//! How top-k log-probs are stored: `lossless` (float32, the default) or `compact` (one byte per
//! value, see docs/CONTRACT.md "Compact encoding"). The code is chosen for what a distillation
//! loss is sensitive to: the error of a log-prob `lp = -x` is at most `√x / S + 1/(4S²)`, so a
//! token's probability error `p·|δ|` stays below `0.43 / S` however the mass is spread, and the
//! tokens that carry the mass (x near 0) are stored almost exactly.
//!
//! A code is `c = min(255, round(S·√(−lp)))` and decodes as `lp = −(c / S)²`. Columns whose
//! values are sorted descending (a model's own top-k) store the differences of consecutive codes
//! (non-negative and small, so they compress to a fraction of a byte); a reader takes the
//! cumulative sum along the K axis first.

use serde::{Deserialize, Serialize};

/// The scale S of the square-root code.
pub const CODE_SCALE: f64 = 64.0;

/// The smallest log-prob a code can hold, `−(255 / S)²` ≈ −15.88 (p ≈ 1.3e-7); lower values are
/// stored as this floor.
pub const CODE_FLOOR: f64 = -(255.0 / CODE_SCALE) * (255.0 / CODE_SCALE);

/// How a dataset's top-k log-probs are stored (`contract.encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// float32 everywhere: the values exactly as scored.
    #[default]
    Lossless,
    /// One-byte codes for the top-k log-probs; the student's own log-prob snapshots are not
    /// stored (a trainer recomputes them with the live student).
    Compact,
}

impl Encoding {
    /// The name recorded in metadata and accepted in the pipeline file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lossless => "lossless",
            Self::Compact => "compact",
        }
    }

    /// Parses a metadata / config value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lossless" => Some(Self::Lossless),
            "compact" => Some(Self::Compact),
            _ => None,
        }
    }
}

/// The code of one log-prob (positive values code as 0, i.e. log-prob 0). Rows holding a NaN
/// never reach the encoder: `rows_to_batch` refuses them and the pipeline drops them first.
pub fn code(lp: f32) -> u8 {
    let x = (-(lp as f64)).max(0.0);
    (CODE_SCALE * x.sqrt()).round().clamp(0.0, 255.0) as u8
}

/// The log-prob a code stands for.
pub fn decode(c: u8) -> f32 {
    let s = c as f64 / CODE_SCALE;
    (-(s * s)) as f32
}

/// The largest decoding error of a log-prob `lp` at or above [`CODE_FLOOR`]: `√x/S + 1/(4S²)`
/// (plus float32 rounding).
pub fn error_bound(lp: f32) -> f64 {
    let x = (-(lp as f64)).max(0.0);
    x.sqrt() / CODE_SCALE + 1.0 / (4.0 * CODE_SCALE * CODE_SCALE) + 1e-6 * x.max(1.0)
}

/// Codes of rows of `k` values each.
pub fn encode_codes(values: &[f32]) -> Vec<u8> {
    values.iter().map(|&v| code(v)).collect()
}

/// Codes of rows of `k` descending values each, stored as differences within the row (the
/// first value as is). Values that are not sorted still round-trip: a negative step is clamped to
/// 0, so the decoded row is the running maximum of the codes.
pub fn encode_sorted(values: &[f32], k: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks(k.max(1)) {
        let mut prev = 0u8;
        for &v in row {
            let c = code(v).max(prev);
            out.push(c - prev);
            prev = c;
        }
    }
    out
}

/// Log-probs from plain codes.
pub fn decode_codes(codes: &[u8]) -> Vec<f32> {
    codes.iter().map(|&c| decode(c)).collect()
}

/// Log-probs from row-wise code differences (the inverse of [`encode_sorted`]); a row whose
/// differences sum past 255 (not written by hindsight) saturates at the floor.
pub fn decode_sorted(deltas: &[u8], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(deltas.len());
    for row in deltas.chunks(k.max(1)) {
        let mut acc = 0u32;
        for &d in row {
            acc = (acc + d as u32).min(255);
            out.push(decode(acc as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_stay_within_the_bound_down_to_the_floor() {
        let mut lp = 0f32;
        while lp as f64 >= CODE_FLOOR {
            let d = (decode(code(lp)) as f64 - lp as f64).abs();
            assert!(d <= error_bound(lp), "lp {lp}: error {d}");
            lp -= 0.0137;
        }
        assert_eq!(decode(code(-40.0)) as f64, CODE_FLOOR as f32 as f64);
    }

    #[test]
    fn decoded_codes_encode_to_themselves() {
        // Rewriting a compact dataset (dedup, compaction) must not drift.
        for c in 0..=255u8 {
            assert_eq!(code(decode(c)), c);
        }
        let row: Vec<f32> = [0u8, 3, 3, 40, 200, 255]
            .iter()
            .map(|&c| decode(c))
            .collect();
        let enc = encode_sorted(&row, row.len());
        assert_eq!(decode_sorted(&enc, row.len()), row);
    }

    #[test]
    fn sorted_rows_round_trip_through_differences() {
        let v = [-0.01f32, -0.5, -2.0, -9.0, -0.2, -0.2, -30.0, -31.0];
        let enc = encode_sorted(&v, 4);
        let dec = decode_sorted(&enc, 4);
        let direct = decode_codes(&encode_codes(&v));
        assert_eq!(dec, direct);
    }
}
