//! Reading a Hugging Face `config.json` into a [`TransformerConfig`], in both the transformers 4
//! layout (top-level `rope_theta`, `rope_scaling`) and the transformers 5 one (`rope_parameters`,
//! possibly one entry per layer type).
//!
//! Every key is accounted for: it is either interpreted, or known not to change a forward pass
//! (dropout rates, token ids, bookkeeping), or the load fails naming it. A checkpoint whose
//! config says something this decoder does not implement is refused, never run approximately.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::config::{
    Activation, Architecture, LayerAttention, QkNorm, Rope, RopeScaling, TransformerConfig,
};

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

/// A JSON object whose reads are recorded, so unread keys can be reported.
struct Keys<'a> {
    map: &'a Map<String, Value>,
    read: BTreeSet<&'a str>,
}

impl<'a> Keys<'a> {
    fn new(map: &'a Map<String, Value>) -> Self {
        Self {
            map,
            read: BTreeSet::new(),
        }
    }

    /// The value of `key`, treating JSON `null` as absent.
    fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.read.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    fn usize(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| err(format!("'{key}' must be a non-negative integer, got {v}"))),
        }
    }

    fn need_usize(&mut self, key: &str) -> Result<usize, ConfigError> {
        self.usize(key)?
            .ok_or_else(|| err(format!("missing required key '{key}'")))
    }

    fn f64(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(format!("'{key}' must be a number, got {v}"))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| err(format!("'{key}' must be true or false, got {v}"))),
        }
    }

    fn str(&mut self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| err(format!("'{key}' must be a string, got {v}"))),
        }
    }

    /// Keys present (and not null-or-inert) that nothing read.
    fn unread(&self, inert: &[&str]) -> Vec<&'a str> {
        self.map
            .iter()
            .filter(|(k, v)| {
                !self.read.contains(k.as_str()) && !inert.contains(&k.as_str()) && !is_off(v)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// A value that means "feature off" for any key: null, false, 0, empty.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
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
    let architecture = Architecture::parse(model_type).ok_or_else(|| {
        err(format!(
            "unsupported model_type '{model_type}' (supported: {})",
            Architecture::SUPPORTED
        ))
    })?;
    let mut k = Keys::new(map);
    let cfg = read(&mut k, architecture)?;
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

fn read(k: &mut Keys<'_>, arch: Architecture) -> Result<TransformerConfig, ConfigError> {
    use Architecture as A;
    let gemma = matches!(arch, A::Gemma2 | A::Gemma3);
    let hidden_size = k.need_usize("hidden_size")?;
    let num_heads = k.need_usize("num_attention_heads")?;
    let num_layers = k.need_usize("num_hidden_layers")?;
    let num_kv_heads = k.usize("num_key_value_heads")?.unwrap_or(num_heads);
    let default_head_dim = if gemma {
        256
    } else {
        hidden_size / num_heads.max(1)
    };
    let head_dim = k.usize("head_dim")?.unwrap_or(default_head_dim);
    let max_position_embeddings = k.usize("max_position_embeddings")?.unwrap_or(match arch {
        A::Llama | A::Olmo2 => 2048,
        A::Mistral | A::Gemma3 => 131_072,
        A::Qwen2 | A::Qwen3 => 32_768,
        A::Gemma2 => 8192,
        A::Phi3 => 4096,
    });

    // Activation: `hidden_act` (most) or `hidden_activation` (Gemma).
    // Gemma's modeling code reads `hidden_activation`; its configs often carry `hidden_act` too.
    let act_name = match (k.str("hidden_activation")?, k.str("hidden_act")?) {
        (Some(a), _) if gemma => Some(a),
        (_, Some(a)) => Some(a),
        (a, None) => a,
    };
    let activation = match act_name {
        None if gemma => Activation::GeluTanh,
        None => Activation::Silu,
        Some("silu" | "swish") => Activation::Silu,
        Some("gelu_pytorch_tanh" | "gelu_tanh") if gemma => Activation::GeluTanh,
        Some(other) => {
            return Err(err(format!(
                "hidden_act '{other}' is not implemented for {} (expected {})",
                arch.as_str(),
                if gemma { "gelu_pytorch_tanh" } else { "silu" }
            )))
        }
    };

    // Biases.
    let attention_bias_key = k.bool("attention_bias")?;
    let (attention_bias, attention_out_bias) = match arch {
        // Qwen2 always has q/k/v biases and never an output bias.
        A::Qwen2 => (true, false),
        A::Phi3 => (false, false),
        _ => {
            let b = attention_bias_key.unwrap_or(false);
            (b, b)
        }
    };
    if arch == A::Qwen2 && attention_bias_key == Some(false) {
        return Err(err(
            "attention_bias=false: Qwen2 always has q/k/v biases; this config contradicts that",
        ));
    }
    let mlp_bias = k.bool("mlp_bias")?.unwrap_or(false);
    if mlp_bias && arch != A::Llama {
        return Err(err(format!(
            "mlp_bias=true is not implemented for {}",
            arch.as_str()
        )));
    }

    // Sliding windows and layer types.
    let sliding_window = k.usize("sliding_window")?;
    // Some Gemma 2 configs repeat the window under an older name that transformers ignores.
    if let Some(size) = k.usize("sliding_window_size")? {
        if Some(size) != sliding_window {
            return Err(err(format!(
                "sliding_window_size={size} differs from sliding_window={sliding_window:?}"
            )));
        }
    }
    let use_sliding = match arch {
        A::Qwen2 | A::Qwen3 => k.bool("use_sliding_window")?.unwrap_or(false),
        _ => true,
    };
    let max_window_layers = match arch {
        A::Qwen2 | A::Qwen3 => k.usize("max_window_layers")?.unwrap_or(28),
        _ => 0,
    };
    let window = match (arch, sliding_window) {
        (A::Mistral, None) if !k.map.contains_key("sliding_window") => Some(4096),
        (A::Gemma2 | A::Gemma3, None) => Some(4096),
        (A::Qwen2 | A::Qwen3, w) if !use_sliding => {
            let _ = w;
            None
        }
        (A::Llama | A::Olmo2, Some(w)) => {
            return Err(err(format!(
                "sliding_window={w} is not part of {}; refusing rather than guessing which layers use it",
                arch.as_str()
            )))
        }
        (_, w) => w,
    };
    if k.bool("use_bidirectional_attention")? == Some(true) {
        return Err(err(
            "use_bidirectional_attention=true (an encoder variant) is not a causal decoder",
        ));
    }
    let layer_types: Vec<String> = match k.get("layer_types") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| err("'layer_types' must be a list of strings"))?,
        None => (0..num_layers)
            .map(|i| {
                let sliding = match arch {
                    A::Gemma2 => i % 2 == 0,
                    A::Gemma3 => {
                        let pattern = k.map.get("sliding_window_pattern").and_then(Value::as_u64);
                        !(i as u64 + 1).is_multiple_of(pattern.filter(|p| *p > 0).unwrap_or(6))
                    }
                    A::Qwen2 | A::Qwen3 => window.is_some() && i >= max_window_layers,
                    A::Mistral | A::Phi3 => window.is_some(),
                    _ => false,
                };
                if sliding {
                    "sliding_attention".to_string()
                } else {
                    "full_attention".to_string()
                }
            })
            .collect(),
    };
    if arch == A::Gemma3 {
        k.usize("sliding_window_pattern")?;
    }
    if layer_types.len() != num_layers {
        return Err(err(format!(
            "layer_types has {} entries for {num_layers} layers",
            layer_types.len()
        )));
    }

    // Rotary embeddings: one, or (Gemma 3) one per layer type.
    let partial_rotary_factor = k.f64("partial_rotary_factor")?;
    if partial_rotary_factor.is_some_and(|f| f != 1.0) && arch != A::Phi3 {
        return Err(err(format!(
            "partial_rotary_factor is not implemented for {}",
            arch.as_str()
        )));
    }
    let original_max_top = k.f64("original_max_position_embeddings")?;
    let rope_theta_top = k.f64("rope_theta")?;
    let rope_local_base = if arch == A::Gemma3 {
        k.f64("rope_local_base_freq")?
    } else {
        None
    };
    let rope_scaling = k.get("rope_scaling");
    let rope_parameters = k.get("rope_parameters");
    let default_theta = match arch {
        A::Gemma3 => 1_000_000.0,
        _ => 10_000.0,
    };
    let rope_ctx = RopeContext {
        head_dim,
        max_position_embeddings,
        partial_rotary_factor,
        original_max_top,
    };
    let mut ropes = Vec::new();
    let mut layers = Vec::with_capacity(num_layers);
    if arch == A::Gemma3 {
        // Global layers: `rope_parameters.full_attention` or the top-level theta + scaling.
        // Local layers: `rope_parameters.sliding_attention` or `rope_local_base_freq`; never scaled.
        let nested = rope_parameters.and_then(Value::as_object);
        let global = match nested.and_then(|m| m.get("full_attention")) {
            Some(p) => rope_from_params(p, rope_theta_top.unwrap_or(default_theta), &rope_ctx)?,
            None => match rope_scaling {
                Some(s) => rope_from_params(s, rope_theta_top.unwrap_or(default_theta), &rope_ctx)?,
                None => rope_ctx.plain(rope_theta_top.unwrap_or(default_theta)),
            },
        };
        let local = match nested.and_then(|m| m.get("sliding_attention")) {
            Some(p) => rope_from_params(p, rope_local_base.unwrap_or(10_000.0), &rope_ctx)?,
            None => rope_ctx.plain(rope_local_base.unwrap_or(10_000.0)),
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
        ropes.push(global);
        ropes.push(local);
    } else {
        let params = match (rope_parameters, rope_scaling) {
            (Some(p), _) => Some(p),
            (None, s) => s,
        };
        let rope = match params {
            Some(p) => {
                if p.as_object().is_some_and(|m| {
                    m.contains_key("full_attention") || m.contains_key("sliding_attention")
                }) {
                    return Err(err(format!(
                        "per-layer-type rope_parameters are not part of {}",
                        arch.as_str()
                    )));
                }
                rope_from_params(p, rope_theta_top.unwrap_or(default_theta), &rope_ctx)?
            }
            None => rope_ctx.plain(rope_theta_top.unwrap_or(default_theta)),
        };
        ropes.push(rope);
    }
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
            rope: usize::from(arch == A::Gemma3 && sliding),
        });
    }

    // Gemma's scalars.
    let (attn_scale, attn_softcap, final_softcap, embed_scale) = if gemma {
        let q = k.f64("query_pre_attn_scalar")?.unwrap_or(256.0);
        let attn_cap = k.f64("attn_logit_softcapping")?;
        let final_cap = k.f64("final_logit_softcapping")?;
        let (attn_cap, final_cap) = match arch {
            A::Gemma2 => (
                attn_cap.or(if k.map.contains_key("attn_logit_softcapping") {
                    None
                } else {
                    Some(50.0)
                }),
                final_cap.or(if k.map.contains_key("final_logit_softcapping") {
                    None
                } else {
                    Some(30.0)
                }),
            ),
            _ => (attn_cap, final_cap),
        };
        (
            q.powf(-0.5),
            attn_cap,
            final_cap,
            Some((hidden_size as f64).sqrt() as f32),
        )
    } else {
        ((head_dim as f64).powf(-0.5), None, None, None)
    };

    if let Some(v) = k.get("clip_qkv") {
        return Err(err(format!("clip_qkv={v} is not implemented")));
    }

    Ok(TransformerConfig {
        architecture: arch,
        hidden_size,
        intermediate_size: k.need_usize("intermediate_size")?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size: k.need_usize("vocab_size")?,
        rms_norm_eps: k.f64("rms_norm_eps")?.unwrap_or(match arch {
            A::Phi3 | A::Olmo2 => 1e-5,
            _ => 1e-6,
        }),
        max_position_embeddings,
        attention_bias,
        attention_out_bias,
        mlp_bias,
        tie_word_embeddings: k.bool("tie_word_embeddings")?.unwrap_or(gemma),
        activation,
        qk_norm: match arch {
            A::Qwen3 | A::Gemma3 => Some(QkNorm::PerHead),
            A::Olmo2 => Some(QkNorm::Whole),
            _ => None,
        },
        norm_weight_offset: if gemma { 1.0 } else { 0.0 },
        embed_scale,
        attn_scale,
        attn_softcap,
        final_softcap,
        ropes,
        layers,
    })
}

