#!/usr/bin/env python3
"""Writes the model-family fidelity fixtures under tests/fixtures/models/.

For every family hindsight runs, a tiny random checkpoint is built with Hugging Face transformers
(`AutoConfig.for_model(...)` + `AutoModelForCausalLM.from_config` + `save_pretrained`), and the
reference per-token log-probs of a few long token sequences are computed by transformers itself
(eager attention, float32). Where the family has a GGUF form, the same weights are also written as
GGUF with llama.cpp's names and conventions (q/k row permutation for llama, `1 + w` Gemma norms,
fused Phi-3 tensors, `rope_freqs` for Llama 3 scaling) using the `gguf` package.

The checkpoints are small (vocab 256, hidden 64, 3 layers) but made to exercise what differs
between families: sharp attention (large q/k weights) so positions and masks matter, sequences
of 80 tokens, longer than every sliding window (16) and every RoPE scaling's original context
(32). CI compares against the committed outputs without torch.

Venv (documented in scripts/model-fixtures/requirements.txt):
    python3 -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r scripts/model-fixtures/requirements.txt
    .venv-fixtures/bin/python scripts/model-fixtures/make_fixtures.py
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "models")
# Covers the fixture tokenizers' vocabularies (< 720 ids), so a checkpoint and a tokenizer pair up.
VOCAB = 768
SEQ_LENS = (80, 57)
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (model_type, config overrides, gguf?)
CASES = {
    "llama": ("llama", dict(rope_theta=10000.0, tie_word_embeddings=False), True),
    "llama3_scaled": (
        "llama",
        dict(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
        True,
    ),
    "llama_linear": (
        "llama",
        dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0)),
        True,
    ),
    "llama_yarn": (
        "llama",
        dict(
            rope_parameters=dict(
                rope_type="yarn",
                rope_theta=10000.0,
                factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
        False,
    ),
    "mistral": ("mistral", dict(sliding_window=16), False),
    "qwen2": ("qwen2", dict(tie_word_embeddings=True, rope_theta=1000000.0), True),
    "qwen3": ("qwen3", dict(tie_word_embeddings=False), True),
    "gemma2": (
        "gemma2",
        dict(
            sliding_window=16,
            query_pre_attn_scalar=16,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        ),
        True,
    ),
    "gemma2_scalar": (
        "gemma2",
        dict(sliding_window=16, query_pre_attn_scalar=24, attn_logit_softcapping=5.0),
        False,
    ),
    "gemma3": (
        "gemma3_text",
        dict(
            sliding_window=16,
            query_pre_attn_scalar=16,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            rope_parameters=dict(
                full_attention=dict(rope_type="linear", rope_theta=1000000.0, factor=8.0),
                sliding_attention=dict(rope_type="default", rope_theta=10000.0),
            ),
        ),
        True,
    ),
    "phi3": (
        "phi3",
        dict(partial_rotary_factor=0.5, sliding_window=16, tie_word_embeddings=False),
        True,
    ),
    "olmo2": ("olmo2", dict(), True),
}


def randomize(model, seed):
    """Replaces the default (near-zero) init with weights that make every part matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                if "norm" in name:
                    if "gemma" in model.config.model_type:
                        p.copy_(0.2 * torch.randn(p.shape, generator=g))  # used as 1 + w
                    else:
                        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:  # biases
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[1]
                gain = 3.0 if any(s in name for s in ("q_proj", "k_proj", "qkv_proj")) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def build(name, model_type, overrides, seed):
    kwargs = dict(COMMON)
    kwargs.update(overrides)
    cfg = AutoConfig.for_model(model_type, **kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    model.eval()
    return model


def reference(model, seqs):
    out = []
    for ids in seqs:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        target = [float(lp[t, ids[t + 1]]) for t in range(len(ids) - 1)]
        top = torch.topk(lp, 5, dim=-1)
        out.append(
            dict(
                ids=ids,
                logprobs=target,
                top5_ids=top.indices.tolist(),
                top5_logprobs=top.values.tolist(),
            )
        )
    return out


# ---- GGUF (llama.cpp conventions) -----------------------------------------------------------

GGUF_ARCH = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "olmo2": "olmo2",
}


