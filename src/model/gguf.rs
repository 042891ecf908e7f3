//! Loading llama- and qwen2-family checkpoints from GGUF files (weights, hyper-parameters and the
//! tokenizer metadata all live in the one file).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, TransformerConfig};
use super::llama::{Block, Linear, RopeStyle, Transformer};
use super::ComputeMode;
use crate::error::{Error, Result};

/// An opened GGUF file: its metadata, and a reader for its tensors.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            action: "opening model",
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::model(path, format!("not a readable GGUF file: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// All metadata key/values.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// A required metadata entry.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::model(&self.path, format!("missing metadata key '{key}'")))
    }

    /// A string metadata entry, if present.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x as usize))
            .map_err(|e| Error::model(&self.path, format!("metadata '{key}': {e}")))
    }

    fn get_f64_or(&self, key: &str, default: f64) -> f64 {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
            .unwrap_or(default)
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str, device: &Device) -> Result<candle_core::quantized::QTensor> {
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::model(&self.path, format!("tensor '{name}': {e}")))
    }

    /// Reads one tensor dequantized to f32.
    pub fn dense_tensor(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        Ok(self
            .qtensor(name, device)?
            .dequantize(device)?
            .to_dtype(DType::F32)?)
    }

    /// Reads the architecture hyper-parameters.
    pub fn config(&self) -> Result<TransformerConfig> {
        let arch_name = self
            .get_str("general.architecture")
            .ok_or_else(|| Error::model(&self.path, "missing general.architecture"))?
            .to_string();
        let architecture = Architecture::parse(&arch_name).ok_or_else(|| {
            Error::model(
                &self.path,
                format!("unsupported architecture '{arch_name}' (supported: llama, qwen2)"),
            )
        })?;
        let p = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = self.get_usize(&p("embedding_length"))?;
        let num_heads = self.get_usize(&p("attention.head_count"))?;
        let num_kv_heads = self
            .get_usize(&p("attention.head_count_kv"))
            .unwrap_or(num_heads);
        let head_dim = self
            .get_usize(&p("attention.key_length"))
            .unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = match self.get_usize(&p("vocab_size")) {
            Ok(v) => v,
            Err(_) => self
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .map_err(|e| Error::model(&self.path, e.to_string()))?
                .len(),
        };
        Ok(TransformerConfig {
            architecture,
            hidden_size,
            intermediate_size: self.get_usize(&p("feed_forward_length"))?,
            num_layers: self.get_usize(&p("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rope_theta: self.get_f64_or(&p("rope.freq_base"), 10_000.0),
            rms_norm_eps: self.get_f64_or(&p("attention.layer_norm_rms_epsilon"), 1e-5),
            max_position_embeddings: self.get_usize(&p("context_length")).unwrap_or(4096),
            attention_bias: architecture == Architecture::Qwen2,
            tie_word_embeddings: !self.has_tensor("output.weight"),
        })
    }

    /// Loads all weights into a runnable transformer.
    pub fn load_transformer(&mut self, mode: ComputeMode, device: &Device) -> Result<Transformer> {
        let cfg = self.config()?;
        // llama.cpp permutes llama q/k rows for its interleaved RoPE; qwen2 is stored unpermuted.
        let permuted = cfg.architecture == Architecture::Llama;
        let embed = self.dense_tensor("token_embd.weight", device)?;
        let lm_head = if cfg.tie_word_embeddings {
            match mode {
                ComputeMode::F32 => Linear::Dense {
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
            self.linear(&["output.weight"], None, mode, device, None)?
        };
        let final_norm = self.dense_tensor("output_norm.weight", device)?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let b = |n: &str| format!("blk.{i}.{n}");
            let unpermute = match (mode, permuted) {
                (ComputeMode::F32, true) => Some((cfg.num_heads, cfg.num_kv_heads)),
                _ => None,
            };
            let qkv_bias = if cfg.attention_bias {
                Some([b("attn_q.bias"), b("attn_k.bias"), b("attn_v.bias")])
            } else {
                None
            };
            let qkv = self.linear(
                &[
                    &b("attn_q.weight"),
                    &b("attn_k.weight"),
                    &b("attn_v.weight"),
                ],
                qkv_bias
                    .as_ref()
                    .map(|a| [a[0].as_str(), a[1].as_str(), a[2].as_str()]),
                mode,
                device,
                unpermute,
            )?;
            blocks.push(Block {
                attn_norm: self.dense_tensor(&b("attn_norm.weight"), device)?,
                qkv,
                o: self.linear(&[&b("attn_output.weight")], None, mode, device, None)?,
                mlp_norm: self.dense_tensor(&b("ffn_norm.weight"), device)?,
                gate_up: self.linear(
                    &[&b("ffn_gate.weight"), &b("ffn_up.weight")],
                    None,
                    mode,
                    device,
                    None,
                )?,
                down: self.linear(&[&b("ffn_down.weight")], None, mode, device, None)?,
            });
        }
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

    /// Builds a (possibly fused) linear layer from one or more `[out, in]` weights.
    /// `unpermute = Some((heads, kv_heads))` undoes llama.cpp's q/k row permutation on the
    /// first two parts (q and k) of a fused q/k/v weight.
    fn linear(
        &mut self,
        names: &[&str],
        biases: Option<[&str; 3]>,
        mode: ComputeMode,
        device: &Device,
        unpermute: Option<(usize, usize)>,
    ) -> Result<Linear> {
        let bias = match biases {
            Some(bs) => {
                let parts = bs
                    .iter()
                    .map(|n| self.dense_tensor(n, device))
                    .collect::<Result<Vec<_>>>()?;
                Some(Tensor::cat(&parts, 0)?)
            }
            None => None,
        };
        match mode {
            ComputeMode::F32 => {
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