/// What a rope parameter block needs from the rest of the config.
struct RopeContext {
    head_dim: usize,
    max_position_embeddings: usize,
    partial_rotary_factor: Option<f64>,
    original_max_top: Option<f64>,
}

impl RopeContext {
    fn rotary_dim(&self, factor: Option<f64>) -> usize {
        let f = factor.or(self.partial_rotary_factor).unwrap_or(1.0);
        (self.head_dim as f64 * f) as usize
    }

    fn plain(&self, theta: f64) -> Rope {
        Rope {
            theta,
            rotary_dim: self.rotary_dim(None),
            scaling: RopeScaling::None,
        }
    }
}

/// Reads one `rope_scaling` / `rope_parameters` object.
fn rope_from_params(p: &Value, theta_default: f64, ctx: &RopeContext) -> Result<Rope, ConfigError> {
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
    let theta = k.f64("rope_theta")?.unwrap_or(theta_default);
    let partial = k.f64("partial_rotary_factor")?;
    let rotary_dim = ctx.rotary_dim(partial);
    let original = |k: &mut Keys<'_>| -> Result<f64, ConfigError> {
        Ok(ctx
            .original_max_top
            .or(k.f64("original_max_position_embeddings")?)
            .unwrap_or(ctx.max_position_embeddings as f64))
    };
    let need = |k: &mut Keys<'_>, key: &str| -> Result<f64, ConfigError> {
        k.f64(key)?
            .ok_or_else(|| err(format!("rope_type '{rope_type}' needs '{key}'")))
    };
    let scaling = match rope_type {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(&mut k, "factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need(&mut k, "factor")?,
            low_freq_factor: need(&mut k, "low_freq_factor")?,
            high_freq_factor: need(&mut k, "high_freq_factor")?,
            original_max_position_embeddings: original(&mut k)?,
        },
        "yarn" => {
            let orig = original(&mut k)?;
            let factor = match k.f64("factor")? {
                Some(f) => f,
                None => ctx.max_position_embeddings as f64 / orig,
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
            let attention_factor = match k.f64("attention_factor")? {
                Some(a) => a,
                None => match (mscale, mscale_all_dim) {
                    (Some(m), Some(a)) if m != 0.0 && a != 0.0 => {
                        get_mscale(factor, m) / get_mscale(factor, a)
                    }
                    _ => get_mscale(factor, 1.0),
                },
            };
            let beta_fast = k.f64("beta_fast")?.filter(|b| *b != 0.0).unwrap_or(32.0);
            let beta_slow = k.f64("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0);
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100"#;

    fn cfg(extra: &str) -> Result<TransformerConfig, ConfigError> {
        parse(&format!("{{{BASE}{extra}}}"))
    }

    #[test]
    fn reads_both_rope_layouts() {
        let v4 = cfg(r#", "model_type": "llama", "rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}"#)
        .unwrap();
        let v5 = cfg(
            r#", "model_type": "llama", "rope_parameters": {"rope_type": "llama3",
            "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}"#,
        )
        .unwrap();
        assert_eq!(v4.ropes, v5.ropes);
        assert_eq!(v5.ropes[0].theta, 500000.0);
        assert!(matches!(v5.ropes[0].scaling, RopeScaling::Llama3 { .. }));
    }

    #[test]
    fn refuses_what_it_does_not_implement_naming_the_key() {
        let e = cfg(
            r#", "model_type": "llama", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("'dynamic'"), "{e}");
        let e = cfg(r#", "model_type": "falcon""#).unwrap_err();
        assert!(e.0.contains("unsupported model_type 'falcon'"), "{e}");
        let e = cfg(r#", "model_type": "llama", "num_experts": 8"#).unwrap_err();
        assert!(e.0.contains("num_experts"), "{e}");
        let e = cfg(r#", "model_type": "llama", "hidden_act": "gelu""#).unwrap_err();
        assert!(e.0.contains("hidden_act 'gelu'"), "{e}");
        let e = cfg(r#", "model_type": "llama", "rope_scaling": {"rope_type": "linear", "factor": 2.0, "foo": 1}"#)
            .unwrap_err();
        assert!(e.0.contains("foo"), "{e}");
        // Inert and switched-off keys are fine.
        cfg(r#", "model_type": "llama", "attention_dropout": 0.1, "num_experts": 0"#).unwrap();
    }

    #[test]
    fn family_defaults() {
        let m = cfg(r#", "model_type": "mistral""#).unwrap();
        assert!(m.layers.iter().all(|l| l.sliding_window == Some(4096)));
        let m = cfg(r#", "model_type": "mistral", "sliding_window": null"#).unwrap();
        assert!(m.layers.iter().all(|l| l.sliding_window.is_none()));
        let g = cfg(r#", "model_type": "gemma2", "head_dim": 16, "sliding_window": 8"#).unwrap();
        assert_eq!(g.attn_softcap, Some(50.0));
        assert_eq!(g.final_softcap, Some(30.0));
        assert_eq!(g.layers[0].sliding_window, Some(8));
        assert_eq!(g.layers[1].sliding_window, None);
        let g3 = cfg(r#", "model_type": "gemma3_text", "head_dim": 16, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}"#)
        .unwrap();
        assert_eq!(g3.ropes[0].scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!(g3.ropes[1].theta, 10000.0);
        assert_eq!(g3.ropes[1].scaling, RopeScaling::None);
        let q =
            cfg(r#", "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": false"#)
                .unwrap();
        assert!(q.attention_bias && !q.attention_out_bias);
        assert!(q.layers.iter().all(|l| l.sliding_window.is_none()));
    }

    /// Configs as the Hub serves them (transformers 4 layout, every key kept) load.
    #[test]
    fn hub_style_configs_load() {
        let llama31 = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
            "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
            "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
            "intermediate_size": 128, "max_position_embeddings": 131072, "mlp_bias": false,
            "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
            "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 100}"#;
        let c = parse(llama31).unwrap();
        assert_eq!(c.ropes[0].theta, 500000.0);
        let gemma2 = r#"{"architectures": ["Gemma2ForCausalLM"], "attention_bias": false,
            "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
            "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
            "head_dim": 16, "hidden_act": "gelu_pytorch_tanh",
            "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64, "initializer_range": 0.02,
            "intermediate_size": 128, "max_position_embeddings": 8192, "model_type": "gemma2",
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
            "rope_theta": 10000.0, "sliding_window": 4096, "sliding_window_size": 4096,
            "torch_dtype": "float32", "transformers_version": "4.42.0.dev0", "use_cache": true,
            "vocab_size": 100}"#;
        let g = parse(gemma2).unwrap();
        assert_eq!(g.activation, Activation::GeluTanh);
        assert!((g.attn_scale - 1.0 / 16.0).abs() < 1e-12);
    }
}
