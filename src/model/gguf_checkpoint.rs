//! Loading checkpoints from GGUF files (weights, hyper-parameters and the tokenizer metadata all
//! live in the one file), with llama.cpp's names and conventions for every supported family.
//! The file itself is read by [`crate::gguf`]; this module adds what a model needs from it.

use std::fs::File;
use std::io::BufReader;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::architecture::{
    check_count, Architecture, LayerAttention, QkNorm, Rope, RopeScaling, TransformerConfig,
    MAX_CONTEXT, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_VOCAB,
    MAX_WINDOW,
};
use super::decoder::{Block, Linear, RopeStyle, Transformer};
use super::family::Sliding;
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
        let architecture = Architecture::from_gguf_architecture(&arch_name).ok_or_else(|| {
            Error::model(
                &self.path,
                format!(
                    "unsupported architecture '{arch_name}' (supported GGUF architectures: {})",
                    Architecture::supported_gguf_architectures()
                ),
            )
        })?;
        Ok((arch_name, architecture))
    }

    /// Reads the architecture hyper-parameters, refusing metadata that changes the math and is
    /// not implemented (every `{arch}.*` key is accounted for).
    pub fn config(&self) -> Result<TransformerConfig> {
        let (arch_name, architecture) = self.architecture()?;
        let family = architecture.facts();
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
        // Counts and sizes first, each bounded, before anything is allocated from them.
        let count = |k: &str, max: usize| self.count(&p(k), max);
        let opt_count = |k: &str, max: usize| self.opt_count(&p(k), max);
        let hidden_size = count("embedding_length", MAX_HIDDEN)?;
        let num_heads = count("attention.head_count", MAX_HEADS)?;
        let num_layers = count("block_count", MAX_LAYERS)?;
        let num_kv_heads = opt_count("attention.head_count_kv", MAX_HEADS)?.unwrap_or(num_heads);
        if !num_heads.is_multiple_of(num_kv_heads) {
            return Err(refuse(format!(
                "{arch_name}.attention.head_count ({num_heads}) is not a multiple of \
                 {arch_name}.attention.head_count_kv ({num_kv_heads})"
            )));
        }
        let head_dim = match opt_count("attention.key_length", MAX_HEAD_DIM)? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
            None => {
                return Err(refuse(format!(
                    "{arch_name}.embedding_length ({hidden_size}) is not a multiple of \
                     {arch_name}.attention.head_count ({num_heads}) and no key_length is set"
                )))
            }
        };
        if let Some(v) = opt_count("attention.value_length", MAX_HEAD_DIM)? {
            if v != head_dim {
                return Err(refuse(format!(
                    "{arch_name}.attention.value_length={v} differs from the key length {head_dim}"
                )));
            }
        }
        let intermediate_size = count("feed_forward_length", MAX_INTERMEDIATE)?;
        let max_position_embeddings = opt_count("context_length", MAX_CONTEXT)?.unwrap_or(4096);
        let vocab_size = match opt_count("vocab_size", MAX_VOCAB)? {
            Some(v) => v,
            None => {
                let n = self
                    .get("tokenizer.ggml.tokens")?
                    .to_vec()
                    .map_err(|e| refuse(format!("tokenizer.ggml.tokens: {e}")))?
                    .len();
                check_count("the vocabulary (tokenizer.ggml.tokens)", n, MAX_VOCAB)
                    .map_err(refuse)?;
                n
            }
        };
        let rotary_dim = opt_count("rope.dimension_count", MAX_HEAD_DIM)?.unwrap_or(head_dim);
        if rotary_dim != head_dim && !family.partial_rotary {
            return Err(refuse(format!(
                "{arch_name}.rope.dimension_count={rotary_dim} (partial rotary) is not \
                 implemented for {arch_name}"
            )));
        }
        if rotary_dim % 2 != 0 || rotary_dim > head_dim {
            return Err(refuse(format!(
                "{arch_name}.rope.dimension_count={rotary_dim} does not fit the head size {head_dim}"
            )));
        }
        // Floats: NaN, infinite or negative values would make NaN logits.
        let theta = self.float(&p("rope.freq_base"))?.unwrap_or(10_000.0);
        if theta <= 1.0 {
            return Err(refuse(format!(
                "{arch_name}.rope.freq_base must be a finite number > 1, got {theta}"
            )));
        }
        let rms_norm_eps = self
            .float(&p("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        if rms_norm_eps < 0.0 {
            return Err(refuse(format!(
                "{arch_name}.attention.layer_norm_rms_epsilon must be >= 0, got {rms_norm_eps}"
            )));
        }
        // 0 switches a soft-cap off (llama.cpp's convention); a negative cap flips logits.
        let softcap = |key: &str| -> Result<Option<f64>> {
            match self.float(&p(key))? {
                Some(c) if c < 0.0 => Err(refuse(format!(
                    "{arch_name}.{key} must be >= 0 (0: off), got {c}"
                ))),
                c => Ok(c.filter(|c| *c > 0.0)),
            }
        };
        let attn_softcap = softcap("attn_logit_softcapping")?;
        let final_softcap = softcap("final_logit_softcapping")?;
        let scaling_type = self
            .get_str(&p("rope.scaling.type"))
            .unwrap_or("none")
            .to_string();
        let factor = self.float(&p("rope.scaling.factor"))?;
        if let Some(f) = factor.filter(|f| *f < 0.0) {
            return Err(refuse(format!(
                "{arch_name}.rope.scaling.factor must be >= 0 (0: off), got {f}"
            )));
        }
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
        if let Some(f) = self.float(&p("rope.scaling.attn_factor"))? {
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
        let window = opt_count("attention.sliding_window", MAX_WINDOW)?;
        // llama.cpp's rule for Gemma's query scale (the HF `query_pre_attn_scalar` is not
        // stored): hidden/heads for the 27B models, else head_dim.
        let attn_scale = if family.gguf_query_scale_by_hidden_at == Some(num_layers) {
            ((hidden_size / num_heads) as f64).powf(-0.5)
        } else {
            (head_dim as f64).powf(-0.5)
        };
        let base_rope = Rope {
            theta,
            rotary_dim,
            scaling,
        };
        let (ropes, layers) = match family.sliding {
            Sliding::Periodic { period, .. } => {
                let w = window.ok_or_else(|| {
                    refuse(format!("{arch_name}.attention.sliding_window is missing"))
                })?;
                let sliding = self.sliding_pattern(
                    &p("attention.sliding_window_pattern"),
                    num_layers,
                    period,
                )?;
                let mut ropes = vec![base_rope];
                let local_rope = family.local_rope_theta_default;
                if let Some(theta) = local_rope {
                    ropes.push(Rope {
                        theta,
                        rotary_dim,
                        scaling: RopeScaling::None,
                    });
                }
                let layers = (0..num_layers)
                    .map(|i| {
                        let sliding = sliding[i];
                        LayerAttention {
                            sliding_window: sliding.then_some(w),
                            rope: usize::from(local_rope.is_some() && sliding),
                        }
                    })
                    .collect();
                (ropes, layers)
            }
            sliding => {
                // Which layers of other families slide is not recorded in GGUF.
                if window.is_some() && !matches!(sliding, Sliding::EveryLayer { .. }) {
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
            let factors = self.rope_freqs(rotary_dim / 2)?;
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
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps,
            max_position_embeddings,
            attention_bias: self.has_tensor("blk.0.attn_q.bias"),
            attention_out_bias: self.has_tensor("blk.0.attn_output.bias"),
            mlp_bias: self.has_tensor("blk.0.ffn_up.bias"),
            tie_word_embeddings: !self.has_tensor("output.weight"),
            activation: family.activation,
            qk_norm: family.qk_norm,
            // llama.cpp's converter already stores Gemma's norms as `1 + w`.
            norm_weight_offset: 0.0,
            embed_scale: family
                .embeddings_scaled
                .then(|| (hidden_size as f64).sqrt() as f32),
            attn_scale,
            attn_softcap,
            final_softcap,
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

    /// The `rope_freqs` divisors (llama.cpp's encoding of Llama 3 RoPE scaling): one finite,
    /// positive divisor per rotated pair.
    fn rope_freqs(&self, pairs: usize) -> Result<Vec<f32>> {
        self.expect_shape("rope_freqs.weight", &[pairs])?;
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
        let factors = t
            .dequantize(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if let Some(f) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(Error::model(
                &self.path,
                format!("tensor 'rope_freqs.weight' holds {f}: divisors must be finite and > 0"),
            ));
        }
        Ok(factors)
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
        use super::architecture::BlockNorms;
        let cfg = self.config()?;
        self.check_tensor_shapes(&cfg)?;
        let arch = cfg.architecture;
        // llama.cpp permutes llama q/k rows for its interleaved RoPE; other families are stored
        // unpermuted.
        let permuted = arch.facts().gguf_permuted_qk;
        // Dense modes convert each weight once, as it is read, to the compute dtype: peak memory
        // is the model in that dtype plus one tensor in f32.
        let dtype = mode.weight_dtype().unwrap_or(DType::F32);
        let embed = self
            .dense_tensor("token_embd.weight", device)?
            .to_dtype(dtype)?;
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
            let qkv = if arch.facts().fused_projections {
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
            let gate_up = if arch.facts().fused_projections {
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
        super::safetensors::check_shapes(&self.path, &cfg, &embed, &lm_head, &final_norm, &blocks)?;
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

    /// Checks every tensor the decoder will read against the shape the config implies, before
    /// any is read: an untied `output.weight` with more rows than the vocabulary would shift
    /// every logit, one with fewer would panic in the forward. (Tensors the config does not use
    /// are refused by name after the load.)
    fn check_tensor_shapes(&self, cfg: &TransformerConfig) -> Result<()> {
        use super::architecture::BlockNorms;
        let (h, d, v, i) = (
            cfg.hidden_size,
            cfg.head_dim,
            cfg.vocab_size,
            cfg.intermediate_size,
        );
        let (q, kv) = (cfg.num_heads * d, cfg.num_kv_heads * d);
        self.expect_shape("token_embd.weight", &[v, h])?;
        if !cfg.tie_word_embeddings {
            self.expect_shape("output.weight", &[v, h])?;
        }
        self.expect_shape("output_norm.weight", &[h])?;
        let (q_norm, k_norm) = match cfg.qk_norm {
            Some(QkNorm::Whole) => (q, kv),
            _ => (d, d),
        };
        let norms = cfg.architecture.block_norms();
        let mut shapes: Vec<(&str, Vec<usize>)> = Vec::new();
        if norms != BlockNorms::Post {
            shapes.extend([("attn_norm.weight", vec![h]), ("ffn_norm.weight", vec![h])]);
        }
        if norms != BlockNorms::Pre {
            shapes.extend([
                ("post_attention_norm.weight", vec![h]),
                ("post_ffw_norm.weight", vec![h]),
            ]);
        }
        if cfg.architecture.facts().fused_projections {
            shapes.extend([
                ("attn_qkv.weight", vec![q + 2 * kv, h]),
                ("ffn_up.weight", vec![2 * i, h]),
            ]);
        } else {
            shapes.extend([
                ("attn_q.weight", vec![q, h]),
                ("attn_k.weight", vec![kv, h]),
                ("attn_v.weight", vec![kv, h]),
                ("ffn_gate.weight", vec![i, h]),
                ("ffn_up.weight", vec![i, h]),
            ]);
        }
        shapes.extend([
            ("attn_output.weight", vec![h, q]),
            ("ffn_down.weight", vec![h, i]),
        ]);
        if cfg.attention_bias {
            shapes.extend([
                ("attn_q.bias", vec![q]),
                ("attn_k.bias", vec![kv]),
                ("attn_v.bias", vec![kv]),
            ]);
        }
        if cfg.attention_out_bias {
            shapes.push(("attn_output.bias", vec![h]));
        }
        if cfg.mlp_bias {
            shapes.extend([
                ("ffn_gate.bias", vec![i]),
                ("ffn_up.bias", vec![i]),
                ("ffn_down.bias", vec![h]),
            ]);
        }
        if cfg.qk_norm.is_some() {
            shapes.extend([
                ("attn_q_norm.weight", vec![q_norm]),
                ("attn_k_norm.weight", vec![k_norm]),
            ]);
        }
        for layer in 0..cfg.num_layers {
            for (name, want) in &shapes {
                self.expect_shape(&format!("blk.{layer}.{name}"), want)?;
            }
        }
        Ok(())
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
                    parts.push(w.to_dtype(mode.weight_dtype().unwrap_or(DType::F32))?);
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
