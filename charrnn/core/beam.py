"""Beam search: the likeliest continuation of a prime, where sampling draws a random one.

A beam holds the `width` best texts so far (hypotheses).  Each step extends every hypothesis by every character
(all of them advanced in one batched Stepper.step) and keeps the `width` best extensions by total log-probability,
or with length_norm by log-probability per character.  Ties go to the lower hypothesis, then the lower character,
so the search is deterministic.

A hypothesis that has just completed stop_at is finished: it keeps its place while it ranks among the best but
grows no further.  The search ends after `length` characters, when every place holds a finished hypothesis, or (on
total log-probability, which only falls as a text grows) when the best hypothesis is finished.

Plain beam search can end worse than greedy decoding: a wide beam may drop the greedy prefix for others that look
better early on and turn out worse.  Here the greedy path (each step's likeliest character after the greedy path so
far) is never pruned: when it falls out of the best `width`, it takes the last place.  So width 1 is greedy decoding
exactly, and a wider beam never returns a lower total log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.core.logprob import log_softmax
from charrnn.core.model import Model
from charrnn.core.sample import check_stop, prime_state
from charrnn.core.stepper import Stepper
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError


@dataclass(frozen=True)
class Found:
    """The best hypothesis: its characters (prime not included) and their log-probability given the prime."""

    indices: np.ndarray
    log_prob: float  # nats


def beam_search(model: Model, vocab: Vocab, length: int, width: int, prime: str = "", stop_at: str | None = None,
                length_norm: bool = False) -> Found:
    """The best continuation of prime of at most `length` characters; with stop_at, one that ends right after it
    (a match may start in the prime but must end in generated text) unless none does within `length`."""
    if width < 1:
        raise CharrnnError(f"the beam width must be at least 1, got {width}")
    check_stop(vocab, stop_at)
    logits, state = prime_state(model, vocab, prime, width)
    stop = vocab.encode(stop_at or "").astype(np.int64)
    stepper = Stepper(model, state)
    V = len(vocab)
    scores = np.full(width, -np.inf)  # total log-probability; places beyond the first are empty at the start
    scores[0] = 0.0
    lengths = np.zeros(width, np.int64)
    finished = np.zeros(width, bool)
    texts = np.zeros((width, length), vocab.dtype)
    tails = np.full((width, max(len(stop) - 1, 0)), -1)  # each text's last len(stop) - 1 characters, -1 for none
    if tails.shape[1] and prime:
        tail = vocab.encode(prime[-tails.shape[1] :])
        tails[:, tails.shape[1] - len(tail) :] = tail
    greedy = 0  # the place of the greedy path
    for t in range(length):
        grown = scores[:, None] + log_softmax(logits)  # (width, V): every extension's total
        grown[finished] = -np.inf
        total = np.concatenate([grown.ravel(), np.where(finished, scores, -np.inf)])  # then each finished as it is
        size = np.concatenate([np.repeat(lengths + 1, V), np.maximum(lengths, 1)])
        key = total / size if length_norm else total
        order = np.argsort(-key, kind="stable")[:width]
        on_path = width * V + greedy if finished[greedy] else greedy * V + int(np.argmax(grown[greedy]))
        if on_path not in order:
            order[-1] = on_path
        greedy = int(np.flatnonzero(order == on_path)[0])
        extended = order < width * V
        parents = np.where(extended, order // V, order - width * V)
        chars = order % V
        completes = np.zeros(width, bool)
        if stop.size:
            completes = extended & (chars == stop[-1]) & (tails[parents] == stop[:-1]).all(axis=1)
            tails = tails[parents]
            tails[extended] = np.column_stack([tails[extended, 1:], chars[extended]])
        scores, lengths, texts = total[order], lengths[parents] + extended, texts[parents]
        texts[extended, t] = chars[extended]
        finished = finished[parents] | completes
        for s in stepper.state:  # each place's recurrent state follows its hypothesis
            s[...] = s[:, parents]
        if finished.all() or (not length_norm and finished[np.argmax(scores)]):
            break
        if t + 1 < length:
            logits = stepper.step(texts[:, t])
    best = int(np.argmax(scores / np.maximum(lengths, 1) if length_norm else scores))
    return Found(texts[best, : lengths[best]].copy(), float(scores[best]))

