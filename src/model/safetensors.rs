//! The second model source: a Hugging Face directory with `config.json`, `*.safetensors`,
//! `tokenizer.json` and (for the chat template) `tokenizer_config.json`; plus an exporter that
//! writes the embedded GGUF model in that layout (for trainers, and to test this loader).

use std::collections::HashMap;
use std::path::Path;

use super::config::{Architecture, TransformerConfig};
use super::decoder::{Block, Linear, RopeStyle, Transformer};
use super::gguf::{unpermute_rows, GgufFile};
use super::hf_config;
use super::{sha256_file, ComputeMode, LoadedModel};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use candle_core::{DType, Device, Tensor};

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a Hugging Face model directory. Quantized mode is not offered for this source.
pub fn load_dir(dir: &Path, mode: ComputeMode, device: &Device) -> Result<LoadedModel> {
    if mode == ComputeMode::Quantized {
        return Err(Error::model(
            dir,
            "quantized compute is only available for GGUF models; use f32, bf16 or f16",
        ));
    }
    let (transformer, weights_sha256) = load_transformer_dir(dir, device)?;
    let transformer = transformer.with_compute(mode)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let model_id = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = dir.display().to_string();
    Ok(LoadedModel::new(
        transformer,
        tokenizer,
        model_id,
        source,
        weights_sha256,
        mode,
    ))
}

/// Reads `config.json` of a model directory (refusing anything the decoder does not implement).
pub fn read_config(dir: &Path) -> Result<TransformerConfig> {
    let path = dir.join("config.json");
    hf_config::parse(&read_text(&path)?).map_err(|e| Error::model(&path, e.0))
}

/// Loads the network of a Hugging Face directory (config + safetensors, no tokenizer) and the
/// sha256 identifying its weights.
pub fn load_transformer_dir(dir: &Path, device: &Device) -> Result<(Transformer, String)> {
    let cfg = read_config(dir)?;
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
    let transformer = assemble(dir, cfg, tensors, device)?;
    let weights_sha256 = if files.len() == 1 {
        hasher_input
    } else {
        crate::util::sha256_hex(hasher_input.as_bytes())
    };
    Ok((transformer, weights_sha256))
}

/// Takes named tensors out of a checkpoint's map, so that whatever is left at the end can be
/// reported: a weight the decoder would ignore means the architecture is not what we think.
struct Weights<'a> {
    dir: &'a Path,
    tensors: HashMap<String, Tensor>,
}

