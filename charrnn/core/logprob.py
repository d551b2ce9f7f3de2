"""Log-probabilities of characters from a model's logits: for searching, scoring and showing predictions."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax(logits) per row (M, V), in float64: a fresh array, exact enough to rank and add up."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def surprisal(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) in nats for each row: logits (M, V), overwritten, and targets (M,) -> (M,) in the
    logits' dtype.  In place, with no (M, V) temporary: the scoring of many records at once runs on it."""
    row_max = logits.max(axis=1, keepdims=True)
    logits -= row_max
    target = logits[np.arange(len(targets)), targets]
    np.exp(logits, out=logits)
    return np.log(logits.sum(axis=1)) - target
