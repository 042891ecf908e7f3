//! Writing the embedded GGUF model as a Hugging Face directory (for trainers, and to test the loader).

use super::*;

/// Writes a GGUF llama/qwen2 model as a Hugging Face directory (f32 safetensors with the q/k
/// permutation undone, `config.json`, `tokenizer.json`, `tokenizer_config.json`).
pub fn export_gguf_as_hf(gguf_path: &Path, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let mut gguf = GgufFile::open(gguf_path)?;
    let cfg = gguf.config()?;
    let plain_rope = cfg
        .ropes
        .iter()
        .all(|r| r.scaling == super::super::architecture::RopeScaling::None);
    if !matches!(cfg.architecture, Architecture::Llama | Architecture::Qwen2) || !plain_rope {
        return Err(Error::model(
            gguf_path,
            format!(
                "export-hf writes llama and qwen2 models without RoPE scaling; this is {}",
                cfg.architecture.as_str()
            ),
        ));
    }
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let permuted = cfg.architecture.facts().gguf_permuted_qk;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        action: "creating",
        path: out.to_path_buf(),
        source,
    })?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut put =
        |g: &mut GgufFile, gname: &str, hname: String, heads: Option<usize>| -> Result<()> {
            let t = g.dense_tensor(gname, &device)?;
            let t = match (heads, permuted) {
                (Some(h), true) => unpermute_rows(&t, h)?,
                _ => t,
            };
            tensors.insert(hname, t);
            Ok(())
        };
    put(
        &mut gguf,
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        None,
    )?;
    put(
        &mut gguf,
        "output_norm.weight",
        "model.norm.weight".into(),
        None,
    )?;
    if !cfg.tie_word_embeddings {
        put(&mut gguf, "output.weight", "lm_head.weight".into(), None)?;
    }
    for i in 0..cfg.num_layers {
        let g = |n: &str| format!("blk.{i}.{n}");
        let h = |n: &str| format!("model.layers.{i}.{n}");
        put(
            &mut gguf,
            &g("attn_norm.weight"),
            h("input_layernorm.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("attn_q.weight"),
            h("self_attn.q_proj.weight"),
            Some(cfg.num_heads),
        )?;
        put(
            &mut gguf,
            &g("attn_k.weight"),
            h("self_attn.k_proj.weight"),
            Some(cfg.num_kv_heads),
        )?;
        put(
            &mut gguf,
            &g("attn_v.weight"),
            h("self_attn.v_proj.weight"),
            None,
        )?;
        if cfg.attention_bias {
            put(
                &mut gguf,
                &g("attn_q.bias"),
                h("self_attn.q_proj.bias"),
                None,
            )?;
            put(
                &mut gguf,
                &g("attn_k.bias"),
                h("self_attn.k_proj.bias"),
                None,
            )?;
            put(
                &mut gguf,
                &g("attn_v.bias"),
                h("self_attn.v_proj.bias"),
                None,
            )?;
        }
        put(
            &mut gguf,
            &g("attn_output.weight"),
            h("self_attn.o_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_norm.weight"),
            h("post_attention_layernorm.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_gate.weight"),
            h("mlp.gate_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_up.weight"),
            h("mlp.up_proj.weight"),
            None,
        )?;
        put(
            &mut gguf,
            &g("ffn_down.weight"),
            h("mlp.down_proj.weight"),
            None,
        )?;
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    let config = serde_json::json!({
        "model_type": cfg.architecture.as_str(),
        "architectures": [if cfg.architecture == Architecture::Qwen2 { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.ropes.first().map(|r| r.theta).unwrap_or(10_000.0),
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "attention_bias": cfg.attention_bias,
        "torch_dtype": "float32",
    });
    write_json(&out.join("config.json"), &config)?;
    tokenizer.save_hf(out)?;
    Ok(())
}

pub(super) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::model(path, format!("serialising: {e}")))?;
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}
