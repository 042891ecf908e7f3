//! The second model source: a Hugging Face directory with `config.json`, `*.safetensors`,
//! `tokenizer.json` and (for the chat template) `tokenizer_config.json`; plus an exporter that
//! writes the embedded GGUF model in that layout (for trainers, and to test this loader).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::{Architecture, TransformerConfig};
use super::gguf::{unpermute_rows, GgufFile};
use super::llama::{Block, Linear, RopeStyle, Transformer};
use super::{sha256_file, ComputeMode, LoadedModel, ModelInfo};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::model(path, format!("invalid JSON: {e}")))
}

/// Loads a Hugging Face model directory. Quantized mode is not offered for this source.
pub fn load_dir(dir: &Path, mode: ComputeMode, device: &Device) -> Result<LoadedModel> {
    if mode != ComputeMode::F32 {
        return Err(Error::model(
            dir,
            "quantized compute is only available for GGUF models; use f32",
        ));
    }
    let hf: HfConfig = read_json(&dir.join("config.json"))?;
    let arch_name = hf.model_type.clone().unwrap_or_else(|| "llama".into());
    let architecture = Architecture::parse(&arch_name).ok_or_else(|| {
        Error::model(
            dir,
            format!("unsupported model_type '{arch_name}' (llama, qwen2)"),
        )
    })?;
    let cfg = TransformerConfig {
        architecture,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        vocab_size: hf.vocab_size,
        rope_theta: hf.rope_theta.unwrap_or(10_000.0),
        rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        max_position_embeddings: hf.max_position_embeddings.unwrap_or(4096),
        attention_bias: hf
            .attention_bias
            .unwrap_or(architecture == Architecture::Qwen2),
        tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
    };

    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            action: "listing",
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::model(dir, "no *.safetensors file in the directory"));
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut hasher_input = String::new();
    for f in &files {
        tensors.extend(candle_core::safetensors::load(f, device)?);
        hasher_input.push_str(&sha256_file(f)?);
    }
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| Error::model(dir, format!("missing tensor '{name}'")))?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let embed = take("model.embed_tokens.weight")?;
    let lm_head_w = if cfg.tie_word_embeddings {
        embed.clone()
    } else {
        take("lm_head.weight")?
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let q = take(&p("self_attn.q_proj.weight"))?;
        let k = take(&p("self_attn.k_proj.weight"))?;
        let v = take(&p("self_attn.v_proj.weight"))?;
        let bias = if cfg.attention_bias {
            Some(Tensor::cat(
                &[
                    take(&p("self_attn.q_proj.bias"))?,
                    take(&p("self_attn.k_proj.bias"))?,
                    take(&p("self_attn.v_proj.bias"))?,
                ],
                0,
            )?)
        } else {
            None
        };
        let gate = take(&p("mlp.gate_proj.weight"))?;
        let up = take(&p("mlp.up_proj.weight"))?;
        blocks.push(Block {
            attn_norm: take(&p("input_layernorm.weight"))?,
            qkv: dense(Tensor::cat(&[q, k, v], 0)?, bias)?,
            o: dense(take(&p("self_attn.o_proj.weight"))?, None)?,
            mlp_norm: take(&p("post_attention_layernorm.weight"))?,
            gate_up: dense(Tensor::cat(&[gate, up], 0)?, None)?,
            down: dense(take(&p("mlp.down_proj.weight"))?, None)?,
        });
    }
    let final_norm = take("model.norm.weight")?;
    let transformer = Transformer::new(
        cfg.clone(),
        embed,
        dense(lm_head_w, None)?,
        final_norm,
        blocks,
        RopeStyle::HalfSplit,
        device.clone(),
    );
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let weights_sha256 = if files.len() == 1 {
        hasher_input
    } else {
        crate::util::sha256_hex(hasher_input.as_bytes())
    };
    let info = ModelInfo {
        model_id: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        architecture: architecture.as_str().to_string(),
        source: dir.display().to_string(),
        weights_sha256,
        tokenizer_sha256: tokenizer.fingerprint().to_string(),
        chat_template_sha256: tokenizer.chat_template_sha256(),
        compute_dtype: ComputeMode::F32.as_str().to_string(),
        vocab_size: cfg.vocab_size,
    };
    Ok(LoadedModel {
        transformer,
        tokenizer,
        info,
    })
}

fn dense(w: Tensor, bias: Option<Tensor>) -> Result<Linear> {
    Ok(Linear::Dense { w, bias })
}

/// Writes a GGUF llama/qwen2 model as a Hugging Face directory (f32 safetensors with the q/k
/// permutation undone, `config.json`, `tokenizer.json`, `tokenizer_config.json`).
pub fn export_gguf_as_hf(gguf_path: &Path, out: &Path) -> Result<()> {
    let device = Device::Cpu;
    let mut gguf = GgufFile::open(gguf_path)?;
    let cfg = gguf.config()?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let permuted = cfg.architecture == Architecture::Llama;
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
        "rope_theta": cfg.rope_theta,
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

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::model(path, format!("serialising: {e}")))?;
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}
