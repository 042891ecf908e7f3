#!/usr/bin/env python3
"""Writes tests/fixtures/real_templates/reference.jsonl: Hugging Face transformers' own rendering,
token ids and student log-probs for every family x mode x conversation.

DEST is what scripts/real-templates/fetch.sh laid out (the real tokenizer files and chat templates
beside tiny random checkpoints). For each family (tests/fixtures/real_templates/sources.json), each
of its modes (chat_template_kwargs) and each conversation (conversations.json beside it):

  prompt_ids     = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **mode)
  full_ids       = tok.apply_chat_template(messages + [response], add_generation_prompt=False, tokenize=True, **mode)
  completion_ids = full_ids[len(prompt_ids) : first end-of-turn token at or after len(prompt_ids), inclusive]
                   (only when full_ids starts with prompt_ids; otherwise "prefix_mismatch": true)
  student_logprobs[i] = log p(completion_ids[i] | prompt_ids + completion_ids[:i]) from the family's
                   checkpoint (AutoModelForCausalLM, float32, eager attention; log-softmax in float64)

A template that raises records "error" and no ids. Run once by hand, not by CI (needs torch):
    python3 -m venv /tmp/venv-ref
    /tmp/venv-ref/bin/pip install -r scripts/model-fixtures/requirements.txt
    scripts/real-templates/fetch.sh /tmp/real-templates      # HINDSIGHT_VENV=/tmp/venv-ref works too
    /tmp/venv-ref/bin/python scripts/real-templates/make_reference.py /tmp/real-templates
"""

import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "real_templates"))


def as_ids(x):
    """apply_chat_template(tokenize=True, return_dict=False) must give a plain list of ints."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if not (isinstance(x, list) and all(isinstance(i, int) for i in x)):
        raise TypeError(f"expected a list of ints, got {type(x).__name__}")
    return x


def texts_of(messages, response):
    out = []
    for m in list(messages) + [response]:
        for k in ("content", "reasoning_content"):
            if isinstance(m.get(k), str):
                out.append(m[k])
    return out


def main(dest):
    sources = json.load(open(os.path.join(FIXTURES, "sources.json"), encoding="utf-8"))
    conversations = json.load(open(os.path.join(FIXTURES, "conversations.json"), encoding="utf-8"))
    torch.manual_seed(0)
    lines = []
    for fam, spec in sources["families"].items():
        d = os.path.join(dest, fam)
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        assert model.config.vocab_size == spec["vocab_size"], (fam, model.config.vocab_size)
        assert len(tok) <= spec["vocab_size"], (fam, len(tok))
        eot_id = tok.convert_tokens_to_ids(spec["eot_token"])
        assert eot_id == spec["eot_id"], (fam, eot_id)
        added = tok.added_tokens_decoder  # id -> AddedToken
        special_strs = sorted({t.content for t in added.values() if t.special})
        other_added = sorted({t.content for t in added.values() if not t.special})
        for mode in spec["modes"]:
            for conv in conversations:
                messages = conv["messages"]
                response = conv["response"]
                rec = {
                    "family": fam,
                    "mode": mode,
                    "conversation": conv["id"],
                    "messages": messages,
                    "response": response,
                }
                texts = texts_of(messages, response)
                # Added-token strings inside message text: transformers renders the template to one
                # string and tokenizes it whole, so these become their single ids there too.
                rec["content_special_tokens"] = [s for s in special_strs if any(s in t for t in texts)]
                rec["content_added_tokens"] = [
                    s for s in other_added if s.strip() and any(s in t for t in texts)
                ]
                full_msgs = messages + [dict(role="assistant", **response)]
                try:
                    rendered_prompt = tok.apply_chat_template(
                        messages, add_generation_prompt=True, tokenize=False, **mode
                    )
                    prompt_ids = as_ids(
                        tok.apply_chat_template(
                            messages, add_generation_prompt=True, tokenize=True, return_dict=False, **mode
                        )
                    )
                    rendered_full = tok.apply_chat_template(
                        full_msgs, add_generation_prompt=False, tokenize=False, **mode
                    )
                    full_ids = as_ids(
                        tok.apply_chat_template(
                            full_msgs, add_generation_prompt=False, tokenize=True, return_dict=False, **mode
                        )
                    )
                except Exception as e:  # the template refused the conversation
                    rec["error"] = f"{type(e).__name__}: {e}"
                    lines.append(rec)
                    continue
                # The ids are those of the rendered text, tokenized whole without added BOS.
                assert tok(rendered_prompt, add_special_tokens=False)["input_ids"] == prompt_ids, (fam, conv["id"])
                assert tok(rendered_full, add_special_tokens=False)["input_ids"] == full_ids, (fam, conv["id"])
                rec["rendered_prompt"] = rendered_prompt
                rec["prompt_ids"] = prompt_ids
                rec["rendered_full"] = rendered_full
                rec["full_ids"] = full_ids
                n = len(prompt_ids)
                rec["text_prefix"] = rendered_full.startswith(rendered_prompt)
                if full_ids[:n] != prompt_ids:
                    rec["prefix_mismatch"] = True
                    common = 0
                    while common < min(n, len(full_ids)) and full_ids[common] == prompt_ids[common]:
                        common += 1
                    rec["common_prefix_len"] = common
                else:
                    rec["prefix_mismatch"] = False
                    try:
                        end = full_ids.index(eot_id, n) + 1
                    except ValueError:
                        end = len(full_ids)
                        rec["eot_missing"] = True
                    completion = full_ids[n:end]
                    rec["completion_ids"] = completion
                    rec["after_completion_ids"] = full_ids[end:]
                    rec["completion_text"] = tok.decode(completion)
                    ids = torch.tensor([prompt_ids + completion])
                    with torch.no_grad():
                        logits = model(ids).logits[0]
                    lp = torch.log_softmax(logits.double(), dim=-1)
                    rec["student_logprobs"] = [float(lp[n - 1 + i, t]) for i, t in enumerate(completion)]
                lines.append(rec)
        print(f"{fam}: {sum(1 for r in lines if r['family'] == fam)} records", file=sys.stderr)
    out = os.path.join(FIXTURES, "reference.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for rec in lines:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {len(lines)} records to {out} (transformers {transformers.__version__}, torch {torch.__version__})",
          file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DEST   (DEST as laid out by scripts/real-templates/fetch.sh)")
    main(sys.argv[1])
