//! Reading a Hugging Face `config.json` into a [`TransformerConfig`], in both the transformers 4
//! layout (top-level `rope_theta`, `rope_scaling`) and the transformers 5 one (`rope_parameters`,
//! possibly one entry per layer type).
//!
//! Every key is accounted for: it is either interpreted, or known not to change a forward pass
//! (dropout rates, token ids, bookkeeping), or the load fails naming it. A checkpoint whose
//! config says something this decoder does not implement is refused, never run approximately.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::architecture::{
    check_count, positive, Activation, Architecture, LayerAttention, Rope, RopeScaling,
    TransformerConfig, MAX_CONTEXT, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_INTERMEDIATE,
    MAX_LAYERS, MAX_VOCAB, MAX_WINDOW,
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

    /// An optional count or size: a positive integer within `max` (checked before anything is
    /// allocated from it).
    fn count(&mut self, key: &str, max: usize) -> Result<Option<usize>, ConfigError> {
        let v = self.usize(key)?;
        if let Some(v) = v {
            check_count(&format!("'{key}'"), v, max).map_err(err)?;
        }
        Ok(v)
    }

    fn need_count(&mut self, key: &str, max: usize) -> Result<usize, ConfigError> {
        self.count(key, max)?
            .ok_or_else(|| err(format!("missing required key '{key}'")))
    }

    fn f64(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(err(format!("'{key}' must be a finite number, got {v}"))),
            },
        }
    }

    /// An optional float that must be finite and > 0 (a factor, a scale, a cap).
    fn positive(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.f64(key)?
            .map(|v| positive(&format!("'{key}'"), v).map_err(err))
            .transpose()
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
    let gemma = arch.is_gemma();
    // Counts and sizes first, each bounded, before anything is allocated from them.
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
    // Llama and Gemma even with an explicit head_dim.
    if !hidden_size.is_multiple_of(num_heads)
        && (explicit_head_dim.is_none() || matches!(arch, A::Llama | A::Gemma2 | A::Gemma3))
    {
        return Err(err(format!(
            "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads})"
        )));
    }
    let default_head_dim = if gemma { 256 } else { hidden_size / num_heads };
    let head_dim = explicit_head_dim.unwrap_or(default_head_dim);
    let intermediate_size = k.need_count("intermediate_size", MAX_INTERMEDIATE)?;
    let vocab_size = k.need_count("vocab_size", MAX_VOCAB)?;
    let max_position_embeddings =
        k.count("max_position_embeddings", MAX_CONTEXT)?
            .unwrap_or(match arch {
                A::Llama | A::Olmo2 => 2048,
                A::Mistral | A::Gemma3 => 131_072,
                A::Qwen2 | A::Qwen3 => 32_768,
                A::Gemma2 => 8192,
                A::Phi3 => 4096,
            });
    let rms_norm_eps = match k.f64("rms_norm_eps")? {
        Some(e) if e < 0.0 => {
            return Err(err(format!("'rms_norm_eps' must be >= 0, got {e}")));
        }
        Some(e) => e,
        None => match arch {
            A::Phi3 | A::Olmo2 => 1e-5,
            _ => 1e-6,
        },
    };

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
    if let Some(w) = window {
        check_count("'sliding_window'", w, MAX_WINDOW).map_err(err)?;
    }
    // Gemma 3 without `layer_types`: transformers (4.5x and 5) derives them from
    // `sliding_window_pattern`, default 6 (every 6th layer global). `_sliding_window_pattern` is
    // the attribute it writes back and never reads: a config whose `_sliding_window_pattern`
    // disagrees with the derivation means one thing to its author and another to transformers.
    let explicit_types = k.get("layer_types");
    let gemma3_pattern =
        if arch == A::Gemma3 {
            let pattern = k.usize("sliding_window_pattern")?;
            let written = k.usize("_sliding_window_pattern")?;
            if explicit_types.is_none() {
                if pattern == Some(0) {
                    return Err(err("'sliding_window_pattern' must be positive"));
                }
                let derived = pattern.unwrap_or(6);
                if let Some(w) = written.filter(|w| *w != derived) {
                    return Err(err(format!(
                    "'_sliding_window_pattern' = {w} but transformers derives layer_types from \
                     'sliding_window_pattern' (here {derived}{}), which would make every \
                     {derived}th layer global; set 'layer_types' (or 'sliding_window_pattern') \
                     explicitly",
                    if pattern.is_none() { ", the default" } else { "" }
                )));
                }
                derived
            } else {
                0
            }
        } else {
            0
        };
    let layer_types: Vec<String> = match explicit_types {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| err("'layer_types' must be a list of strings"))?,
        None => (0..num_layers)
            .map(|i| {
                let sliding = match arch {
                    A::Gemma2 => i % 2 == 0,
                    A::Gemma3 => !(i + 1).is_multiple_of(gemma3_pattern),
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
    if layer_types.len() != num_layers {
        return Err(err(format!(
            "layer_types has {} entries for {num_layers} layers",
            layer_types.len()
        )));
    }

    // Rotary embeddings: one, or (Gemma 3) one per layer type.
    let partial_rotary_factor = k.positive("partial_rotary_factor")?;
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
    if let (Some(p), Some(s)) = (rope_parameters, rope_scaling) {
        if p != s {
            return Err(err(
                "both 'rope_parameters' and 'rope_scaling' are set and differ (transformers 5 \
                 takes 'rope_scaling', transformers 4 ignores 'rope_parameters'); keep one",
            ));
        }
    }
    let mut rope_ctx = RopeContext {
        head_dim,
        max_position_embeddings,
        partial_rotary_factor,
        original_max_top,
        layout: RopeLayout::Transformers4,
    };
    let mut ropes = Vec::new();
    let mut layers = Vec::with_capacity(num_layers);
    if arch == A::Gemma3 {
        // Global layers: `rope_parameters.full_attention` or the top-level theta + scaling.
        // Local layers: `rope_parameters.sliding_attention` or `rope_local_base_freq`; never scaled.
        let nested = rope_parameters.and_then(Value::as_object);
        rope_ctx.layout = RopeLayout::PerLayerType;
        let global = match nested.and_then(|m| m.get("full_attention")) {
            Some(p) => rope_from_params(p, rope_theta_top.unwrap_or(default_theta), &rope_ctx)?,
            None => match rope_scaling {
                Some(s) => {
                    let v4 = RopeContext {
                        layout: RopeLayout::Transformers4,
                        ..rope_ctx
                    };
                    rope_from_params(s, rope_theta_top.unwrap_or(default_theta), &v4)?
                }
                None => rope_ctx.plain(rope_theta_top.unwrap_or(default_theta))?,
            },
        };
        let local = match nested.and_then(|m| m.get("sliding_attention")) {
            Some(p) => rope_from_params(p, rope_local_base.unwrap_or(10_000.0), &rope_ctx)?,
            None => rope_ctx.plain(rope_local_base.unwrap_or(10_000.0))?,
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
            (Some(p), _) => {
                rope_ctx.layout = RopeLayout::Transformers5;
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
                        arch.as_str()
                    )));
                }
                rope_from_params(p, rope_theta_top.unwrap_or(default_theta), &rope_ctx)?
            }
            None => rope_ctx.plain(rope_theta_top.unwrap_or(default_theta))?,
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
        let q = k.positive("query_pre_attn_scalar")?.unwrap_or(256.0);
        // transformers divides by a cap that is not null: 0 would be NaN there too.
        let attn_cap = k.positive("attn_logit_softcapping")?;
        let final_cap = k.positive("final_logit_softcapping")?;
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
        intermediate_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps,
        max_position_embeddings,
        attention_bias,
        attention_out_bias,
        mlp_bias,
        tie_word_embeddings: k.bool("tie_word_embeddings")?.unwrap_or(gemma),
        activation,
        qk_norm: arch.qk_norm(),
        norm_weight_offset: if gemma { 1.0 } else { 0.0 },
        embed_scale,
        attn_scale,
        attn_softcap,
        final_softcap,
        ropes,
        layers,
    })
}

