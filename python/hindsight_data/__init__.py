"""Read hindsight self-distillation datasets and train from them with no glue code.

- :func:`open_dataset` checks a dataset against its ``manifest.json`` (schema version, every
  shard's sha256) and yields rows with the compact encoding already decoded (numpy only).
- :func:`collate` pads rows to the batch and aligns every per-token column to the student's
  logits: position ``j`` of every column describes the token at ``input_ids[j + 1]``.
- :mod:`hindsight_data.losses` (needs torch): forward KL on the teacher's top-k + tail,
  reverse KL on the student's top-k (TRL's ``topk_logits`` form), the SDPO per-token advantage
  loss, with the temperatures docs/CONTRACT.md allows.
- :mod:`hindsight_data.trainer` (needs transformers): a ``Trainer`` whose ``compute_loss`` uses
  the stored teacher signal; the teacher is never loaded.
"""

from .codes import decode_codes, decode_sorted_codes
from .collate import IGNORE_INDEX, collate
from .dataset import SCHEMA_VERSIONS, DatasetError, HindsightDataset, open_dataset, split_heldout

__version__ = "2.0.0"

__all__ = [
    "IGNORE_INDEX",
    "SCHEMA_VERSIONS",
    "DatasetError",
    "HindsightDataset",
    "collate",
    "decode_codes",
    "decode_sorted_codes",
    "open_dataset",
    "split_heldout",
    "__version__",
]
