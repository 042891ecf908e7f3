"""Writes a random llama-shaped bf16 safetensors checkpoint (248M parameters, ~496 MB) with its
config.json into DIR, for the loading-memory numbers of docs/MODEL.md:

    python3 scripts/make-load-checkpoint.py DIR   # needs numpy; then a tokenizer beside it
    /usr/bin/time -v hindsight score --model DIR --compute bf16 -i empty.jsonl -o out.jsonl
"""
import json, struct, sys, shutil
import numpy as np
out = sys.argv[1]
H, I, L, NH, KV, V = 1024, 4096, 12, 16, 4, 32000
D = H // NH
shapes = {"model.embed_tokens.weight": (V, H), "lm_head.weight": (V, H), "model.norm.weight": (H,)}
for i in range(L):
    p = f"model.layers.{i}."
    shapes.update({
        p + "self_attn.q_proj.weight": (NH * D, H), p + "self_attn.k_proj.weight": (KV * D, H),
        p + "self_attn.v_proj.weight": (KV * D, H), p + "self_attn.o_proj.weight": (H, NH * D),
        p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
        p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
    })
rng = np.random.default_rng(0)
header, off = {}, 0
for n, s in shapes.items():
    size = int(np.prod(s)) * 2
    header[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + size]}
    off += size
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(f"{out}/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    for n, s in shapes.items():
        if len(s) == 1:
            x = np.ones(s, dtype=np.float32)
        else:
            x = (rng.standard_normal(s, dtype=np.float32) * 0.02)
        f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV, "vocab_size": V,
       "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
       "torch_dtype": "bfloat16", "hidden_act": "silu"}
json.dump(cfg, open(f"{out}/config.json", "w"))
print(off / 1e6, "MB of weights")
