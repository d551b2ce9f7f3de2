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
    """The best one-unit threshold probe of each bool feature for each unit: values (U, T), labels (F, T), every
    feature true somewhere and false somewhere.  Returns (balanced accuracy, threshold, sign), each (F, U): the
    feature is predicted where sign * (value - threshold) > 0.  Balanced accuracy, the mean of the true positive
    and true negative rates, is 0.5 for a unit that knows nothing however rare the feature, 1 for a perfect one.
    Every threshold at once: each unit's values sorted (once for all features), the positives below each cut
    counted by a cumulative sum."""
    U, T = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    v = np.take_along_axis(values, order, axis=1)
    split = np.ones((U, T), bool)  # a cut after each value: only between distinct values, and after the last
    split[:, :-1] = v[:, 1:] > v[:, :-1]  # (all below: the trivial probe, 0.5)
    below, rows = np.arange(1, T + 1), np.arange(U)
    found = []
    for feature in labels:
        P = int(feature.sum())
        below_pos = np.cumsum(feature[order], axis=1)
        above_rate = ((P - below_pos) / P + (below - below_pos) / (T - P)) / 2  # balanced accuracy, "above" true
        score = np.where(split, np.maximum(above_rate, 1 - above_rate), 0.5)
        best = score.argmax(axis=1)
        threshold = (v[rows, best] + v[rows, np.minimum(best + 1, T - 1)]) / 2
        found.append((score[rows, best], threshold, np.where(above_rate[rows, best] >= 0.5, 1, -1)))
    return tuple(np.stack(parts) for parts in zip(*found, strict=True))


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson's r of each unit's values (U, T) with a numeric feature (T,); 0 for a constant unit."""
    v = values - values.mean(axis=1, keepdims=True)
    f = feature - feature.mean()
    norms = np.linalg.norm(v, axis=1) * np.linalg.norm(f)
    return np.divide(v @ f, norms, out=np.zeros(len(v)), where=norms > 0)


def rank_units(values: np.ndarray, features: dict[str, tuple[np.ndarray, bool]],
               top: int = RANKED) -> dict[str, list[dict] | None]:
    """For each feature (name -> (values (T,), whether it is bool)), the `top` units (U, T) that track it best,
    best first: [{unit, score, sign}], score the balanced accuracy of a threshold probe (bool features) or |r|;
    None for a feature the text never shows, or always does."""
    scored = {}
    binary = {name: f for name, (f, is_bool) in features.items() if is_bool and f.any() and not f.all()}
    if binary:
        parts = [threshold_probes(values[a : a + UNIT_BLOCK], np.stack(list(binary.values())))
                 for a in range(0, len(values), UNIT_BLOCK)]
        score, sign = np.concatenate([p[0] for p in parts], axis=1), np.concatenate([p[2] for p in parts], axis=1)
        scored.update({name: (score[i], sign[i]) for i, name in enumerate(binary)})
    for name, (f, is_bool) in features.items():
        if not is_bool and np.ptp(f) > 0:
            r = correlations(values, f)
            scored[name] = (np.abs(r), np.where(r >= 0, 1, -1))
    ranked = {}
    for name in features:
        score, sign = scored.get(name, (None, None))
        best = [] if score is None else np.argsort(-score, kind="stable")[:top]
        ranked[name] = [{"unit": int(u), "score": float(score[u]), "sign": int(sign[u])} for u in best] or None
    return ranked


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
