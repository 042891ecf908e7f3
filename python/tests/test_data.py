"""Unit tests of hindsight_data that need no torch (CI runs them on datasets the real pipeline
wrote): manifest checks, compact decoding, alignment and padding of the collator.

Datasets: HINDSIGHT_TEST_LOSSLESS and HINDSIGHT_TEST_COMPACT name two datasets of the same
pipeline (scripts/test.sh writes them: pipelines/hints.toml, lossless K_s = 0 and compact
K_s = 8); tests that need one are skipped when it is not given.
"""

import json
import math
import os
import shutil
import tempfile
import unittest

import numpy as np

from hindsight_data import IGNORE_INDEX, DatasetError, collate, decode_codes, decode_sorted_codes, open_dataset

LOSSLESS = os.environ.get("HINDSIGHT_TEST_LOSSLESS")
COMPACT = os.environ.get("HINDSIGHT_TEST_COMPACT")


class Codes(unittest.TestCase):
    def test_codes_decode_as_the_contract_says(self):
        # lp = -(c / 64)^2: code 64 is -1 nat, 128 is -4, 255 the floor -15.875244140625.
        self.assertEqual(decode_codes([0, 64, 128, 255]).tolist(), [0.0, -1.0, -4.0, -15.875244140625])

    def test_sorted_rows_are_cumulative_differences_capped_at_255(self):
        got = decode_sorted_codes(np.array([[0, 64, 64, 200]], dtype=np.uint8))
        self.assertEqual(got.tolist(), [[0.0, -1.0, -4.0, -15.875244140625]])


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _copy(src):
    d = tempfile.mkdtemp()
    dst = os.path.join(d, "ds")
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_state", ".lock"))
    return dst


