//! Reading RoPE parameters in transformers' three layouts (`rope_scaling`, a flat
//! `rope_parameters`, and `rope_parameters` per layer type).

use serde_json::Value;

use super::keys::Keys;
use super::{err, ConfigError};
use crate::model::architecture::{positive, Rope, RopeScaling};

/// Which transformers layout a rope parameter block comes from: it decides which
/// `original_max_position_embeddings` is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RopeLayout {
    /// `rope_scaling` (transformers 4).
    Transformers4,
    /// One flat `rope_parameters` (transformers 5).
    Transformers5,
    /// `rope_parameters` per layer type (transformers 5, Gemma 3).
    PerLayerType,
}

/// What a rope parameter block needs from the rest of the config.
#[derive(Clone, Copy)]
pub(super) struct RopeContext {
    pub(super) head_dim: usize,
    pub(super) max_position_embeddings: usize,
    pub(super) partial_rotary_factor: Option<f64>,
    pub(super) original_max_top: Option<f64>,
    pub(super) layout: RopeLayout,
}

impl RopeContext {
    /// Rotated dimensions of a head: `head_dim * partial_rotary_factor`, a positive even number.
    fn rotary_dim(&self, factor: Option<f64>) -> Result<usize, ConfigError> {
        let f = factor.or(self.partial_rotary_factor).unwrap_or(1.0);
        if !(f > 0.0 && f <= 1.0) {
            return Err(err(format!(
                "'partial_rotary_factor' must be in (0, 1], got {f}"
            )));
        }
        let dim = (self.head_dim as f64 * f) as usize;
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(err(format!(
                "'partial_rotary_factor' {f} of head_dim {} rotates {dim} dimensions (must be a \
                 positive even number)",
                self.head_dim
            )));
        }
        Ok(dim)
    }

    pub(super) fn plain(&self, theta: f64) -> Result<Rope, ConfigError> {
        Ok(Rope {
            theta: rope_theta(theta)?,
            rotary_dim: self.rotary_dim(None)?,
            scaling: RopeScaling::None,
        })
    }

    /// The pre-scaling context length of Llama 3 / YaRN scaling, read as transformers does:
    /// transformers 4 reads `rope_scaling.original_max_position_embeddings` (else, for YaRN,
    /// `max_position_embeddings`) and ignores a top-level key; transformers 5
    /// (`standardize_rope_params`) lets a top-level one override a flat `rope_parameters`, and
    /// ignores it for per-layer-type parameters. A transformers-4 config where the two versions
    /// would read different values is refused.
    fn original_max(&self, nested: Option<f64>) -> Result<f64, ConfigError> {
        let max = self.max_position_embeddings as f64;
        let value = match (self.layout, self.original_max_top, nested) {
            (RopeLayout::Transformers5, Some(top), _) => top,
            (RopeLayout::Transformers4, Some(top), n) if top != n.unwrap_or(max) => {
                return Err(err(format!(
                    "the top-level original_max_position_embeddings ({top}) differs from {}: \
                     transformers 4 reads the latter, transformers 5 the former; make them agree",
                    match n {
                        Some(n) => format!("rope_scaling.original_max_position_embeddings ({n})"),
                        None => format!("max_position_embeddings ({max}), used in its absence"),
                    }
                )))
            }
            (_, _, n) => n.unwrap_or(max),
        };
        positive("'original_max_position_embeddings'", value).map_err(err)
    }
}

/// A RoPE base: finite and above 1 (0 or a negative base gives NaN frequencies).
fn rope_theta(theta: f64) -> Result<f64, ConfigError> {
    if theta.is_finite() && theta > 1.0 {
        Ok(theta)
    } else {
        Err(err(format!(
            "'rope_theta' must be a finite number > 1, got {theta}"
        )))
    }
}