/// Which transformers layout a rope parameter block comes from: it decides which
/// `original_max_position_embeddings` is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RopeLayout {
    /// `rope_scaling` (transformers 4).
    Transformers4,
    /// One flat `rope_parameters` (transformers 5).
    Transformers5,
    /// `rope_parameters` per layer type (transformers 5, Gemma 3).
    PerLayerType,
}

/// What a rope parameter block needs from the rest of the config.
#[derive(Clone, Copy)]
struct RopeContext {
    head_dim: usize,
    max_position_embeddings: usize,
    partial_rotary_factor: Option<f64>,
    original_max_top: Option<f64>,
    layout: RopeLayout,
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

    fn plain(&self, theta: f64) -> Result<Rope, ConfigError> {
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

    /// transformers 5 lets a top-level value override a flat `rope_parameters`; transformers 4
    /// reads the one in `rope_scaling`: a transformers-4 config where they differ is refused.
    #[test]
    fn original_max_position_embeddings_is_read_as_transformers_reads_it() {
        let llama3 = |layout: &str, top: &str| {
            cfg(&format!(
                r#", "model_type": "llama", "max_position_embeddings": 256{top},
                "{layout}": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}"#
            ))
        };
        let orig = |c: TransformerConfig| match c.ropes[0].scaling {
            RopeScaling::Llama3 {
                original_max_position_embeddings,
                ..
            } => original_max_position_embeddings,
            ref other => panic!("{other:?}"),
        };
        let top64 = r#", "original_max_position_embeddings": 64"#;
        let top32 = r#", "original_max_position_embeddings": 32"#;
        assert_eq!(orig(llama3("rope_parameters", top64).unwrap()), 64.0);
        assert_eq!(orig(llama3("rope_parameters", "").unwrap()), 32.0);
        assert_eq!(orig(llama3("rope_scaling", top32).unwrap()), 32.0);
        assert_eq!(orig(llama3("rope_scaling", "").unwrap()), 32.0);
        let e = llama3("rope_scaling", top64).unwrap_err();
        assert!(e.0.contains("transformers 4"), "{e}");
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
