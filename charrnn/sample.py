"""Generating text: warm the state on a prime, then feed each sampled character back in.

Temperature divides the logits before the softmax; top-k and top-p (nucleus) cut the distribution's tail;
greedy takes the argmax.  Several samples run as one batch.  The draw is inverse-CDF on a V-sized vector per
sample, from an explicit np.random.Generator, so the same seed gives the same text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.model import Model
from charrnn.vocab import Vocab, describe_chars


def next_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None) -> np.ndarray:
    """Probabilities (N, V) from logits (N, V) after temperature, top-k and top-p.  Works in float64: the
    draw must not suffer from float32 rounding of tiny probabilities."""
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k, None]
        z[z < kth] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        # keep the smallest prefix whose mass reaches top_p (always at least the most likely character)
        drop_sorted = np.cumsum(sorted_p, axis=1) - sorted_p >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=1)
        p[drop] = 0.0
        p /= p.sum(axis=1, keepdims=True)
    return p


def draw(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of p (N, V) by inverse CDF."""
    cdf = np.cumsum(p, axis=1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), p.shape[1] - 1)


def prime_state(model: Model, vocab: Vocab, prime: str, num_samples: int = 1):
    """Run the prime through the model in one chunked forward pass.
    Returns (logits for the character after the prime (N, V), state).  An empty prime starts from a newline
    (the start of a line) when the vocabulary has one, else from the first character."""
    unknown = vocab.unknown(prime)
    if unknown:
        raise CharrnnError(f"the prime has {len(unknown)} character(s) outside the model's vocabulary: "
                           f"{describe_chars(unknown)}")
    start = prime or ("\n" if "\n" in vocab else vocab.chars[0])
    idx = np.broadcast_to(vocab.encode(start), (num_samples, len(start)))
    logits, state, _ = model.forward(idx, model.initial_state(num_samples))
    T = len(start)
    return logits.reshape(T, num_samples, -1)[-1].copy(), state


def generate(model: Model, vocab: Vocab, length: int, rng: np.random.Generator, prime: str = "",
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, num_samples: int = 1) -> Iterator[np.ndarray]:
    """Yield (num_samples,) index arrays, one per generated character, each conditioned on all before it."""
    if temperature <= 0:
        raise CharrnnError("temperature must be positive")
    logits, state = prime_state(model, vocab, prime, num_samples)
    for _ in range(length):
        if greedy:
            idx = logits.argmax(axis=1)
        else:
            idx = draw(next_distribution(logits, temperature, top_k, top_p), rng)
        yield idx
        logits, state = model.step(idx, state)


def sample_text(model: Model, vocab: Vocab, length: int, rng: np.random.Generator, **options) -> str:
    """A whole sample as one string (batch of one), e.g. for the samples shown during training."""
    return "".join(vocab.chars[int(i[0])] for i in generate(model, vocab, length, rng, **options))
