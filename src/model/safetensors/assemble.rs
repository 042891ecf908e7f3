//! Building the decoder from named Hugging Face weights, with the shapes checked against the config.

use super::*;

/// Builds the decoder from Hugging Face tensor names (the layout every supported family shares,
/// with Phi-3's fused projections and the families' extra norms), checking each tensor's shape
/// against the config as it is taken.
pub(super) fn assemble(
    w: &mut Weights<'_>,
    cfg: TransformerConfig,
    device: &Device,
) -> Result<Transformer> {
    use super::super::architecture::BlockNorms;
    let arch = cfg.architecture;
    let off = cfg.norm_weight_offset;
    let norms = arch.block_norms();
    let (h, d, v, inter) = (
        cfg.hidden_size,
        cfg.head_dim,
        cfg.vocab_size,
        cfg.intermediate_size,
    );
    let (q, kv) = (cfg.num_heads * d, cfg.num_kv_heads * d);
    let (q_norm_len, k_norm_len) = match cfg.qk_norm {
        Some(QkNorm::Whole) => (q, kv),
        _ => (d, d),
    };
    if cfg.tie_word_embeddings {
        w.tied_copy_matches("lm_head.weight", "model.embed_tokens.weight")?;
    }
    let embed = w.take("model.embed_tokens.weight", &[v, h])?;
    let lm_head_w = if cfg.tie_word_embeddings {
        embed.clone()
    } else {
        w.take("lm_head.weight", &[v, h])?
    };
    let mut blocks = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        let (qkv_w, qkv_bias) = if arch.facts().fused_projections {
            (
                w.take(&p("self_attn.qkv_proj.weight"), &[q + 2 * kv, h])?,
                None,
            )
        } else {
            let qw = w.take(&p("self_attn.q_proj.weight"), &[q, h])?;
            let kw = w.take(&p("self_attn.k_proj.weight"), &[kv, h])?;
            let vw = w.take(&p("self_attn.v_proj.weight"), &[kv, h])?;
            let b = cfg.attention_bias;
            let bias = cat_bias(vec![
                w.bias(b, &p("self_attn.q_proj.bias"), q)?,
                w.bias(b, &p("self_attn.k_proj.bias"), kv)?,
                w.bias(b, &p("self_attn.v_proj.bias"), kv)?,
            ])?;
            (Tensor::cat(&[qw, kw, vw], 0)?, bias)
        };
        let (gate_up_w, gate_up_bias) = if arch.facts().fused_projections {
            (
                w.take(&p("mlp.gate_up_proj.weight"), &[2 * inter, h])?,
                None,
            )
        } else {
            let gate = w.take(&p("mlp.gate_proj.weight"), &[inter, h])?;
            let up = w.take(&p("mlp.up_proj.weight"), &[inter, h])?;
            let b = cfg.mlp_bias;
            let bias = cat_bias(vec![
                w.bias(b, &p("mlp.gate_proj.bias"), inter)?,
                w.bias(b, &p("mlp.up_proj.bias"), inter)?,
            ])?;
            (Tensor::cat(&[gate, up], 0)?, bias)
        };
        let o_bias = w.bias(cfg.attention_out_bias, &p("self_attn.o_proj.bias"), h)?;
        let down_bias = w.bias(cfg.mlp_bias, &p("mlp.down_proj.bias"), h)?;
        let (q_norm, k_norm) = if cfg.qk_norm.is_some() {
            (
                Some(w.norm_vec(&p("self_attn.q_norm.weight"), q_norm_len, off)?),
                Some(w.norm_vec(&p("self_attn.k_norm.weight"), k_norm_len, off)?),
            )
        } else {
            (None, None)
        };
        let mut norm = |name: &str| w.norm(&p(name), h, off);
        let (attn_norm, post_attn_norm, mlp_norm, post_mlp_norm) = match norms {
            BlockNorms::Pre => (
                Some(norm("input_layernorm.weight")?),
                None,
                Some(norm("post_attention_layernorm.weight")?),
                None,
            ),
            BlockNorms::PreAndPost => (
                Some(norm("input_layernorm.weight")?),
                Some(norm("post_attention_layernorm.weight")?),
                Some(norm("pre_feedforward_layernorm.weight")?),
                Some(norm("post_feedforward_layernorm.weight")?),
            ),
            BlockNorms::Post => (
                None,
                Some(norm("post_attention_layernorm.weight")?),
                None,
                Some(norm("post_feedforward_layernorm.weight")?),
            ),
        };
        blocks.push(Block {
            attn_norm,
            qkv: dense(qkv_w, qkv_bias)?,
            q_norm,
            k_norm,
            o: dense(w.take(&p("self_attn.o_proj.weight"), &[h, q])?, o_bias)?,
            post_attn_norm,
            mlp_norm,
            gate_up: dense(gate_up_w, gate_up_bias)?,
            down: dense(w.take(&p("mlp.down_proj.weight"), &[h, inter])?, down_bias)?,
            post_mlp_norm,
        });
    }
    let final_norm = w.norm("model.norm.weight", h, off)?;
    // Buffers some exporters write; they are recomputed from the config.
    w.left
        .retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if !w.left.is_empty() {
        let mut left: Vec<&str> = w.left.keys().map(String::as_str).collect();
        left.sort_unstable();
        let shown: Vec<&str> = left.iter().take(5).copied().collect();
        return Err(Error::model(
            w.dir,
            format!(
                "{} tensor(s) the {} decoder would not use (e.g. {}): the checkpoint does not \
                 match its config; refusing rather than ignoring weights",
                left.len(),
                arch.as_str(),
                shown.join(", ")
            ),
        ));
    }
    let lm_head = dense(lm_head_w, None)?;
    check_shapes(w.dir, &cfg, &embed, &lm_head, &final_norm, &blocks)?;
    Ok(Transformer::new(
        cfg,
        embed,
        lm_head,
        final_norm,
        blocks,
        RopeStyle::HalfSplit,
        device.clone(),
    ))
}