@unittest.skipUnless(LOSSLESS, "HINDSIGHT_TEST_LOSSLESS not set")
class Manifest(unittest.TestCase):
    def test_rows_match_the_manifest(self):
        ds = open_dataset(LOSSLESS)
        manifest = _read_json(os.path.join(LOSSLESS, "manifest.json"))
        self.assertEqual(len(ds), manifest["totals"]["rows"])
        self.assertEqual(sum(len(r["completion_ids"]) for r in ds), manifest["totals"]["response_tokens"])

    def test_a_changed_shard_is_refused(self):
        d = _copy(LOSSLESS)
        shard = _read_json(os.path.join(d, "manifest.json"))["shards"][0]["file"]
        with open(os.path.join(d, shard), "r+b") as f:
            f.seek(100)
            byte = f.read(1)
            f.seek(100)
            f.write(bytes([byte[0] ^ 1]))
        with self.assertRaisesRegex(DatasetError, "sha256"):
            open_dataset(d)
        self.assertEqual(len(open_dataset(LOSSLESS, verify=True)), len(open_dataset(LOSSLESS)))

    def test_an_unknown_schema_version_is_refused(self):
        d = _copy(LOSSLESS)
        path = os.path.join(d, "manifest.json")
        m = _read_json(path)
        m["schema_version"] = 9
        with open(path, "w") as f:
            json.dump(m, f)
        with self.assertRaisesRegex(DatasetError, "schema_version 9"):
            open_dataset(d)

    def test_another_model_is_refused(self):
        ds = open_dataset(LOSSLESS)
        ds.check_model(tokenizer_sha256=ds.meta["tokenizer_sha256"])
        with self.assertRaisesRegex(DatasetError, "tokenizer_sha256"):
            ds.check_model(tokenizer_sha256="0" * 64)

    def test_min_relevance_keeps_nulls_and_rows_at_or_above(self):
        all_rows = list(open_dataset(LOSSLESS))
        rel = sorted(r["relevance"] for r in all_rows if r["relevance"] is not None)
        self.assertTrue(rel, "the hints dataset has relevance scores")
        cut = rel[len(rel) // 2]
        kept = open_dataset(LOSSLESS, min_relevance=cut)
        want = [r["sample_id"] for r in all_rows if r["relevance"] is None or r["relevance"] >= cut]
        self.assertEqual([r["sample_id"] for r in kept], want)
        self.assertLess(len(kept), len(all_rows))


@unittest.skipUnless(LOSSLESS and COMPACT, "HINDSIGHT_TEST_LOSSLESS / _COMPACT not set")
class CompactDecoding(unittest.TestCase):
    def test_decoded_values_are_within_the_code_bound_of_the_lossless_ones(self):
        exact = {r["sample_id"]: r for r in open_dataset(LOSSLESS)}
        compact = open_dataset(COMPACT)
        self.assertTrue(compact.has_student_side)
        compared = 0
        for r in compact:
            e = exact[r["sample_id"]]
            np.testing.assert_array_equal(r["teacher_topk_ids"], e["teacher_topk_ids"])
            x = -e["teacher_topk_logprobs"].astype(np.float64)
            bound = np.sqrt(x) / 64 + 1 / 16384 + 1e-6
            floor = -((255 / 64) ** 2)
            above = e["teacher_topk_logprobs"] > floor
            err = np.abs(r["teacher_topk_logprobs"] - e["teacher_topk_logprobs"])
            self.assertTrue((err[above] <= bound[above]).all(), err[above].max())
            self.assertTrue((r["teacher_topk_logprobs"][~above] == np.float32(floor)).all())
            np.testing.assert_array_equal(r["teacher_logprobs"], e["teacher_logprobs"])
            self.assertEqual(r["student_topk_ids"].shape, (len(r["completion_ids"]), compact.student_top_k))
            compared += r["teacher_topk_logprobs"].size
        self.assertGreater(compared, 500)


@unittest.skipUnless(COMPACT, "HINDSIGHT_TEST_COMPACT not set")
class Collate(unittest.TestCase):
    def setUp(self):
        self.ds = open_dataset(COMPACT)
        self.rows = [self.ds[i] for i in range(min(5, len(self.ds)))]
        self.batch = collate(self.rows, pad_token_id=7)

    def test_every_column_is_aligned_to_the_logits(self):
        b = self.batch
        width = max(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in self.rows)
        self.assertEqual(b["input_ids"].shape, (len(self.rows), width))
        self.assertEqual(b["teacher_topk_ids"].shape, (len(self.rows), width, self.ds.top_k))
        for i, r in enumerate(self.rows):
            p, t = len(r["prompt_ids"]), len(r["completion_ids"])
            for step in range(t):
                j = p - 1 + step
                # The logits at j predict input_ids[j + 1], which is response token `step`.
                self.assertEqual(b["input_ids"][i, j + 1], r["completion_ids"][step])
                self.assertEqual(b["response_ids"][i, j], r["completion_ids"][step])
                self.assertEqual(b["distill_mask"][i, j], r["loss_mask"][step])
                np.testing.assert_array_equal(b["teacher_topk_ids"][i, j], r["teacher_topk_ids"][step])
                np.testing.assert_array_equal(b["student_topk_ids"][i, j], r["student_topk_ids"][step])
                self.assertEqual(b["teacher_logprobs"][i, j], r["teacher_logprobs"][step])
                # A contract invariant seen through the alignment: where the response token is in
                # the teacher's top-k, its top-k log-prob is the teacher's log-prob of it.
                hit = np.nonzero(b["teacher_topk_ids"][i, j] == b["response_ids"][i, j])[0]
                if len(hit):
                    bound = math.sqrt(-b["teacher_logprobs"][i, j]) / 64 + 1 / 16384 + 1e-4
                    self.assertLessEqual(abs(b["teacher_topk_logprobs"][i, j, hit[0]] - b["teacher_logprobs"][i, j]), bound)
            # HF labels: unshifted, the response tokens where loss_mask is 1.
            want = np.where(np.asarray(r["loss_mask"]) > 0, r["completion_ids"], IGNORE_INDEX)
            np.testing.assert_array_equal(b["labels"][i, p:p + t], want)
            self.assertTrue((b["labels"][i, :p] == IGNORE_INDEX).all())

    def test_padding_is_neutral_and_masked(self):
        b = self.batch
        for i, r in enumerate(self.rows):
            n = len(r["prompt_ids"]) + len(r["completion_ids"])
            p = len(r["prompt_ids"])
            self.assertTrue((b["attention_mask"][i, :n] == 1).all())
            self.assertTrue((b["attention_mask"][i, n:] == 0).all())
            self.assertTrue((b["input_ids"][i, n:] == 7).all())
            self.assertTrue((b["labels"][i, n:] == IGNORE_INDEX).all())
            outside = np.ones(b["distill_mask"].shape[1], dtype=bool)
            outside[p - 1:n - 1] = False
            self.assertTrue((b["distill_mask"][i, outside] == 0).all())
            self.assertTrue((b["teacher_topk_logprobs"][i, outside] == 0).all())

    def test_pad_to_multiple(self):
        b = collate(self.rows, pad_to_multiple_of=64)
        self.assertEqual(b["input_ids"].shape[1] % 64, 0)
        with self.assertRaises(ValueError):
            collate([])


if __name__ == "__main__":
    unittest.main()
