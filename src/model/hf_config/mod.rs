//! Reading a Hugging Face `config.json` into a [`TransformerConfig`], in both the transformers 4
//! layout (top-level `rope_theta`, `rope_scaling`) and the transformers 5 one (`rope_parameters`,
//! possibly one entry per layer type).
//!
//! Every key is accounted for: it is either interpreted, or known not to change a forward pass
//! (dropout rates, token ids, bookkeeping), or the load fails naming it. A checkpoint whose
//! config says something this decoder does not implement is refused, never run approximately.

mod keys;
mod rope;

use serde_json::Value;

use self::keys::Keys;
use self::rope::{rope_from_params, RopeContext, RopeLayout};
use super::architecture::{
    check_count, Activation, Architecture, LayerAttention, Rope, TransformerConfig, MAX_CONTEXT,
    MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_VOCAB, MAX_WINDOW,
};
use super::family::{AttentionBias, Family, Sliding};

mod layers;
use layers::*;

/// Keys that never change the forward pass of a decoder at inference time.
const INERT_KEYS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "use_cache",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "hidden_dropout",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
    "tokenizer_class",
    "auto_map",
    "model_type",
    "quantization_config_ignored",
    "pretraining_tp",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "unsloth_version",
    "cache_implementation",
    "use_return_dict",
    "tie_encoder_decoder",
    "task_specific_params",
    "finetuning_task",
    "prefix",
    "sep_token_id",
    "decoder_start_token_id",
    "max_length",
    "min_length",
    "use_bfloat16",
    "typical_p",
    "_sliding_window_pattern",
];

/// Why a `config.json` cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config.json: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Parses `config.json` text.
pub fn parse(text: &str) -> Result<TransformerConfig, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let map = root
        .as_object()
        .ok_or_else(|| err("the top level must be a JSON object"))?;
    let model_type = map
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama");
    if model_type == "gemma3" {
        return Err(err(
            "model_type 'gemma3' is the multimodal Gemma 3 checkpoint; hindsight scores text \
             decoders: export its language model as 'gemma3_text' (Gemma3ForCausalLM)",
        ));
    }
    let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
        err(format!(
            "unsupported model_type '{model_type}' (supported: {})",
            Architecture::supported_model_types()
        ))
    })?;
    let mut k = Keys::new(map);
    let cfg = read(&mut k, architecture.facts())?;
    let unread = k.unread(INERT_KEYS);
    if !unread.is_empty() {
        return Err(err(format!(
            "unsupported key(s) for model_type '{model_type}': {} — hindsight refuses settings it \
             does not implement rather than score with them ignored",
            unread.join(", ")
        )));
    }
    cfg.check().map_err(err)?;
    Ok(cfg)
}

/// The shape of the attention: sizes every other part is derived from.
struct Shape {
    hidden_size: usize,
    num_heads: usize,
    num_kv_heads: usize,
    num_layers: usize,
    head_dim: usize,
    max_position_embeddings: usize,
}

fn read(k: &mut Keys<'_>, family: &Family) -> Result<TransformerConfig, ConfigError> {
    let shape = read_shape(k, family)?;
    let intermediate_size = k.need_count("intermediate_size", MAX_INTERMEDIATE)?;
    let vocab_size = k.need_count("vocab_size", MAX_VOCAB)?;
    let rms_norm_eps = match k.f64("rms_norm_eps")? {
        Some(e) if e < 0.0 => {
            return Err(err(format!("'rms_norm_eps' must be >= 0, got {e}")));
        }
        Some(e) => e,
        None => family.rms_norm_eps_default,
    };
    let activation = read_activation(k, family)?;
    let (attention_bias, attention_out_bias, mlp_bias) = read_biases(k, family)?;
    let (window, layer_types) = read_layer_types(k, family, shape.num_layers)?;
    let ropes = read_ropes(k, family, &shape)?;
    let mut layers = Vec::with_capacity(shape.num_layers);
    for (i, t) in layer_types.iter().enumerate() {
        let sliding = match t.as_str() {
            "full_attention" => false,
            "sliding_attention" => true,
            other => {
                return Err(err(format!(
                    "layer_types[{i}] = '{other}' is not implemented (full_attention, sliding_attention)"
                )))
            }
        };
        if sliding && window.is_none() {
            return Err(err(format!(
                "layer {i} is a sliding_attention layer but no sliding_window is set"
            )));
        }
        layers.push(LayerAttention {
            sliding_window: if sliding { window } else { None },
            rope: usize::from(family.local_rope_theta_default.is_some() && sliding),
        });
    }
    let (attn_scale, attn_softcap, final_softcap) = read_scales(k, family, shape.head_dim)?;
    if let Some(v) = k.get("clip_qkv") {
        return Err(err(format!("clip_qkv={v} is not implemented")));
    }
    Ok(TransformerConfig {
        architecture: family.architecture,
        hidden_size: shape.hidden_size,
        intermediate_size,
        num_layers: shape.num_layers,
        num_heads: shape.num_heads,
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        vocab_size,
        rms_norm_eps,
        max_position_embeddings: shape.max_position_embeddings,
        attention_bias,
        attention_out_bias,
        mlp_bias,
        tie_word_embeddings: k
            .bool("tie_word_embeddings")?
            .unwrap_or(family.tied_embeddings_default),
        activation,
        qk_norm: family.qk_norm,
        norm_weight_offset: family.norm_weight_offset,
        embed_scale: family
            .embeddings_scaled
            .then(|| (shape.hidden_size as f64).sqrt() as f32),
        attn_scale,
        attn_softcap,
        final_softcap,
        ropes,
        layers,
    })
}

