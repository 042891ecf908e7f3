"""The compact encoding's one-byte log-prob codes (docs/CONTRACT.md, "Compact encoding")."""

import numpy as np

#: Scale of the square-root code: ``lp = -(code / SCALE) ** 2``.
SCALE = 64.0
#: The largest code; ``-(255 / 64) ** 2`` is the floor of representable log-probs.
MAX_CODE = 255


def decode_codes(codes):
    """Log-probs of codes stored as they are (``teacher_logprobs_at_student_topk``)."""
    c = np.asarray(codes, dtype=np.float32)
    return -((c / SCALE) ** 2)


def decode_sorted_codes(deltas, axis=-1):
    """Log-probs of a sorted top-k row stored as differences of consecutive codes
    (``teacher_topk_logprobs``): the codes are their cumulative sum along K."""
    c = np.cumsum(np.asarray(deltas, dtype=np.int64), axis=axis)
    return decode_codes(np.minimum(c, MAX_CODE))
