"""Open a hindsight dataset by its manifest: checked, decoded, row by row (numpy only)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .codes import decode_codes, decode_sorted_codes

#: The contract versions this package reads (docs/CONTRACT.md).
SCHEMA_VERSIONS = (1, 2)

# Per-token columns read by default, with their numpy dtype; top-k columns are [T, K].
_TOKEN = {
    "loss_mask": np.float32,
    "student_logprobs": np.float32,
    "teacher_logprobs": np.float32,
    "advantages": np.float32,
    "teacher_tail_logmass": np.float32,
}
_TOPK = {"teacher_topk_ids": np.int64, "teacher_topk_logprobs": np.float32}
_STUDENT_SIDE = {"student_topk_ids": np.int64, "teacher_logprobs_at_student_topk": np.float32}
_IDS = ("prompt_ids", "completion_ids")
_SCALARS = ("sample_id", "relevance", "relevance_kl")


class DatasetError(Exception):
    """A dataset this package will not read: no manifest, an unknown schema version, a shard
    that is missing or differs from its manifest checksum, rows that break the contract."""


def sha256_file(path):
    """Streamed sha256 of a file, as hindsight records it for shards and weights files."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory, verify=True):
    """``manifest.json`` of a dataset directory; with ``verify``, every listed shard's sha256 is
    checked (O(dataset bytes), the check a trainer should do before spending GPU hours)."""
    directory = Path(directory)
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable hindsight manifest ({e}); run `hindsight run` first")
    version = manifest.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise DatasetError(f"{path}: schema_version {version!r}; this package reads {SCHEMA_VERSIONS}")
    if not manifest.get("shards"):
        raise DatasetError(f"{path}: the manifest lists no shard (an empty dataset)")
    if verify:
        for shard in manifest["shards"]:
            shard_path = directory / shard["file"]
            try:
                digest = sha256_file(shard_path)
            except OSError as e:
                raise DatasetError(f"{shard_path}: listed in the manifest but not readable ({e})")
            if digest != shard["sha256"]:
                raise DatasetError(f"{shard_path}: sha256 {digest} differs from the manifest's {shard['sha256']}")
    return manifest


class _Column:
    """One list column as flat numpy values plus row offsets (no per-row Python objects)."""

    def __init__(self, array, dtype, width=None, decode=None):
        array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        self.valid = None if array.null_count == 0 else np.asarray(array.is_valid())
        self.offsets = array.offsets.to_numpy()
        values = array.values
        if pa.types.is_fixed_size_list(values.type):
            width = values.type.list_size
            values = values.flatten()
        raw = values.to_numpy(zero_copy_only=False)
        self.values = decode(raw, width) if decode else raw.astype(dtype, copy=False)
        self.width = width

    def row(self, i):
        if self.valid is not None and not self.valid[i]:
            return None
        lo, hi = self.offsets[i], self.offsets[i + 1]
        if self.width is None:
            return self.values[lo:hi]
        return self.values[lo * self.width:hi * self.width].reshape(-1, self.width)