/// Counts and sizes, each bounded before anything is allocated from them.
fn read_shape(k: &mut Keys<'_>, family: &Family) -> Result<Shape, ConfigError> {
    let hidden_size = k.need_count("hidden_size", MAX_HIDDEN)?;
    let num_heads = k.need_count("num_attention_heads", MAX_HEADS)?;
    let num_layers = k.need_count("num_hidden_layers", MAX_LAYERS)?;
    let num_kv_heads = k
        .count("num_key_value_heads", MAX_HEADS)?
        .unwrap_or(num_heads);
    if !num_heads.is_multiple_of(num_kv_heads) {
        return Err(err(format!(
            "num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads \
             ({num_kv_heads})"
        )));
    }
    let explicit_head_dim = k.count("head_dim", MAX_HEAD_DIM)?;
    // The default head_dim would silently truncate; transformers 5 refuses the remainder for
    // some families even with an explicit head_dim.
    if !hidden_size.is_multiple_of(num_heads)
        && (explicit_head_dim.is_none() || family.heads_must_divide_hidden)
    {
        return Err(err(format!(
            "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads})"
        )));
    }
    let head_dim = explicit_head_dim
        .or(family.head_dim_default)
        .unwrap_or(hidden_size / num_heads);
    let max_position_embeddings = k
        .count("max_position_embeddings", MAX_CONTEXT)?
        .unwrap_or(family.max_position_default);
    Ok(Shape {
        hidden_size,
        num_heads,
        num_kv_heads,
        num_layers,
        head_dim,
        max_position_embeddings,
    })
}

