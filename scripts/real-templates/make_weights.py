#!/usr/bin/env python3
"""Writes a tiny random checkpoint per real-template family: DEST/<family>/{config.json,model.safetensors}.

Each checkpoint has the architecture (model_type, norms, biases, softcaps, RoPE kind, tying) and the
vocabulary size of the published model whose tokenizer the family uses, with toy dimensions
(hidden 32, 2 layers, 4 query heads / 2 KV heads of width 8, MLP 64). They pair with the real
tokenizer files that scripts/real-templates/fetch.sh lays beside them, so a test can score real
chat-template token ids end to end.

Deterministic: the weights come from numpy's Generator (np.random.default_rng(seed)), drawn in a
fixed order, stored as float32 by safetensors. fetch.sh pins numpy and safetensors and checks the
sha256 of both files against tests/fixtures/real_templates/sources.json.

Needs only numpy and safetensors (no torch):
    python3 scripts/real-templates/make_weights.py DEST [FAMILY ...]
"""

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HIDDEN = 32
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 8
INTERMEDIATE = 64

COMMON = dict(
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    head_dim=HEAD_DIM,
    attention_dropout=0.0,
    initializer_range=0.02,
    use_cache=True,
    dtype="float32",
)

# The real model each family stands for, its vocabulary size (config.json's, which may exceed the
# tokenizer's) and the architecture settings it ships with; only the dimensions above are toy.
FAMILIES = {
    # Llama 3.2 1B/3B Instruct: tied embeddings, Llama 3 RoPE scaling.
    "llama3": dict(
        seed=1001,
        config=dict(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            vocab_size=128256,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            max_position_embeddings=131072,
            rms_norm_eps=1e-05,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
            tie_word_embeddings=True,
            bos_token_id=128000,
            eos_token_id=[128001, 128008, 128009],
            pretraining_tp=1,
        ),
    ),
    # Qwen2.5 0.5B-3B Instruct: q/k/v biases, tied embeddings.
    "qwen2_5": dict(
        seed=1002,
        config=dict(
            architectures=["Qwen2ForCausalLM"],
            model_type="qwen2",
            vocab_size=151936,
            hidden_act="silu",
            max_position_embeddings=32768,
            max_window_layers=LAYERS,
            rms_norm_eps=1e-06,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            sliding_window=None,
            use_sliding_window=False,
            layer_types=["full_attention"] * LAYERS,
            tie_word_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151645,
        ),
    ),
    # Qwen3 0.6B-4B: per-head q/k RMSNorm, no biases, tied embeddings.
    "qwen3": dict(
        seed=1003,
        config=dict(
            architectures=["Qwen3ForCausalLM"],
            model_type="qwen3",
            vocab_size=151936,
            hidden_act="silu",
            attention_bias=False,
            max_position_embeddings=40960,
            max_window_layers=LAYERS,
            rms_norm_eps=1e-06,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            sliding_window=None,
            use_sliding_window=False,
            layer_types=["full_attention"] * LAYERS,
            tie_word_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151645,
        ),
    ),
    # Gemma 2 2B/9B it: sandwich norms (1 + w), logit softcapping, local/global layers.
    "gemma2": dict(
        seed=1004,
        config=dict(
            architectures=["Gemma2ForCausalLM"],
            model_type="gemma2",
            vocab_size=256000,
            hidden_activation="gelu_pytorch_tanh",
            attention_bias=False,
            max_position_embeddings=8192,
            rms_norm_eps=1e-06,
            rope_parameters=dict(rope_type="default", rope_theta=10000.0),
            query_pre_attn_scalar=HEAD_DIM,  # the real models use their head_dim (256)
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            sliding_window=4096,
            layer_types=["sliding_attention", "full_attention"],
            tie_word_embeddings=True,
            bos_token_id=2,
            eos_token_id=[1, 107],
            pad_token_id=0,
        ),
    ),
    # Gemma 3 4B it (its text model; vocab 262208): q/k norms, local/global RoPE bases, linear
    # scaling on the global layers.
    "gemma3": dict(
        seed=1005,
        config=dict(
            architectures=["Gemma3ForCausalLM"],
            model_type="gemma3_text",
            vocab_size=262208,
            hidden_activation="gelu_pytorch_tanh",
            attention_bias=False,
            max_position_embeddings=131072,
            rms_norm_eps=1e-06,
            rope_parameters=dict(
                full_attention=dict(rope_type="linear", rope_theta=1000000.0, factor=8.0),
                sliding_attention=dict(rope_type="default", rope_theta=10000.0),
            ),
            query_pre_attn_scalar=HEAD_DIM,  # the real models use their head_dim (256)
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
            sliding_window=1024,
            layer_types=["sliding_attention", "full_attention"],
            use_bidirectional_attention=False,
            tie_word_embeddings=True,
            bos_token_id=2,
            eos_token_id=[1, 106],
            pad_token_id=0,
        ),
    ),
    # Mistral Nemo Instruct 2407: untied lm_head, no sliding window.
    "mistral": dict(
        seed=1006,
        config=dict(
            architectures=["MistralForCausalLM"],
            model_type="mistral",
            vocab_size=131072,
            hidden_act="silu",
            max_position_embeddings=1024000,
            rms_norm_eps=1e-05,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
            sliding_window=None,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
}


def config_for(family):
    cfg = dict(COMMON)
    cfg.update(FAMILIES[family]["config"])
    return dict(sorted(cfg.items()))


def tensor_specs(cfg):
    """(name, shape, kind) in a fixed order; kind picks the distribution."""
    mt = cfg["model_type"]
    gemma = mt.startswith("gemma")
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    specs = [("model.embed_tokens.weight", (cfg["vocab_size"], HIDDEN), "embed")]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", (HIDDEN,), "norm"),
            (p + "self_attn.q_proj.weight", (q, HIDDEN), "qk"),
            (p + "self_attn.k_proj.weight", (kv, HIDDEN), "qk"),
            (p + "self_attn.v_proj.weight", (kv, HIDDEN), "linear"),
            (p + "self_attn.o_proj.weight", (HIDDEN, q), "linear"),
        ]
        if mt == "qwen2":
            specs += [
                (p + "self_attn.q_proj.bias", (q,), "bias"),
                (p + "self_attn.k_proj.bias", (kv,), "bias"),
                (p + "self_attn.v_proj.bias", (kv,), "bias"),
            ]
        if mt in ("qwen3", "gemma3_text"):
            specs += [
                (p + "self_attn.q_norm.weight", (HEAD_DIM,), "norm"),
                (p + "self_attn.k_norm.weight", (HEAD_DIM,), "norm"),
            ]
        specs.append((p + "post_attention_layernorm.weight", (HIDDEN,), "norm"))
        if gemma:
            specs += [
                (p + "pre_feedforward_layernorm.weight", (HIDDEN,), "norm"),
                (p + "post_feedforward_layernorm.weight", (HIDDEN,), "norm"),
            ]
        specs += [
            (p + "mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN), "linear"),
            (p + "mlp.up_proj.weight", (INTERMEDIATE, HIDDEN), "linear"),
            (p + "mlp.down_proj.weight", (HIDDEN, INTERMEDIATE), "linear"),
        ]
    specs.append(("model.norm.weight", (HIDDEN,), "norm"))
    if not cfg["tie_word_embeddings"]:
        specs.append(("lm_head.weight", (cfg["vocab_size"], HIDDEN), "embed"))
    return specs


def make_tensors(family):
    cfg = config_for(family)
    gemma = cfg["model_type"].startswith("gemma")
    rng = np.random.default_rng(FAMILIES[family]["seed"])
    out = {}
    for name, shape, kind in tensor_specs(cfg):
        z = rng.standard_normal(shape, dtype=np.float32)
        if kind == "embed":
            w = 0.5 * z  # spread enough that next-token distributions are far from uniform
        elif kind == "norm":
            w = 0.2 * z if gemma else 1.0 + 0.2 * z  # Gemma applies its norms as (1 + w)
        elif kind == "bias":
            w = 0.1 * z
        else:
            gain = 2.0 if kind == "qk" else 1.0  # sharper attention, so positions matter
            w = (gain / math.sqrt(shape[1])) * z
        out[name] = np.ascontiguousarray(w, dtype=np.float32)
    return cfg, out


def write(dest, family):
    cfg, tensors = make_tensors(family)
    d = os.path.join(dest, family)
    os.makedirs(d, exist_ok=True)
    tmp_cfg = os.path.join(d, "config.json.partial")
    with open(tmp_cfg, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    tmp_st = os.path.join(d, "model.safetensors.partial")
    save_file(tensors, tmp_st, metadata={"format": "pt"})
    for tmp in (tmp_cfg, tmp_st):
        os.chmod(tmp, 0o644)
    os.replace(tmp_cfg, os.path.join(d, "config.json"))
    os.replace(tmp_st, os.path.join(d, "model.safetensors"))


def main(argv):
    if len(argv) < 2:
        sys.exit(f"usage: {argv[0]} DEST [FAMILY ...]   (families: {' '.join(FAMILIES)})")
    dest = argv[1]
    fams = argv[2:] or list(FAMILIES)
    for fam in fams:
        if fam not in FAMILIES:
            sys.exit(f"unknown family {fam!r} (known: {' '.join(FAMILIES)})")
        write(dest, fam)
        print(f"wrote {os.path.join(dest, fam)}/{{config.json,model.safetensors}}")


if __name__ == "__main__":
    main(sys.argv)