impl Weights<'_> {
    fn take(&mut self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::model(self.dir, format!("missing tensor '{name}'")))?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn take_if(&mut self, present: bool, name: &str) -> Result<Option<Tensor>> {
        if present {
            self.take(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A norm weight, with the family's offset (Gemma's `1 + w`) folded in.
    fn norm(&mut self, name: &str, offset: f32) -> Result<Tensor> {
        let w = self.take(name)?;
        Ok(if offset != 0.0 {
            (w + offset as f64)?
        } else {
            w
        })
    }

    fn norm_vec(&mut self, name: &str, offset: f32) -> Result<Vec<f32>> {
        Ok(self.norm(name, offset)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

fn cat_bias(parts: Vec<Option<Tensor>>) -> Result<Option<Tensor>> {
    let parts: Vec<Tensor> = parts.into_iter().flatten().collect();
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

/// Builds the decoder from Hugging Face tensor names (the layout every supported family shares,
/// with Phi-3's fused projections and the families' extra norms).
fn assemble(
    dir: &Path,
    cfg: TransformerConfig,
    tensors: HashMap<String, Tensor>,
    device: &Device,
) -> Result<Transformer> {
    use super::config::BlockNorms;
    let mut w = Weights { dir, tensors };
    let arch = cfg.architecture;
    let off = cfg.norm_weight_offset;
    let norms = arch.block_norms();
    let embed = w.take("model.embed_tokens.weight")?;
    let lm_head_w = if cfg.tie_word_embeddings {
        // Some tied checkpoints still carry a copy of the head; it must equal the embedding.
        if let Some(head) = w.tensors.remove("lm_head.weight") {
            let diff = (head.to_dtype(DType::F32)? - &embed)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            if diff != 0.0 {
                return Err(Error::model(
                    dir,
                    "tie_word_embeddings=true but lm_head.weight differs from the embedding",
                ));
            }
        }
        embed.clone()
    } else {
        w.take("lm_head.weight")?
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let (qkv_w, qkv_bias) = if arch == Architecture::Phi3 {
            (w.take(&p("self_attn.qkv_proj.weight"))?, None)
        } else {
            let q = w.take(&p("self_attn.q_proj.weight"))?;
            let k = w.take(&p("self_attn.k_proj.weight"))?;
            let v = w.take(&p("self_attn.v_proj.weight"))?;
            let b = cfg.attention_bias;
            let bias = cat_bias(vec![
                w.take_if(b, &p("self_attn.q_proj.bias"))?,
                w.take_if(b, &p("self_attn.k_proj.bias"))?,
                w.take_if(b, &p("self_attn.v_proj.bias"))?,
            ])?;
            (Tensor::cat(&[q, k, v], 0)?, bias)
        };
        let (gate_up_w, gate_up_bias) = if arch == Architecture::Phi3 {
            (w.take(&p("mlp.gate_up_proj.weight"))?, None)
        } else {
            let gate = w.take(&p("mlp.gate_proj.weight"))?;
            let up = w.take(&p("mlp.up_proj.weight"))?;
            let b = cfg.mlp_bias;
            let bias = cat_bias(vec![
                w.take_if(b, &p("mlp.gate_proj.bias"))?,
                w.take_if(b, &p("mlp.up_proj.bias"))?,
            ])?;
            (Tensor::cat(&[gate, up], 0)?, bias)
        };
        let o_bias = w.take_if(cfg.attention_out_bias, &p("self_attn.o_proj.bias"))?;
        let down_bias = w.take_if(cfg.mlp_bias, &p("mlp.down_proj.bias"))?;
        let (q_norm, k_norm) = if cfg.qk_norm.is_some() {
            (
                Some(w.norm_vec(&p("self_attn.q_norm.weight"), off)?),
                Some(w.norm_vec(&p("self_attn.k_norm.weight"), off)?),
            )
        } else {
            (None, None)
        };
        let (attn_norm, post_attn_norm, mlp_norm, post_mlp_norm) = match norms {
            BlockNorms::Pre => (
                Some(w.norm(&p("input_layernorm.weight"), off)?),
                None,
                Some(w.norm(&p("post_attention_layernorm.weight"), off)?),
                None,
            ),
            BlockNorms::PreAndPost => (
                Some(w.norm(&p("input_layernorm.weight"), off)?),
                Some(w.norm(&p("post_attention_layernorm.weight"), off)?),
                Some(w.norm(&p("pre_feedforward_layernorm.weight"), off)?),
                Some(w.norm(&p("post_feedforward_layernorm.weight"), off)?),
            ),
            BlockNorms::Post => (
                None,
                Some(w.norm(&p("post_attention_layernorm.weight"), off)?),
                None,
                Some(w.norm(&p("post_feedforward_layernorm.weight"), off)?),
            ),
        };
        blocks.push(Block {
            attn_norm,
            qkv: dense(qkv_w, qkv_bias)?,
            q_norm,
            k_norm,
            o: dense(w.take(&p("self_attn.o_proj.weight"))?, o_bias)?,
            post_attn_norm,
            mlp_norm,
            gate_up: dense(gate_up_w, gate_up_bias)?,
            down: dense(w.take(&p("mlp.down_proj.weight"))?, down_bias)?,
            post_mlp_norm,
        });
    }
    let final_norm = w.norm("model.norm.weight", off)?;
    // Buffers some exporters write; they are recomputed from the config.
    w.tensors
        .retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if !w.tensors.is_empty() {
        let mut left: Vec<&str> = w.tensors.keys().map(String::as_str).collect();
        left.sort_unstable();
        let shown: Vec<&str> = left.iter().take(5).copied().collect();
        return Err(Error::model(
            dir,
            format!(
                "{} tensor(s) the {} decoder would not use (e.g. {}): the checkpoint does not \
                 match its config; refusing rather than ignoring weights",
                left.len(),
                arch.as_str(),
                shown.join(", ")
            ),
        ));
    }
    check_shapes(dir, &cfg, &embed, &blocks)?;
    Ok(Transformer::new(
        cfg,
        embed,
        dense(lm_head_w, None)?,
        final_norm,
        blocks,
        RopeStyle::HalfSplit,
        device.clone(),
    ))
}

/// Checks the weights' shapes against the config, so a mismatch is a load error naming the
/// tensor rather than a shape error (or a wrong reading) deep in the forward pass.
pub(crate) fn check_shapes(
    path: &Path,
    cfg: &TransformerConfig,
    embed: &Tensor,
    blocks: &[Block],
) -> Result<()> {
    let h = cfg.hidden_size;
    let qkv_out = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim;
    let bad = |what: &str, got: Vec<usize>, want: Vec<usize>| {
        Error::model(
            path,
            format!("{what} has shape {got:?}, the config implies {want:?}"),
        )
    };
    if embed.dims() != [cfg.vocab_size, h] {
        return Err(bad(
            "the embedding",
            embed.dims().to_vec(),
            vec![cfg.vocab_size, h],
        ));
    }
    for (i, b) in blocks.iter().enumerate() {
        let checks: [(&str, &Linear, [usize; 2]); 4] = [
            ("q/k/v projection", &b.qkv, [qkv_out, h]),
            ("attention output", &b.o, [h, cfg.num_heads * cfg.head_dim]),
            (
                "gate/up projection",
                &b.gate_up,
                [2 * cfg.intermediate_size, h],
            ),
            ("down projection", &b.down, [h, cfg.intermediate_size]),
        ];
        for (what, lin, want) in checks {
            if let Linear::Dense { w, .. } = lin {
                if w.dims() != want {
                    return Err(bad(
                        &format!("layer {i} {what}"),
                        w.dims().to_vec(),
                        want.to_vec(),
                    ));
                }
            }
        }
        for (what, n) in [("q_norm", &b.q_norm), ("k_norm", &b.k_norm)] {
            if let Some(n) = n {
                let heads = if what == "q_norm" {
                    cfg.num_heads
                } else {
                    cfg.num_kv_heads
                };
                if n.len() != cfg.head_dim && n.len() != heads * cfg.head_dim {
                    return Err(bad(
                        &format!("layer {i} {what}"),
                        vec![n.len()],
                        vec![cfg.head_dim],
                    ));
                }
            }
        }
    }
    Ok(())
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
    let plain_rope = cfg
        .ropes
        .iter()
        .all(|r| r.scaling == super::config::RopeScaling::None);
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

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::model(path, format!("serialising: {e}")))?;
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    })
}
