//! Loading checkpoints from GGUF files (weights, hyper-parameters and the tokenizer metadata all
//! live in the one file), with llama.cpp's names and conventions for every supported family.
//! The file itself is read by [`crate::gguf`]; this module adds what a model needs from it.

use std::fs::File;
use std::io::BufReader;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::config::{
    Activation, Architecture, LayerAttention, QkNorm, Rope, RopeScaling, TransformerConfig,
};
use super::decoder::{Block, Linear, RopeStyle, Transformer};
use super::ComputeMode;
use crate::error::{Error, Result};
pub use crate::gguf::GgufFile;

impl GgufFile {
    /// The `general.architecture` string and the family it names.
    fn architecture(&self) -> Result<(String, Architecture)> {
        let arch_name = self
            .get_str("general.architecture")
            .ok_or_else(|| Error::model(&self.path, "missing general.architecture"))?
            .to_string();
        let architecture = match arch_name.as_str() {
            "gemma3_text" | "mistral" => None,
            n => Architecture::parse(n),
        }
        .ok_or_else(|| {
            Error::model(
                &self.path,
                format!(
                    "unsupported architecture '{arch_name}' (supported GGUF architectures: \
                     llama, qwen2, qwen3, gemma2, gemma3, phi3, olmo2)"
                ),
            )
        })?;
        Ok((arch_name, architecture))
    }

