"""Python baseline for the ingest benchmark: the same work as examples/bench_ingest.rs in plain
Python (json + Hugging Face `tokenizers`), to compare episodes/s.

Per record: parse the WildChat JSON line; every assistant turn followed by a user turn is an
episode (prompt = earlier messages, response = the assistant turn, privileged = the next user
turn); apply hindsight_offline_v1 to the last user message; render student and teacher contexts
with the ChatML template (SmolLM2's default system prompt); encode both and the response.
This baseline is generous to Python: plain string formatting instead of Jinja, and no prefilters,
dedup, PII scrubbing or quarantine.

Usage: python scripts/bench_ingest_python.py INPUT.jsonl TOKENIZER_JSON
  (tokenizer.json from `hindsight export-hf --out DIR`)
"""
import json
import sys
import time

from tokenizers import Tokenizer

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
TEMPLATE = ("{prompt}\n\n[HINDSIGHT CONTEXT]\nThe following is a user response to your previous, "
            "insufficient attempt. Improve your response to the user prompt.\nFuture User Message: {followup}")


def render(messages):
    out = [] if messages and messages[0]["role"] == "system" else [SYSTEM]
    for m in messages:
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def main(path, tok_path):
    tok = Tokenizer.from_file(tok_path)
    start = time.time()
    episodes = tokens = 0
    nbytes = 0
    with open(path, "rb") as f:
        for line in f:
            nbytes += len(line)
            rec = json.loads(line)
            conv = [{"role": t["role"], "content": t["content"]} for t in rec["conversation"]]
            for i in range(1, len(conv) - 1):
                if conv[i]["role"] != "assistant" or conv[i + 1]["role"] != "user":
                    continue
                prompt = conv[:i]
                teacher = [dict(m) for m in prompt]
                teacher[-1]["content"] = TEMPLATE.format(prompt=teacher[-1]["content"], followup=conv[i + 1]["content"])
                tokens += len(tok.encode(render(prompt), add_special_tokens=False).ids)
                tokens += len(tok.encode(render(teacher), add_special_tokens=False).ids)
                tokens += len(tok.encode(conv[i]["content"], add_special_tokens=False).ids) + 1
                episodes += 1
    secs = time.time() - start
    print(f"python: {nbytes / 1e6:.1f} MB in {secs:.2f}s: {nbytes / 1e6 / secs:.1f} MB/s, "
          f"{episodes / secs:.0f} episodes/s, {episodes} episodes, {tokens} tokens")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
