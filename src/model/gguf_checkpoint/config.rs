//! Reading a GGUF file's `{arch}.*` metadata into a [`TransformerConfig`], with the family's
//! defaults from the family table and every key accounted for.

use super::*;

impl GgufFile {
    /// The `general.architecture` string and the family it names.
    pub(super) fn architecture(&self) -> Result<(String, Architecture)> {
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
    pub(super) fn sliding_pattern(
        &self,
        key: &str,
        layers: usize,
        default: usize,
    ) -> Result<Vec<bool>> {
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
    pub(super) fn rope_freqs(&self, pairs: usize) -> Result<Vec<f32>> {
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
}

/// `{arch}.*` metadata keys that are interpreted by [`GgufFile::config`] or never change the
/// forward pass; any other key with a non-zero value is refused.
pub(super) const KNOWN_ARCH_KEYS: &[&str] = &[
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
pub(super) fn value_is_off(v: &Value) -> bool {
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