/// The activation, from the key the family's modeling code reads (`hidden_act`, or Gemma's
/// `hidden_activation`), falling back to the other spelling that configs often carry too.
fn read_activation(k: &mut Keys<'_>, family: &Family) -> Result<Activation, ConfigError> {
    let other_key = if family.activation_key == "hidden_act" {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let primary = k.str(family.activation_key)?;
    let fallback = k.str(other_key)?;
    let Some(name) = primary.or(fallback) else {
        return Ok(family.activation);
    };
    // SwiGLU is implemented for every family; GeGLU only where the family defines it.
    match Activation::parse(name) {
        Some(a) if a == Activation::Silu || a == family.activation => Ok(a),
        _ => Err(err(format!(
            "hidden_act '{name}' is not implemented for {} (expected {})",
            family.name,
            family.activation.hf_name()
        ))),
    }
}

/// `(attention_bias, attention_out_bias, mlp_bias)`.
fn read_biases(k: &mut Keys<'_>, family: &Family) -> Result<(bool, bool, bool), ConfigError> {
    let key = k.bool("attention_bias")?;
    let (attention, out) = match family.attention_bias {
        AttentionBias::QkvAlways if key == Some(false) => {
            return Err(err(format!(
                "attention_bias=false: {} always has q/k/v biases; this config contradicts that",
                family.name
            )))
        }
        AttentionBias::QkvAlways => (true, false),
        AttentionBias::Never => (false, false),
        AttentionBias::Configurable => {
            let b = key.unwrap_or(false);
            (b, b)
        }
    };
    let mlp_bias = k.bool("mlp_bias")?.unwrap_or(false);
    if mlp_bias && !family.mlp_bias_allowed {
        return Err(err(format!(
            "mlp_bias=true is not implemented for {}",
            family.name
        )));
    }
    Ok((attention, out, mlp_bias))
}

/// Rotary embeddings: one, or (a family with a local base) one per layer type.
fn read_ropes(k: &mut Keys<'_>, family: &Family, shape: &Shape) -> Result<Vec<Rope>, ConfigError> {
    let partial_rotary_factor = k.positive("partial_rotary_factor")?;
    if partial_rotary_factor.is_some_and(|f| f != 1.0) && !family.partial_rotary {
        return Err(err(format!(
            "partial_rotary_factor is not implemented for {}",
            family.name
        )));
    }
    let original_max_top = k.f64("original_max_position_embeddings")?;
    let rope_theta_top = k.f64("rope_theta")?;
    let rope_local_base = match family.local_rope_theta_default {
        Some(_) => k.f64("rope_local_base_freq")?,
        None => None,
    };
    let rope_scaling = k.get("rope_scaling");
    let rope_parameters = k.get("rope_parameters");
    let theta = rope_theta_top.unwrap_or(family.rope_theta_default);
    if let (Some(p), Some(s)) = (rope_parameters, rope_scaling) {
        if p != s {
            return Err(err(
                "both 'rope_parameters' and 'rope_scaling' are set and differ (transformers 5 \
                 takes 'rope_scaling', transformers 4 ignores 'rope_parameters'); keep one",
            ));
        }
    }
    let mut ctx = RopeContext {
        head_dim: shape.head_dim,
        max_position_embeddings: shape.max_position_embeddings,
        partial_rotary_factor,
        original_max_top,
        layout: RopeLayout::Transformers4,
    };
    let Some(local_default) = family.local_rope_theta_default else {
        let params = match (rope_parameters, rope_scaling) {
            (Some(p), _) => {
                ctx.layout = RopeLayout::Transformers5;
                Some(p)
            }
            (None, s) => s,
        };
        let rope = match params {
            Some(p) => {
                if p.as_object().is_some_and(|m| {
                    m.contains_key("full_attention") || m.contains_key("sliding_attention")
                }) {
                    return Err(err(format!(
                        "per-layer-type rope_parameters are not part of {}",
                        family.name
                    )));
                }
                rope_from_params(p, theta, &ctx)?
            }
            None => ctx.plain(theta)?,
        };
        return Ok(vec![rope]);
    };
    // Global layers: `rope_parameters.full_attention` or the top-level theta + scaling.
    // Local layers: `rope_parameters.sliding_attention` or `rope_local_base_freq`; never scaled.
    let nested = rope_parameters.and_then(Value::as_object);
    ctx.layout = RopeLayout::PerLayerType;
    let global = match nested.and_then(|m| m.get("full_attention")) {
        Some(p) => rope_from_params(p, theta, &ctx)?,
        None => match rope_scaling {
            Some(s) => {
                let v4 = RopeContext {
                    layout: RopeLayout::Transformers4,
                    ..ctx
                };
                rope_from_params(s, theta, &v4)?
            }
            None => ctx.plain(theta)?,
        },
    };
    let local_theta = rope_local_base.unwrap_or(local_default);
    let local = match nested.and_then(|m| m.get("sliding_attention")) {
        Some(p) => rope_from_params(p, local_theta, &ctx)?,
        None => ctx.plain(local_theta)?,
    };
    if let Some(m) = nested {
        if let Some(extra) = m
            .keys()
            .find(|k| *k != "full_attention" && *k != "sliding_attention")
        {
            return Err(err(format!(
                "rope_parameters has an unknown layer type '{extra}'"
            )));
        }
    }
    Ok(vec![global, local])
}

/// `(attn_scale, attn_softcap, final_softcap)`: Gemma's query scalar and soft-caps, or the
/// plain `1/√head_dim`.
fn read_scales(
    k: &mut Keys<'_>,
    family: &Family,
    head_dim: usize,
) -> Result<(f64, Option<f64>, Option<f64>), ConfigError> {
    let scale = match family.query_pre_attn_scalar_default {
        Some(default) => k.positive("query_pre_attn_scalar")?.unwrap_or(default),
        None => head_dim as f64,
    };
    let Some((attn_default, final_default)) = family.softcap_defaults else {
        return Ok((scale.powf(-0.5), None, None));
    };
    // transformers divides by a cap that is not null: 0 would be NaN there too. An explicit
    // null switches a cap off; only an absent key takes the family default.
    let mut cap = |key: &str, default: Option<f64>| -> Result<Option<f64>, ConfigError> {
        let present = k.map.contains_key(key);
        Ok(k.positive(key)?.or(if present { None } else { default }))
    };
    let attn = cap("attn_logit_softcapping", attn_default)?;
    let fin = cap("final_logit_softcapping", final_default)?;
    Ok((scale.powf(-0.5), attn, fin))
}

#[cfg(test)]
mod tests;
