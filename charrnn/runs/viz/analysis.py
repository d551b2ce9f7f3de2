"""What `charrnn viz` measures in a model's pass over a text: which units track which features, how often the
gates saturate, and how far back the loss reaches.  Shapes: U units, T characters, L layers, H hidden."""

from __future__ import annotations

import numpy as np

from charrnn.core.model import Model, cross_entropy

SATURATED = (0.1, 0.9)  # a gate below the first or above the second is saturated (Karpathy et al., 2015)
RANKED = 3  # units listed per feature
UNIT_BLOCK = 256  # units ranked at a time: a block's sorted copies stay a few MB per thousand characters
LOOK_BACK = 64  # steps back the look-back curve reaches
WINDOWS = 128  # positions its average is taken over


def threshold_probes(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best one-unit threshold probe of a bool feature for each unit: values (U, T), labels (T,).
    Returns (balanced accuracy, threshold, sign) per unit: the feature is predicted where sign * (value -
    threshold) > 0.  Balanced accuracy, the mean of the true positive and true negative rates, is 0.5 for a
    unit that knows nothing however rare the feature, and 1 for a perfect one."""
    U, T = values.shape
    P = int(labels.sum())
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    below_pos = np.cumsum(labels[order], axis=1)  # positives at or below each split, a split after each value
    below = np.arange(1, T + 1)
    above_rate = ((P - below_pos) / P + (below - below_pos) / (T - P)) / 2  # balanced accuracy, "above" positive
    split = np.ones((U, T), bool)
    split[:, :-1] = v[:, 1:] > v[:, :-1]  # only between distinct values; after the last, all fall below
    score = np.where(split, np.maximum(above_rate, 1 - above_rate), 0.5)
    best = score.argmax(axis=1)
    rows = np.arange(U)
    upper = v[rows, np.minimum(best + 1, T - 1)]
    threshold = (v[rows, best] + upper) / 2
    sign = np.where(above_rate[rows, best] >= 0.5, 1, -1)
    return score[rows, best], threshold, sign


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson's r of each unit's values (U, T) with a numeric feature (T,); 0 for a constant unit."""
    v = values - values.mean(axis=1, keepdims=True)
    f = feature - feature.mean()
    norms = np.linalg.norm(v, axis=1) * np.linalg.norm(f)
    return np.divide(v @ f, norms, out=np.zeros(len(v)), where=norms > 0)


def rank_units(values: np.ndarray, feature: np.ndarray, binary: bool, top: int = RANKED) -> list[dict] | None:
    """The `top` units that track a feature best, best first: [{unit, score, sign}] with score the balanced
    accuracy of a threshold probe (binary features) or |r|; None when the text never shows the feature, or
    always does."""
    if binary:
        if feature.all() or not feature.any():
            return None
        parts = [threshold_probes(values[a : a + UNIT_BLOCK], feature) for a in range(0, len(values), UNIT_BLOCK)]
        score, sign = np.concatenate([p[0] for p in parts]), np.concatenate([p[2] for p in parts])
    else:
        if np.ptp(feature) == 0:
            return None
        r = correlations(values, feature)
        score, sign = np.abs(r), np.where(r >= 0, 1, -1)
    best = np.argsort(-score, kind="stable")[:top]
    return [{"unit": int(u), "score": float(score[u]), "sign": int(sign[u])} for u in best]


def saturation(gates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each gate's (L, 2, H): per layer and unit, the fraction of steps below SATURATED[0] and above
    SATURATED[1]."""
    low, high = SATURATED
    return {g: np.stack([(a < low).mean(axis=1), (a > high).mean(axis=1)], axis=1) for g, a in gates.items()}


def look_back(model: Model, idx: np.ndarray, states: dict[str, np.ndarray], state0: tuple[np.ndarray, ...],
              span: int = LOOK_BACK, windows: int = WINDOWS) -> np.ndarray:
    """How far back the model looks: for k = 0 .. span-1, the norm of d loss_t / d x_{t-k} averaged over up to
    `windows` positions t spread over the text, with loss_t the surprisal of character t+1 and x the one-hot
    inputs.  All positions at once: a window of `span` characters ending at each t, started from the state the
    pass reached there (states (L, T, H) per name, state0 the one before the text), one forward and one backward
    pass over the batch of windows.  Empty when the text is too short."""
    T = len(idx)
    span = min(span, T - 1)
    if span < 1:
        return np.zeros(0)
    ends = np.unique(np.linspace(span - 1, T - 2, num=min(windows, T - span)).round().astype(np.int64))
    starts = ends - span + 1
    x = idx[starts[:, None] + np.arange(span)]
    before = starts - 1  # the state each window starts from: after this character, or state0 at -1
    state = tuple(np.where((before >= 0)[None, :, None], s[:, np.maximum(before, 0)], s0)
                  for s, s0 in zip(states.values(), state0, strict=True))
    logits, _, cache = model.forward(x, state)
    N = len(ends)
    last = logits[(span - 1) * N :]  # time-major: the windows' last step
    _, dlast = cross_entropy(last, idx[ends + 1].astype(np.int64))
    logits[: (span - 1) * N] = 0  # only loss_t counts
    dlast *= N  # each window's own loss, not their mean
    dx = model.input_gradient(logits, cache)  # (span, N, V)
    return np.linalg.norm(dx.astype(np.float64), axis=2).mean(axis=1)[::-1]  # k = 0 is the window's last step
