"""Ecosystem readers load a hindsight dataset with the contract's types (issue: trainer-ready datasets).

Usage: python tests/python/check_readers.py DATASET_DIR
Checks pyarrow.parquet.read_table, datasets.load_dataset("parquet", ...) and
datasets.load_dataset(DATASET_DIR) (through the generated dataset card), the Arrow types of
the contract, per-token alignment, and that `prompt` / `privileged_context` have the shape TRL's
SDFT/SDPO trainers take (a list of {"role", "content"} messages and a string). Schema version 2:
the student-side columns (when metadata student_top_k > 0) and, for a compact dataset, the
documented decoding of the one-byte codes (docs/CONTRACT.md), written here independently of
hindsight's own reader.
"""
import json
import math
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main(d: str) -> None:
    manifest = json.load(open(os.path.join(d, "manifest.json")))
    assert manifest["schema_version"] == 2, manifest["schema_version"]
    k = manifest["dataset"]["top_k"]
    ks = manifest["dataset"]["student_top_k"]
    compact = manifest["dataset"]["encoding"] == "compact"
    assert manifest["dataset"]["encoding"] in ("lossless", "compact")
    files = [os.path.join(d, s["file"]) for s in manifest["shards"]]
    table = pq.read_table(files)
    expected_rows = sum(s["rows"] for s in manifest["shards"])
    assert table.num_rows == expected_rows > 0, (table.num_rows, expected_rows)
    s = table.schema
    assert s.field("schema_version").type == pa.uint16()

    def large_list_of(name, value_type):
        t = s.field(name).type
        assert pa.types.is_large_list(t), (name, t)
        return t.value_type == value_type

    assert large_list_of("completion_ids", pa.int32())
    assert large_list_of("student_logprobs", pa.float32())
    code = pa.uint8()
    for name, vt, width in (
        ("teacher_topk_ids", pa.int32(), k),
        ("teacher_topk_logprobs", code if compact else pa.float32(), k),
        ("student_topk_logprobs", pa.float32(), k),
        # The student side is typed 1 wide when K_s = 0 (all null; datasets refuses width 0).
        ("student_topk_ids", pa.int32(), max(ks, 1)),
        ("student_topk_logprobs_self", pa.float32(), max(ks, 1)),
        ("teacher_logprobs_at_student_topk", code if compact else pa.float32(), max(ks, 1)),
    ):
        inner = s.field(name).type.value_type
        assert pa.types.is_fixed_size_list(inner) and inner.list_size == width and inner.value_type == vt, (name, inner)
    assert s.field("privileged_context").type == pa.large_string()
    assert pa.types.is_dictionary(s.field("source_kind").type)
    assert s.field("event_time").type == pa.timestamp("us", tz="UTC")
    prompt_t = s.field("prompt").type
    assert pa.types.is_list(prompt_t) and prompt_t.value_type.names == ["role", "content"]
    for name in ("relevance", "relevance_kl", "relevance_control_kl", "relevance_pmi",
                 "relevance_pmi_mean", "relevance_pmi_answer"):
        assert s.field(name).type == pa.float32(), name
    meta = pq.ParquetFile(files[0]).metadata.metadata
    assert meta[b"weights_sha256"].decode() == manifest["dataset"]["weights_sha256"]

    method = manifest["dataset"]["relevance_method"]
    method_column = "relevance_kl" if method == "kl" else f"relevance_{method}"
    threshold = manifest["dataset"]["relevance_threshold"]
    rows = table.to_pylist()
    for r in rows:
        t = len(r["completion_ids"])
        assert t == r["num_completion_tokens"]
        for col in ("student_logprobs", "teacher_logprobs", "advantages", "teacher_tail_logmass",
                    "teacher_logz", "student_logz"):
            assert len(r[col]) == t, col
        assert all(len(x) == k for x in r["teacher_topk_ids"])
        # Nulls by layout: the student side needs K_s > 0, the student snapshots lossless.
        assert (r["student_topk_ids"] is None) == (ks == 0)
        assert (r["teacher_logprobs_at_student_topk"] is None) == (ks == 0)
        assert (r["student_topk_logprobs_self"] is None) == (ks == 0 or compact)
        assert (r["student_topk_logprobs"] is None) == compact
        # Decoding as docs/CONTRACT.md says: lp = -(cumsum(codes) / 64)^2 for the sorted teacher
        # top-k, lp = -(code / 64)^2 for the teacher at the student's top-k.
        if compact:
            topk = []
            for deltas in r["teacher_topk_logprobs"]:
                acc, row = 0, []
                for d_ in deltas:
                    acc += d_
                    row.append(-((acc / 64.0) ** 2))
                topk.append(row)
            at_student = [[-((c / 64.0) ** 2) for c in row] for row in r["teacher_logprobs_at_student_topk"] or []]
        else:
            topk = r["teacher_topk_logprobs"]
            at_student = r["teacher_logprobs_at_student_topk"] or []
        for i in range(t):
            bound = (lambda lp: math.sqrt(-lp) / 64 + 1 / 16384 + 1e-4) if compact else (lambda lp: 1e-4)
            tl = r["teacher_logprobs"][i]
            if r["completion_ids"][i] in r["teacher_topk_ids"][i] and tl > -15.8:
                j = r["teacher_topk_ids"][i].index(r["completion_ids"][i])
                assert abs(topk[i][j] - tl) <= bound(tl), (i, topk[i][j], tl)
            if ks and r["completion_ids"][i] in r["student_topk_ids"][i] and tl > -15.8:
                j = r["student_topk_ids"][i].index(r["completion_ids"][i])
                assert abs(at_student[i][j] - tl) <= bound(tl), (i, at_student[i][j], tl)
            mass = sum(math.exp(x) for x in topk[i]) + math.exp(r["teacher_tail_logmass"][i])
            assert abs(mass - 1) <= (0.05 if compact else 1e-3), mass
        for a, tl, sl in zip(r["advantages"], r["teacher_logprobs"], r["student_logprobs"]):
            assert abs(a - (tl - sl)) < 1e-5
        # `relevance` is the configured method's column, null exactly where that one is
        # (`pmi_control` is computed from two columns).
        if method == "pmi_control":
            p, c = r["relevance_pmi"], r["relevance_control_kl"]
            want = None if p is None or c is None else p + math.log(max(c, 1e-6))
            assert (want is None) == (r["relevance"] is None), (want, r["relevance"])
            assert want is None or abs(r["relevance"] - want) <= 1e-4 * max(1.0, abs(want))
        else:
            assert r["relevance"] == r[method_column], (r["relevance"], method_column, r[method_column])
        if threshold is not None and r["relevance"] is not None:
            assert r["relevance"] >= threshold, (r["relevance"], threshold)

    # TRL SDFT/SDPO trainers take conversational `prompt` plus a `privileged_context` string.
    import datasets

    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) == expected_rows
    ex = ds[0]
    assert isinstance(ex["prompt"], list) and set(ex["prompt"][0]) == {"role", "content"}
    assert ex["prompt"][-1]["role"] == "user"
    assert isinstance(ex["privileged_context"], str) and ex["privileged_context"]
    assert isinstance(ex["completion"], str)
    assert len(ex["teacher_topk_logprobs"][0]) == k

    # The directory itself, as the Hub would see it: the dataset card (README.md) names the
    # shards, so manifest.json, quarantine.jsonl and _state/ are never taken for data.
    # A fresh cache: datasets 5.2 keys a local directory's cache by the directory's name and
    # card, not its files, so a rerun into a directory of the same name read a stale copy here.
    import tempfile

    whole = datasets.load_dataset(d, split="train", cache_dir=tempfile.mkdtemp(prefix="hf-cache-"))
    assert len(whole) == expected_rows, (len(whole), expected_rows)
    assert whole.column_names == table.column_names, whole.column_names
    assert whole.features["completion_ids"] == ds.features["completion_ids"]
    assert whole.features["teacher_topk_logprobs"] == ds.features["teacher_topk_logprobs"]
    assert sorted(whole["sample_id"]) == sorted(r["sample_id"] for r in rows)
    # pyarrow.dataset over the directory, by the card's own glob.
    import pyarrow.dataset as pads
    import glob as globlib

    pd = pads.dataset(sorted(globlib.glob(os.path.join(d, "part-*.parquet"))), format="parquet")
    assert pd.count_rows() == expected_rows and pd.schema.equals(table.schema, check_metadata=False)
    print(f"ok: pyarrow and datasets read {expected_rows} rows, K={k}, K_s={ks}, "
          f"{manifest['dataset']['encoding']}, datasets {datasets.__version__}, pyarrow {pa.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