class HindsightDataset:
    """The rows of a dataset, in manifest order, as dicts of numpy arrays:

    ``prompt_ids``, ``completion_ids`` (int64, [P] and [T]); ``loss_mask``, ``student_logprobs``,
    ``teacher_logprobs``, ``advantages``, ``teacher_tail_logmass`` ([T] float32);
    ``teacher_topk_ids`` / ``teacher_topk_logprobs`` ([T, K]); when the dataset has them,
    ``student_topk_ids`` / ``teacher_logprobs_at_student_topk`` ([T, K_s]); and ``sample_id``,
    ``relevance``, ``relevance_kl``. Compact codes are decoded (docs/CONTRACT.md).
    """

    def __init__(self, directory, verify=True, min_relevance=None, student_side=None):
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory, verify=verify)
        self.meta = self.manifest["dataset"]
        compact = self.meta.get("encoding") == "compact"
        has_student = bool(self.meta.get("student_top_k")) and self.manifest["schema_version"] >= 2
        if student_side and not has_student:
            raise DatasetError(
                f"{self.directory}: no student-side columns (score.student_top_k = 0 or schema 1); "
                "score the dataset with score.student_top_k > 0"
            )
        self.has_student_side = has_student if student_side is None else bool(student_side)
        files = [self.directory / s["file"] for s in self.manifest["shards"]]
        columns = list(_IDS) + list(_TOKEN) + list(_TOPK)
        if self.has_student_side:
            columns += list(_STUDENT_SIDE)
        try:
            present = set(pq.read_schema(files[0]).names)
            columns += [c for c in _SCALARS if c in present]
            table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        except (OSError, pa.ArrowInvalid, KeyError) as e:
            raise DatasetError(f"{self.directory}: shards do not have the contract's columns ({e})")
        expected = sum(s["rows"] for s in self.manifest["shards"])
        if table.num_rows != expected:
            raise DatasetError(f"{self.directory}: {table.num_rows} rows, the manifest lists {expected}")
        if min_relevance is not None and "relevance" in table.column_names:
            rel = table.column("relevance").to_numpy(zero_copy_only=False)
            keep = np.isnan(rel.astype(np.float64)) | (rel >= min_relevance)
            table = table.filter(pa.array(keep))
        self.table = table
        sorted_dec = (lambda raw, k: decode_sorted_codes(raw.reshape(-1, k)).reshape(-1)) if compact else None
        plain_dec = (lambda raw, k: decode_codes(raw)) if compact else None
        self._cols = {}
        for name in _IDS:
            self._cols[name] = _Column(table.column(name), np.int64)
        for name, dt in _TOKEN.items():
            self._cols[name] = _Column(table.column(name), dt)
        self._cols["teacher_topk_ids"] = _Column(table.column("teacher_topk_ids"), np.int64)
        self._cols["teacher_topk_logprobs"] = _Column(table.column("teacher_topk_logprobs"), np.float32,
                                                      decode=sorted_dec)
        if self.has_student_side:
            self._cols["student_topk_ids"] = _Column(table.column("student_topk_ids"), np.int64)
            self._cols["teacher_logprobs_at_student_topk"] = _Column(
                table.column("teacher_logprobs_at_student_topk"), np.float32, decode=plain_dec)
        self._scalars = {
            name: table.column(name).to_pylist() for name in _SCALARS if name in table.column_names
        }
        self._check_alignment()

    @property
    def top_k(self):
        return self.meta["top_k"]

    @property
    def student_top_k(self):
        return self.meta.get("student_top_k", 0) if self.has_student_side else 0

    def _check_alignment(self):
        """Every per-token column has T entries (what `hindsight validate` guarantees; checked
        here too, so a hand-edited dataset fails loudly instead of training on shifted rows)."""
        t = np.diff(self._cols["completion_ids"].offsets)
        for name, col in self._cols.items():
            if name in _IDS:
                continue
            n = np.diff(col.offsets)
            bad = np.nonzero(n != t)[0]
            if col.valid is not None:
                bad = [i for i in bad if col.valid[i]]
            if len(bad):
                i = int(bad[0])
                raise DatasetError(
                    f"row {self._scalars['sample_id'][i]}: {name} has {n[i]} entries, T = {t[i]} "
                    "(run `hindsight validate`)")
        if (np.diff(self._cols["prompt_ids"].offsets) == 0).any():
            raise DatasetError(f"{self.directory}: a row has no prompt token")

    def __len__(self):
        return self.table.num_rows

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        row = {name: col.row(i) for name, col in self._cols.items()}
        for name, values in self._scalars.items():
            row[name] = values[i]
        return row

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def check_model(self, **identity):
        """Raises :class:`DatasetError` unless each given fingerprint (``weights_sha256``,
        ``tokenizer_sha256``, ``chat_template_sha256``, ``vocab_size``) equals the dataset's:
        stored log-probs are only the training signal for the model that made them."""
        diffs = [f"{k}: dataset {self.meta.get(k)}, given {v}" for k, v in identity.items()
                 if v is not None and self.meta.get(k) != v]
        if diffs:
            raise DatasetError(
                f"the model does not match the one '{self.directory}' was scored with "
                f"('{self.meta.get('model_id')}'):\n  " + "\n  ".join(diffs))


def split_heldout(rows, fraction=0.2):
    """A deterministic (train, held-out) split: rows ranked by sha256(sample_id), so the same
    rows are held out on every run and machine; both sides non-empty."""
    rows = list(rows)
    if len(rows) < 2:
        raise DatasetError("need at least 2 rows to hold some out")
    ranked = sorted(rows, key=lambda r: hashlib.sha256(r["sample_id"].encode()).hexdigest())
    n_held = min(max(1, round(fraction * len(rows))), len(rows) - 1)
    return ranked[n_held:], ranked[:n_held]


def open_dataset(directory, verify=True, min_relevance=None, student_side=None):
    """Opens a dataset directory: see :class:`HindsightDataset`. ``min_relevance`` leaves out
    rows whose ``relevance`` is below it (null relevance is kept, as the pipeline keeps it);
    ``student_side`` (default: when present) reads the student-top-k columns."""
    return HindsightDataset(directory, verify=verify, min_relevance=min_relevance,
                            student_side=student_side)