    /// Reads the architecture hyper-parameters, refusing metadata that changes the math and is
    /// not implemented (every `{arch}.*` key is accounted for).
    pub fn config(&self) -> Result<TransformerConfig> {
        let (arch_name, architecture) = self.architecture()?;
        let refuse = |msg: String| Error::model(&self.path, msg);
        let p = |k: &str| format!("{arch_name}.{k}");
        let prefix = format!("{arch_name}.");
        for (key, value) in self.metadata() {
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            if !KNOWN_ARCH_KEYS.contains(&rest) && !value_is_off(value) {
                return Err(refuse(format!(
                    "unsupported GGUF key '{key}': hindsight refuses settings it does not \
                     implement rather than score with them ignored"
                )));
            }
        }
        let hidden_size = self.get_usize(&p("embedding_length"))?;
        let num_heads = self.get_usize(&p("attention.head_count"))?;
        let num_layers = self.get_usize(&p("block_count"))?;
        let num_kv_heads = self
            .get_usize(&p("attention.head_count_kv"))
            .unwrap_or(num_heads);
        let head_dim = self
            .get_usize(&p("attention.key_length"))
            .unwrap_or(hidden_size / num_heads.max(1));
        if let Ok(v) = self.get_usize(&p("attention.value_length")) {
            if v != head_dim {
                return Err(refuse(format!(
                    "{arch_name}.attention.value_length={v} differs from the key length {head_dim}"
                )));
            }
        }
        let vocab_size = match self.get_usize(&p("vocab_size")) {
            Ok(v) => v,
            Err(_) => self
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .map_err(|e| Error::model(&self.path, e.to_string()))?
                .len(),
        };
        let rotary_dim = self
            .get_usize(&p("rope.dimension_count"))
            .unwrap_or(head_dim);
        if rotary_dim != head_dim && architecture != Architecture::Phi3 {
            return Err(refuse(format!(
                "{arch_name}.rope.dimension_count={rotary_dim} (partial rotary) is not \
                 implemented for {arch_name}"
            )));
        }
        let theta = self.get_f64_or(&p("rope.freq_base"), 10_000.0);
        let scaling_type = self
            .get_str(&p("rope.scaling.type"))
            .unwrap_or("none")
            .to_string();
        let factor = self.get_f64(&p("rope.scaling.factor"));
        let scaling = match (scaling_type.as_str(), factor) {
            ("none", _) => RopeScaling::None,
            (_, Some(f)) if f == 1.0 || f == 0.0 => RopeScaling::None,
            ("linear", Some(f)) => RopeScaling::Linear { factor: f },
            (other, _) => {
                return Err(refuse(format!(
                    "{arch_name}.rope.scaling.type='{other}' is not implemented for GGUF \
                     (none, linear, or a rope_freqs tensor); load the Hugging Face directory instead"
                )))
            }
        };
        if let Some(f) = self.get_f64(&p("rope.scaling.attn_factor")) {
            if f != 1.0 {
                return Err(refuse(format!(
                    "{arch_name}.rope.scaling.attn_factor={f} is not implemented"
                )));
            }
        }
        for t in ["rope_factors_long.weight", "rope_factors_short.weight"] {
            if self.has_tensor(t) {
                return Err(refuse(format!(
                    "tensor '{t}' (LongRoPE) is not implemented; refusing rather than \
                     scoring with wrong positions"
                )));
            }
        }
        let window = self.get_usize(&p("attention.sliding_window")).ok();
        let gemma = matches!(architecture, Architecture::Gemma2 | Architecture::Gemma3);
        // llama.cpp's rule for Gemma's query scale (the HF `query_pre_attn_scalar` is not
        // stored): hidden/heads for the 27B models (46 / 62 layers), else head_dim.
        let big_gemma = (architecture == Architecture::Gemma2 && num_layers == 46)
            || (architecture == Architecture::Gemma3 && num_layers == 62);
        let attn_scale = if big_gemma {
            ((hidden_size / num_heads.max(1)) as f64).powf(-0.5)
        } else {
            (head_dim as f64).powf(-0.5)
        };
        let base_rope = Rope {
            theta,
            rotary_dim,
            scaling,
        };
        let (ropes, layers) = match architecture {
            Architecture::Gemma2 | Architecture::Gemma3 => {
                let w = window.ok_or_else(|| {
                    refuse(format!("{arch_name}.attention.sliding_window is missing"))
                })?;
                let default_pattern = if architecture == Architecture::Gemma2 {
                    2
                } else {
                    6
                };
                let sliding = self.sliding_pattern(
                    &p("attention.sliding_window_pattern"),
                    num_layers,
                    default_pattern,
                )?;
                let mut ropes = vec![base_rope];
                if architecture == Architecture::Gemma3 {
                    ropes.push(Rope {
                        theta: 10_000.0,
                        rotary_dim,
                        scaling: RopeScaling::None,
                    });
                }
                let layers = (0..num_layers)
                    .map(|i| {
                        let sliding = sliding[i];
                        LayerAttention {
                            sliding_window: sliding.then_some(w),
                            rope: usize::from(architecture == Architecture::Gemma3 && sliding),
                        }
                    })
                    .collect();
                (ropes, layers)
            }
            _ => {
                if window.is_some() && architecture != Architecture::Phi3 {
                    return Err(refuse(format!(
                        "{arch_name}.attention.sliding_window is not implemented for GGUF \
                         {arch_name} (which layers use it is not recorded)"
                    )));
                }
                let layers = (0..num_layers)
                    .map(|_| LayerAttention {
                        sliding_window: window,
                        rope: 0,
                    })
                    .collect();
                (vec![base_rope], layers)
            }
        };
        let mut ropes = ropes;
        if self.has_tensor("rope_freqs.weight") {
            let factors = self.rope_freqs()?;
            if ropes[0].scaling != RopeScaling::None {
                return Err(refuse(
                    "both rope_freqs and a rope scaling type are set".into(),
                ));
            }
            ropes[0].scaling = RopeScaling::FreqFactors(factors);
        }
        let cfg = TransformerConfig {
            architecture,
            hidden_size,
            intermediate_size: self.get_usize(&p("feed_forward_length"))?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: self.get_f64_or(&p("attention.layer_norm_rms_epsilon"), 1e-5),
            max_position_embeddings: self.get_usize(&p("context_length")).unwrap_or(4096),
            attention_bias: self.has_tensor("blk.0.attn_q.bias"),
            attention_out_bias: self.has_tensor("blk.0.attn_output.bias"),
            mlp_bias: self.has_tensor("blk.0.ffn_up.bias"),
            tie_word_embeddings: !self.has_tensor("output.weight"),
            activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            qk_norm: match architecture {
                Architecture::Qwen3 | Architecture::Gemma3 => Some(QkNorm::PerHead),
                Architecture::Olmo2 => Some(QkNorm::Whole),
                _ => None,
            },
            // llama.cpp's converter already stores Gemma's norms as `1 + w`.
            norm_weight_offset: 0.0,
            embed_scale: gemma.then(|| (hidden_size as f64).sqrt() as f32),
            attn_scale,
            attn_softcap: self
                .get_f64(&p("attn_logit_softcapping"))
                .filter(|c| *c > 0.0),
            final_softcap: self
                .get_f64(&p("final_logit_softcapping"))
                .filter(|c| *c > 0.0),
            ropes,
            layers,
        };
        cfg.check().map_err(refuse)?;
        Ok(cfg)
    }