def permute(w, n_head):
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, path):
    import gguf

    cfg = model.config
    mt = cfg.model_type
    arch = GGUF_ARCH[mt]
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    rp = cfg.rope_parameters
    if mt == "gemma3_text":
        rp = rp["full_attention"]
    w.add_rope_freq_base(rp["rope_theta"])
    rope_dim = int(cfg.head_dim * rp.get("partial_rotary_factor", 1.0))
    w.add_rope_dimension_count(rope_dim)
    if rp["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rp["factor"])
    if getattr(cfg, "sliding_window", None) and mt in ("gemma2", "gemma3_text", "phi3"):
        w.add_sliding_window(cfg.sliding_window)
    if mt == "gemma3_text":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    if mt == "gemma2":
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)

    tensors = {}
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    gemma = mt in ("gemma2", "gemma3_text")

    def norm(x):
        return x + 1.0 if gemma else x

    tensors["token_embd.weight"] = sd["model.embed_tokens.weight"]
    tensors["output_norm.weight"] = norm(sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        tensors["output.weight"] = sd["lm_head.weight"]
    if rp["rope_type"] == "llama3":
        base = rp["rope_theta"]
        dim = cfg.head_dim
        freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / lo, old / hi
        factors = []
        for f in freqs.tolist():
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                factors.append(1.0)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        tensors["rope_freqs.weight"] = np.array(factors, dtype=np.float32)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        if mt == "phi3":
            tensors[b + "attn_qkv.weight"] = sd[p + "self_attn.qkv_proj.weight"]
            tensors[b + "ffn_up.weight"] = sd[p + "mlp.gate_up_proj.weight"]
        else:
            q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
            if arch == "llama":
                q = permute(q, cfg.num_attention_heads)
                k = permute(k, cfg.num_key_value_heads)
            tensors[b + "attn_q.weight"] = q
            tensors[b + "attn_k.weight"] = k
            tensors[b + "attn_v.weight"] = sd[p + "self_attn.v_proj.weight"]
            for s in ("q", "k", "v"):
                if p + f"self_attn.{s}_proj.bias" in sd:
                    tensors[b + f"attn_{s}.bias"] = sd[p + f"self_attn.{s}_proj.bias"]
            tensors[b + "ffn_gate.weight"] = sd[p + "mlp.gate_proj.weight"]
            tensors[b + "ffn_up.weight"] = sd[p + "mlp.up_proj.weight"]
        tensors[b + "attn_output.weight"] = sd[p + "self_attn.o_proj.weight"]
        tensors[b + "ffn_down.weight"] = sd[p + "mlp.down_proj.weight"]
        if p + "self_attn.q_norm.weight" in sd:
            tensors[b + "attn_q_norm.weight"] = norm(sd[p + "self_attn.q_norm.weight"])
            tensors[b + "attn_k_norm.weight"] = norm(sd[p + "self_attn.k_norm.weight"])
        if mt == "olmo2":
            tensors[b + "post_attention_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
            tensors[b + "post_ffw_norm.weight"] = sd[p + "post_feedforward_layernorm.weight"]
        elif gemma:
            tensors[b + "attn_norm.weight"] = norm(sd[p + "input_layernorm.weight"])
            tensors[b + "post_attention_norm.weight"] = norm(sd[p + "post_attention_layernorm.weight"])
            tensors[b + "ffn_norm.weight"] = norm(sd[p + "pre_feedforward_layernorm.weight"])
            tensors[b + "post_ffw_norm.weight"] = norm(sd[p + "post_feedforward_layernorm.weight"])
        else:
            tensors[b + "attn_norm.weight"] = sd[p + "input_layernorm.weight"]
            tensors[b + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    for name in sorted(tensors):
        w.add_tensor(name, np.ascontiguousarray(tensors[name], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def transformers4_config(cfg_path, out_path):
    """The same config in the transformers-4 layout (top-level rope_theta + rope_scaling)."""
    with open(cfg_path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    if rp.get("rope_type") != "default":
        c["rope_scaling"] = rp
    with open(out_path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)


# ---- Tokenizers and chat templates of the families' kinds ------------------------------------

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Canberra is the capital of Australia, not Sydney. It's 1234 km away!",
    "Ünïcödé façade — naïve café, 東京 and 北京; emoji 🙂 too.",
    "Thanks, that works. Could you also explain why the test failed?",
    "  leading spaces\tand tabs\n\nand blank lines   ",
]

MESSAGES = [
    [{"role": "user", "content": "What is the capital of Australia?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Fix add():\n  return a - b\n"},
        {"role": "assistant", "content": "  Use a + b. "},
        {"role": "user", "content": "Thanks! Why did 1234 fail? 🙂"},
    ],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Tell me about 東京."},
    ],
]

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{% for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen3's non-thinking mode, reduced: the generation prompt ends with the empty think block, and
# a final assistant turn is rendered after it, as the real template does (issue 26: the whole
# conversation must start with the generation prompt).
QWEN3_TEMPLATE = (
    "{%- for message in messages %}{%- if loop.last and message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message.content + '<|im_end|>' + '\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' }}{%- endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% else %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' + '\n' }}{% endif %}"
)


def byte_level_bpe(split_regex):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def sentencepiece_bpe(prepend):
    """SentencePiece-style BPE as Hugging Face converts it: `▁` for spaces, byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    norms = [normalizers.Replace(" ", "▁")]
    if prepend:
        norms.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(norms)
    decs = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prepend:
        decs.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(decs)
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<unk>"] + byte_tokens, show_progress=False
    )
    tok.train_from_iterator([c.replace(" ", "▁") for c in CORPUS] * 20, trainer)
    return tok


LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# name -> (builder, template, special tokens, non-special added tokens, bos, eos, rstrip tokens)
TOKENIZERS = {
    "llama3": (
        lambda: byte_level_bpe(LLAMA3_REGEX),
        LLAMA3_TEMPLATE,
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        [],
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "qwen3": (
        lambda: byte_level_bpe(QWEN_REGEX),
        QWEN3_TEMPLATE,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        ["<think>", "</think>", "<tool_call>", "</tool_call>"],
        None,
        "<|im_end|>",
    ),
    "gemma": (
        lambda: sentencepiece_bpe(prepend=False),
        GEMMA_TEMPLATE,
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        [],
        "<bos>",
        "<eos>",
    ),
    "mistral": (
        lambda: sentencepiece_bpe(prepend=True),
        MISTRAL_TEMPLATE,
        ["<s>", "</s>", "[INST]", "[/INST]"],
        [],
        "<s>",
        "</s>",
    ),
    "phi3": (
        lambda: sentencepiece_bpe(prepend=True),
        PHI3_TEMPLATE,
        ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        [],
        "<s>",
        "<|end|>",
    ),
}


def make_tokenizer_fixtures(out_root):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    out_root = os.path.join(out_root, "..", "tokenizers")
    if os.path.isdir(out_root):
        shutil.rmtree(out_root)
    os.makedirs(out_root)
    for name, (builder, template, specials, plain_added, bos, eos) in TOKENIZERS.items():
        tok = builder()
        # Phi-3 marks its role tokens rstrip (they absorb the whitespace after them).
        rstrip = name == "phi3"
        tok.add_special_tokens(
            [AddedToken(t, special=True, normalized=False, rstrip=rstrip and t != "<s>") for t in specials]
        )
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_added])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos)
        fast.chat_template = template
        d = os.path.join(out_root, name)
        fast.save_pretrained(d)
        chats = []
        for msgs in MESSAGES:
            for gen in (True, False):
                rendered = fast.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                ids = fast(rendered, add_special_tokens=False)["input_ids"]
                chats.append(dict(messages=msgs, add_generation_prompt=gen, rendered=rendered, ids=ids))
        texts = [dict(text=t, ids=fast(t, add_special_tokens=False)["input_ids"]) for t in CORPUS]
        # What the Hugging Face tokenizer does with a special string typed by a user: one id.
        injected = "I typed " + (plain_added + specials)[0] + " here"
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(
                dict(
                    chats=chats,
                    texts=texts,
                    injected=dict(text=injected, hf_ids=fast(injected, add_special_tokens=False)["input_ids"]),
                    added=dict((t, fast.convert_tokens_to_ids(t)) for t in specials + plain_added),
                ),
                f,
                indent=1,
                ensure_ascii=False,
            )
        print("tokenizer", name, "ok", file=sys.stderr)


# Checkpoint -> fixture tokenizer it is paired with for the end-to-end chat reference.
PAIRS = {
    "llama3_scaled": "llama3",
    "qwen2": "qwen3",
    "qwen3": "qwen3",
    "mistral": "mistral",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "phi3": "phi3",
    "olmo2": "llama3",
}
EOT = {"llama3": "<|eot_id|>", "qwen3": "<|im_end|>", "gemma": "<end_of_turn>", "mistral": "</s>", "phi3": "<|end|>"}
CHAT_PROMPT = [{"role": "user", "content": "Fix add():\n  return a - b\n"}]
CHAT_COMPLETION = "Use a + b instead. Thanks 🙂"


def chat_reference(model, tok_name, out_dir):
    """What `hindsight score` must compute for this checkpoint + tokenizer: transformers'
    rendering, ids and the student log-prob of every completion token (end of turn included)."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(os.path.join(OUT, "..", "tokenizers", tok_name))
    rendered = tok.apply_chat_template(CHAT_PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(rendered, add_special_tokens=False)["input_ids"]
    completion_ids = tok(CHAT_COMPLETION, add_special_tokens=False)["input_ids"]
    completion_ids.append(tok.convert_tokens_to_ids(EOT[tok_name]))
    ids = prompt_ids + completion_ids
    assert max(ids) < VOCAB, (tok_name, max(ids))
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    n = len(prompt_ids)
    student = [float(lp[n - 1 + i, t]) for i, t in enumerate(completion_ids)]
    with open(os.path.join(out_dir, "chat_reference.json"), "w") as f:
        json.dump(
            dict(
                tokenizer=tok_name,
                prompt=CHAT_PROMPT,
                completion=CHAT_COMPLETION,
                rendered_prompt=rendered,
                prompt_ids=prompt_ids,
                completion_ids=completion_ids,
                student_logprobs=student,
            ),
            f,
            indent=1,
            ensure_ascii=False,
        )


def main():
    torch.set_num_threads(2)
    make_tokenizer_fixtures(OUT)
    rng = np.random.default_rng(1234)
    seqs = [rng.integers(0, VOCAB, size=n).tolist() for n in SEQ_LENS]
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    index = {}
    for seed, (name, (model_type, overrides, has_gguf)) in enumerate(CASES.items()):
        model = build(name, model_type, overrides, seed + 1)
        d = os.path.join(OUT, name)
        model.save_pretrained(d, safe_serialization=True)
        ref = reference(model, seqs)
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(dict(model_type=model_type, sequences=ref), f)
        if has_gguf:
            write_gguf(model, os.path.join(d, "model.gguf"))
        if name in PAIRS:
            chat_reference(model, PAIRS[name], d)
        if name == "llama3_scaled":
            transformers4_config(os.path.join(d, "config.json"), os.path.join(d, "config.transformers4.json"))
        index[name] = dict(model_type=model_type, gguf=has_gguf)
        print(name, "ok", file=sys.stderr)
    import transformers

    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(
            dict(transformers=transformers.__version__, torch=torch.__version__, cases=index),
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