/// Reads one `rope_scaling` / `rope_parameters` object. Every parameter that would make a NaN
/// or infinite frequency (a factor <= 0, equal Llama 3 frequency factors, a negative YaRN beta)
/// is refused, naming it.
pub(super) fn rope_from_params(
    p: &Value,
    theta_default: f64,
    ctx: &RopeContext,
) -> Result<Rope, ConfigError> {
    let map = p
        .as_object()
        .ok_or_else(|| err("rope_parameters / rope_scaling must be an object"))?;
    let mut k = Keys::new(map);
    let rope_type = match k.str("rope_type")? {
        Some(t) => t,
        None => k.str("type")?.unwrap_or("default"),
    };
    // A transformers-4 config may name both; `type` is the older spelling of `rope_type`.
    k.get("type");
    let theta = rope_theta(k.f64("rope_theta")?.unwrap_or(theta_default))?;
    let partial = k.positive("partial_rotary_factor")?;
    let rotary_dim = ctx.rotary_dim(partial)?;
    let original = |k: &mut Keys<'_>| -> Result<f64, ConfigError> {
        let nested = k.positive("original_max_position_embeddings")?;
        ctx.original_max(nested)
    };
    let need = |k: &mut Keys<'_>, key: &str| -> Result<f64, ConfigError> {
        k.positive(key)?
            .ok_or_else(|| err(format!("rope_type '{rope_type}' needs '{key}'")))
    };
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(&mut k, "factor")?,
        },
        "llama3" => {
            let factor = need(&mut k, "factor")?;
            let low_freq_factor = need(&mut k, "low_freq_factor")?;
            let high_freq_factor = need(&mut k, "high_freq_factor")?;
            // Equal factors divide by zero in the smoothing; reversed ones leave no band.
            if low_freq_factor >= high_freq_factor {
                return Err(err(format!(
                    "rope_type 'llama3': 'low_freq_factor' ({low_freq_factor}) must be below \
                     'high_freq_factor' ({high_freq_factor})"
                )));
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original(&mut k)?,
            }
        }
        "yarn" => {
            let orig = original(&mut k)?;
            let factor = match k.positive("factor")? {
                Some(f) => f,
                None => positive(
                    "the YaRN factor max_position_embeddings / original_max_position_embeddings",
                    ctx.max_position_embeddings as f64 / orig,
                )
                .map_err(err)?,
            };
            let mscale = k.f64("mscale")?;
            let mscale_all_dim = k.f64("mscale_all_dim")?;
            let get_mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match k.positive("attention_factor")? {
                Some(a) => a,
                None => {
                    let a = match (mscale, mscale_all_dim) {
                        (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                            get_mscale(factor, m) / get_mscale(factor, a)
                        }
                        _ => get_mscale(factor, 1.0),
                    };
                    positive(
                        "the YaRN attention factor from 'mscale' / 'mscale_all_dim'",
                        a,
                    )
                    .map_err(err)?
                }
            };
            // transformers: `beta_fast or 32`, so 0 means the default; a negative beta is a
            // logarithm of a negative number.
            let beta = |k: &mut Keys<'_>, key: &str, default: f64| -> Result<f64, ConfigError> {
                match k.f64(key)? {
                    None => Ok(default),
                    Some(0.0) => Ok(default),
                    Some(b) => positive(&format!("'{key}'"), b).map_err(err),
                }
            };
            let beta_fast = beta(&mut k, "beta_fast", 32.0)?;
            let beta_slow = beta(&mut k, "beta_slow", 1.0)?;
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: orig,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate: k.bool("truncate")?.unwrap_or(true),
            }
        }
        other => {
            return Err(err(format!(
                "rope type '{other}' is not implemented (default, linear, llama3, yarn); \
                 refusing rather than scoring with wrong positions"
            )))
        }
    };
    let unread = k.unread(&[]);
    if !unread.is_empty() {
        return Err(err(format!(
            "rope_type '{rope_type}': unsupported key(s) {}",
            unread.join(", ")
        )));
    }
    Ok(Rope {
        theta,
        rotary_dim,
        scaling,
    })
}