    /// Which layers use the sliding window: llama.cpp's `sliding_window_pattern` (a period `n`:
    /// layer `i` slides when `i % n < n - 1`; or one bool per layer), else the family default.
    fn sliding_pattern(&self, key: &str, layers: usize, default: usize) -> Result<Vec<bool>> {
        let period = |n: usize| (0..layers).map(|i| i % n < n - 1).collect::<Vec<_>>();
        let Some(v) = self.metadata().get(key) else {
            return Ok(period(default));
        };
        if let Ok(items) = v.to_vec() {
            let flags = items
                .iter()
                .map(|x| x.to_bool())
                .collect::<std::result::Result<Vec<bool>, _>>()
                .map_err(|e| Error::model(&self.path, format!("{key}: {e}")))?;
            if flags.len() != layers {
                return Err(Error::model(
                    &self.path,
                    format!("{key} has {} entries for {layers} layers", flags.len()),
                ));
            }
            return Ok(flags);
        }
        let n = self.get_usize(key)?;
        if n == 0 {
            return Err(Error::model(&self.path, format!("{key} must be positive")));
        }
        Ok(period(n))
    }

    /// The `rope_freqs` divisors (llama.cpp's encoding of Llama 3 RoPE scaling).
    fn rope_freqs(&self) -> Result<Vec<f32>> {
        let mut f = File::open(&self.path).map_err(|source| Error::Io {
            action: "opening model",
            path: self.path.clone(),
            source,
        })?;
        let mut r = BufReader::new(&mut f);
        let t = self
            .content
            .tensor(&mut r, "rope_freqs.weight", &Device::Cpu)
            .map_err(|e| Error::model(&self.path, format!("tensor 'rope_freqs.weight': {e}")))?;
        Ok(t.dequantize(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// A norm weight as a plain vector (q/k norms run on the host).
    fn norm_vec(&mut self, name: &str, device: &Device) -> Result<Vec<f32>> {
        Ok(self
            .dense_tensor(name, device)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    fn opt_dense(&mut self, present: bool, name: &str, device: &Device) -> Result<Option<Tensor>> {
        if present {
            self.dense_tensor(name, device).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads all weights into a runnable transformer.
    pub fn load_transformer(&mut self, mode: ComputeMode, device: &Device) -> Result<Transformer> {
        use super::config::BlockNorms;
        let cfg = self.config()?;
        let arch = cfg.architecture;
        // llama.cpp permutes llama q/k rows for its interleaved RoPE; other families are stored
        // unpermuted.
        let permuted = arch == Architecture::Llama;
        let embed = self.dense_tensor("token_embd.weight", device)?;
        let lm_head = if cfg.tie_word_embeddings {
            match mode {
                ComputeMode::F32 | ComputeMode::Bf16 | ComputeMode::F16 => Linear::Dense {
                    w: embed.clone(),
                    bias: None,
                },
                ComputeMode::Quantized => Linear::Quantized {
                    parts: vec![QMatMul::from_qtensor(
                        self.qtensor("token_embd.weight", device)?,
                    )?],
                    bias: None,
                },
            }
        } else {
            self.linear(&["output.weight"], &[], mode, device, None)?
        };
        let final_norm = self.dense_tensor("output_norm.weight", device)?;
        let norms = arch.block_norms();
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = |n: &str| format!("blk.{i}.{n}");
            let unpermute = match (mode, permuted) {
                (ComputeMode::Quantized, _) | (_, false) => None,
                (_, true) => Some((cfg.num_heads, cfg.num_kv_heads)),
            };
            let qkv = if arch == Architecture::Phi3 {
                self.linear(&[&b("attn_qkv.weight")], &[], mode, device, None)?
            } else {
                let biases = if cfg.attention_bias {
                    vec![b("attn_q.bias"), b("attn_k.bias"), b("attn_v.bias")]
                } else {
                    Vec::new()
                };
                let biases: Vec<&str> = biases.iter().map(String::as_str).collect();
                self.linear(
                    &[
                        &b("attn_q.weight"),
                        &b("attn_k.weight"),
                        &b("attn_v.weight"),
                    ],
                    &biases,
                    mode,
                    device,
                    unpermute,
                )?
            };
            let gate_up = if arch == Architecture::Phi3 {
                self.linear(&[&b("ffn_up.weight")], &[], mode, device, None)?
            } else {
                let biases = if cfg.mlp_bias {
                    vec![b("ffn_gate.bias"), b("ffn_up.bias")]
                } else {
                    Vec::new()
                };
                let biases: Vec<&str> = biases.iter().map(String::as_str).collect();
                self.linear(
                    &[&b("ffn_gate.weight"), &b("ffn_up.weight")],
                    &biases,
                    mode,
                    device,
                    None,
                )?
            };
            let o_bias = if cfg.attention_out_bias {
                vec![b("attn_output.bias")]
            } else {
                Vec::new()
            };
            let o_bias: Vec<&str> = o_bias.iter().map(String::as_str).collect();
            let down_bias = if cfg.mlp_bias {
                vec![b("ffn_down.bias")]
            } else {
                Vec::new()
            };
            let down_bias: Vec<&str> = down_bias.iter().map(String::as_str).collect();
            let (q_norm, k_norm) = if cfg.qk_norm.is_some() {
                (
                    Some(self.norm_vec(&b("attn_q_norm.weight"), device)?),
                    Some(self.norm_vec(&b("attn_k_norm.weight"), device)?),
                )
            } else {
                (None, None)
            };
            let pre = norms != BlockNorms::Post;
            let post = norms != BlockNorms::Pre;
            blocks.push(Block {
                attn_norm: self.opt_dense(pre, &b("attn_norm.weight"), device)?,
                qkv,
                q_norm,
                k_norm,
                o: self.linear(&[&b("attn_output.weight")], &o_bias, mode, device, None)?,
                post_attn_norm: self.opt_dense(post, &b("post_attention_norm.weight"), device)?,
                mlp_norm: self.opt_dense(pre, &b("ffn_norm.weight"), device)?,
                gate_up,
                down: self.linear(&[&b("ffn_down.weight")], &down_bias, mode, device, None)?,
                post_mlp_norm: self.opt_dense(post, &b("post_ffw_norm.weight"), device)?,
            });
        }
        self.check_all_tensors_known(&cfg)?;
        super::safetensors::check_shapes(&self.path, &cfg, &embed, &blocks)?;
        let rope_style = if permuted && mode == ComputeMode::Quantized {
            RopeStyle::Interleaved
        } else {
            RopeStyle::HalfSplit
        };
        Ok(Transformer::new(
            cfg,
            embed,
            lm_head,
            final_norm,
            blocks,
            rope_style,
            device.clone(),
        ))
    }

    /// Refuses tensors the decoder did not read (a block layout or bias we do not implement):
    /// a weight silently left out would make every score wrong.
    fn check_all_tensors_known(&self, cfg: &TransformerConfig) -> Result<()> {
        let applied_freqs = matches!(cfg.ropes[0].scaling, RopeScaling::FreqFactors(_));
        let mut unused: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .filter(|n| !self.used.contains(*n))
            .filter(|n| !(applied_freqs && *n == "rope_freqs.weight"))
            .collect();
        unused.sort_unstable();
        if let Some(first) = unused.first() {
            return Err(Error::model(
                &self.path,
                format!(
                    "{} tensor(s) the {} decoder would not use (e.g. '{first}'); refusing \
                     rather than ignoring weights",
                    unused.len(),
                    cfg.architecture.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Builds a (possibly fused) linear layer from one or more `[out, in]` weights.
    /// `unpermute = Some((heads, kv_heads))` undoes llama.cpp's q/k row permutation on the
    /// first two parts (q and k) of a fused q/k/v weight.
    fn linear(
        &mut self,
        names: &[&str],
        biases: &[&str],
        mode: ComputeMode,
        device: &Device,
        unpermute: Option<(usize, usize)>,
    ) -> Result<Linear> {
        let bias = if biases.is_empty() {
            None
        } else {
            let parts = biases
                .iter()
                .map(|n| self.dense_tensor(n, device))
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&parts, 0)?)
        };
        match mode {
            ComputeMode::F32 | ComputeMode::Bf16 | ComputeMode::F16 => {
                let mut parts = Vec::with_capacity(names.len());
                for (idx, name) in names.iter().enumerate() {
                    let w = self.dense_tensor(name, device)?;
                    let w = match (unpermute, idx) {
                        (Some((h, _)), 0) => unpermute_rows(&w, h)?,
                        (Some((_, kv)), 1) => unpermute_rows(&w, kv)?,
                        _ => w,
                    };
                    parts.push(w);
                }
                let w = if parts.len() == 1 {
                    parts.remove(0)
                } else {
                    Tensor::cat(&parts, 0)?
                };
                Ok(Linear::Dense { w, bias })
            }
            ComputeMode::Quantized => {
                let mut parts = Vec::with_capacity(names.len());
                for name in names {
                    parts.push(QMatMul::from_qtensor(self.qtensor(name, device)?)?);
                }
                Ok(Linear::Quantized { parts, bias })
            }
        }
    }
}

/// `{arch}.*` metadata keys that are interpreted by [`GgufFile::config`] or never change the
/// forward pass; any other key with a non-zero value is refused.
const KNOWN_ARCH_KEYS: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "rope.freq_base",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.attn_factor",
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",
    "vocab_size",
    "attn_logit_softcapping",
    "final_logit_softcapping",
];

/// A metadata value that switches a feature off (0, false, empty): harmless whatever the key.
fn value_is_off(v: &Value) -> bool {
    if let Ok(b) = v.to_bool() {
        return !b;
    }
    if let Ok(x) = v.to_u32() {
        return x == 0;
    }
    if let Ok(x) = v.to_u64() {
        return x == 0;
    }
    if let Ok(x) = v.to_i32() {
        return x == 0;
    }
    if let Ok(x) = v.to_f32() {
        return x == 0.0;
    }
    if let Ok(s) = v.to_string() {
        return s.is_empty();
    }
    false
}

/// Inverse of llama.cpp's `permute(w, n_head)`: rows grouped `(head, half, 2)` back to
/// `(head, 2, half)`, so the half-split RoPE of the Hugging Face reference applies.
pub fn unpermute_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let half = out / heads / 2;
    Ok(w.reshape((heads, half, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))?)
}
