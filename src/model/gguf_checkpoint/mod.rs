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

mod config;

impl GgufFile {
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