/// Checks the assembled weights' shapes against the config (every loader: the per-tensor
/// checks name the stored tensor; this is the backstop on what the forward will see), so a
/// mismatch is a load error rather than a shape error, a panic or a silently shifted logit
/// deep in the forward pass.
pub(crate) fn check_shapes(
    path: &Path,
    cfg: &TransformerConfig,
    embed: &Tensor,
    lm_head: &Linear,
    final_norm: &Tensor,
    blocks: &[Block],
) -> Result<()> {
    let h = cfg.hidden_size;
    let q = cfg.num_heads * cfg.head_dim;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let bad = |what: &str, got: Vec<usize>, want: Vec<usize>| {
        Error::model(
            path,
            format!("{what} has shape {got:?}, the config implies {want:?}"),
        )
    };
    let dims = |what: &str, t: &Tensor, want: &[usize]| {
        if t.dims() == want {
            Ok(())
        } else {
            Err(bad(what, t.dims().to_vec(), want.to_vec()))
        }
    };
    dims("the embedding", embed, &[cfg.vocab_size, h])?;
    if let Linear::Dense { w, .. } = lm_head {
        dims("the LM head", w, &[cfg.vocab_size, h])?;
    }
    dims("the final norm", final_norm, &[h])?;
    let (q_norm, k_norm) = match cfg.qk_norm {
        Some(QkNorm::Whole) => (q, kv),
        _ => (cfg.head_dim, cfg.head_dim),
    };
    for (i, b) in blocks.iter().enumerate() {
        let checks: [(&str, &Linear, [usize; 2]); 4] = [
            ("q/k/v projection", &b.qkv, [q + 2 * kv, h]),
            ("attention output", &b.o, [h, q]),
            (
                "gate/up projection",
                &b.gate_up,
                [2 * cfg.intermediate_size, h],
            ),
            ("down projection", &b.down, [h, cfg.intermediate_size]),
        ];
        for (what, lin, want) in checks {
            let (w, bias) = match lin {
                Linear::Dense { w, bias } => (Some(w), bias),
                Linear::Quantized { bias, .. } | Linear::PackedBf16 { bias, .. } => (None, bias),
            };
            if let Some(w) = w {
                dims(&format!("layer {i} {what}"), w, &want)?;
            }
            if let Some(bias) = bias {
                dims(&format!("layer {i} {what} bias"), bias, &want[..1])?;
            }
        }
        for (what, n) in [
            ("attention norm", &b.attn_norm),
            ("post-attention norm", &b.post_attn_norm),
            ("MLP norm", &b.mlp_norm),
            ("post-MLP norm", &b.post_mlp_norm),
        ] {
            if let Some(n) = n {
                dims(&format!("layer {i} {what}"), n, &[h])?;
            }
        }
        for (what, n, want) in [("q_norm", &b.q_norm, q_norm), ("k_norm", &b.k_norm, k_norm)] {
            if let Some(n) = n {
                if n.len() != want {
                    return Err(bad(&format!("layer {i} {what}"), vec![n.len()], vec![want]));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn dense(w: Tensor, bias: Option<Tensor>) -> Result<Linear> {
    Ok(Linear::Dense { w, bias })
}
