"""A tiny random Llama with the embedded model's tokenizer (so the exported token ids are its
vocabulary) and a copy of examples/axolotl/kd.yml pointed at it, for `axolotl train` on a CPU.

    python tests/trainers/make_tiny_axolotl_run.py HF_MODEL_DIR EXPORT_DIR WORK_DIR
Writes WORK_DIR/tiny (the model before training) and WORK_DIR/kd.yml (output_dir WORK_DIR/out).
"""
import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
import yaml

src, export, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
vocab = json.loads((src / "config.json").read_text())["vocab_size"]
cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                               tie_word_embeddings=True)
torch.manual_seed(0)
transformers.LlamaForCausalLM(cfg).save_pretrained(work / "tiny")
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(src / f, work / "tiny" / f)
config = yaml.safe_load((Path(__file__).parents[2] / "examples/axolotl/kd.yml").read_text())
config.update(base_model=str(work / "tiny"), output_dir=str(work / "out"), max_steps=5,
              dataset_prepared_path=str(work / "prepared"),
              learning_rate=1e-3, micro_batch_size=4)
config["datasets"][0]["path"] = str(export)
(work / "kd.yml").write_text(yaml.safe_dump(config))
print(f"wrote {work / 'tiny'} ({vocab} tokens) and {work / 'kd.yml'}")
