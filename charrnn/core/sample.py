"""Generating text: warm the state on a prime, then feed each sampled character back in.

Temperature divides the logits before the softmax; top-k and top-p (nucleus) cut the distribution's tail;
greedy takes the argmax.  Several samples run as one batch.  The prime goes through Model.forward in chunks; each
generated character then costs one Stepper.step (a few GEMVs into preallocated buffers) and one draw from an
explicit np.random.Generator, so the same seed gives the same text.  A plain draw is the Gumbel-max trick (two
NumPy calls on a V-sized vector, the noise made in blocks); top-k and top-p draw by inverse CDF.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from charrnn.core.model import Model
from charrnn.core.stepper import Stepper
from charrnn.core.vocab import Vocab, describe_chars
from charrnn.errors import CharrnnError

PRIME_CHUNK = 1024  # prime characters per Model.forward call: bounds the chunk buffers for long primes
NOISE_BLOCK = 1 << 15  # Gumbel noise values drawn at a time (256 KiB), at least one step's worth


def check_options(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """The sampling options' domains, for callers that bypass the CLI's option types."""
    if not (temperature > 0 and np.isfinite(temperature)):
        raise CharrnnError(f"temperature must be a positive number, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharrnnError(f"top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise CharrnnError(f"top-p must be in (0, 1], got {top_p}")


class Picker:
    """Logits (N, V) -> the next N characters.  Owns its scratch arrays, so a draw allocates only what NumPy's
    reductions need.  Works in float64: the draw must not suffer from float32 rounding of tiny probabilities.

    Without top-k or top-p a draw is argmax(logits + T * G) with G standard Gumbel noise, which is exactly a draw
    from softmax(logits / T) (Gumbel, 1954; Maddison et al., 2014) and costs two calls instead of a softmax, a
    cumulative sum and a search."""

    def __init__(self, batch: int, vocab_size: int, rng: np.random.Generator | None, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, greedy: bool = False):
        check_options(temperature, top_k, top_p)
        self.rng, self.temperature, self.greedy = rng, temperature, greedy
        self.top_k = top_k if top_k is not None and top_k < vocab_size else None
        self.top_p = top_p if top_p is not None and top_p < 1 else None
        self.p = np.empty((batch, vocab_size))  # weights, then their running sum
        self.row = np.empty((batch, 1))  # per-row max, then per-row total
        self.u = np.empty(batch)
        self.below = np.empty((batch, vocab_size), bool)
        self.idx = np.empty(batch, np.int64)
        plain = rng is not None and not greedy and self.top_k is None and self.top_p is None
        self.noise = np.empty((max(1, NOISE_BLOCK // (batch * vocab_size)), batch, vocab_size)) if plain else None
        self.noise_used = len(self.noise) if plain else 0  # rows of the block already consumed

    def weights(self, logits: np.ndarray) -> np.ndarray:
        """exp((logits - max) / temperature), cut to the top_k most likely and to the top_p nucleus: the
        distribution up to a per-row factor.  Subtracting the max before dividing makes a tiny temperature give
        one-hot rows, never inf - inf."""
        p, row = self.p, self.row
        np.copyto(p, logits)
        np.max(p, axis=1, keepdims=True, out=row)
        p -= row
        if self.temperature != 1:
            p /= self.temperature
        V = p.shape[1]
        if self.top_k is not None:  # exactly the V - k least likely go, even among ties
            np.put_along_axis(p, np.argpartition(p, V - self.top_k, axis=1)[:, : V - self.top_k], -np.inf, axis=1)
        np.exp(p, out=p)
        if self.top_p is not None:  # keep the smallest prefix (by probability) whose mass reaches top_p
            p /= np.sum(p, axis=1, keepdims=True, out=row)
            order = np.argsort(-p, axis=1, kind="stable")
            ranked = np.take_along_axis(p, order, axis=1)
            mass_before = np.cumsum(ranked, axis=1) - ranked  # the most likely character always stays
            np.put_along_axis(p, order, np.where(mass_before >= self.top_p, 0.0, ranked), axis=1)
        return p

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) after top-k and top-p: weights() normalised (the array is reused)."""
        p = self.weights(logits)
        p /= np.sum(p, axis=1, keepdims=True, out=self.row)
        return p

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """The next characters (N,) int64; the array is reused by the next call."""
        if self.greedy:
            return logits.argmax(axis=1, out=self.idx)
        if self.noise is not None:  # argmax as a method, out positional: a tenth of np.argmax's 2.8 us at V 65
            np.add(logits, self.gumbel(), self.p)
            return self.p.argmax(axis=1, out=self.idx)
        cdf = np.cumsum(self.weights(logits), axis=1, out=self.p)
        self.rng.random(out=self.u)
        self.u *= cdf[:, -1]  # u ~ uniform over [0, total weight)
        # the first index whose running sum exceeds u: never one with weight 0
        np.less_equal(cdf, self.u[:, None], out=self.below)
        np.sum(self.below, axis=1, out=self.idx)
        return np.minimum(self.idx, cdf.shape[1] - 1, out=self.idx)

    def gumbel(self) -> np.ndarray:
        """The next (N, V) of temperature-scaled Gumbel noise T * -log(-log(u)), refilling the block in place."""
        if self.noise_used == len(self.noise):
            g = self.noise
            self.rng.random(out=g)
            with np.errstate(divide="ignore"):  # u = 0 (odds 2^-53) gives -inf: that character is not drawn
                np.log(g, out=g)
                np.negative(g, out=g)
                np.log(g, out=g)
            g *= -self.temperature
            self.noise_used = 0
        self.noise_used += 1
        return self.noise[self.noise_used - 1]


def next_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None) -> np.ndarray:
    """Probabilities (N, V) from logits (N, V) after temperature, top-k and top-p (a fresh array)."""
    return Picker(logits.shape[0], logits.shape[1], None, temperature, top_k, top_p).probabilities(logits).copy()


def prime_state(model: Model, vocab: Vocab, prime: str, num_samples: int = 1):
    """Run the prime through the model in one chunked forward pass (PRIME_CHUNK characters per call).
    Returns (logits for the character after the prime (N, V), state), the same for all N samples.  An empty
    prime starts from a newline (the start of a line) when the vocabulary has one, else from the first
    character; that start character is not part of the text."""
    unknown = vocab.unknown(prime)
    if unknown:
        raise CharrnnError(f"the prime has {len(unknown)} character(s) outside the model's vocabulary: "
                           f"{describe_chars(unknown)}")
    idx = vocab.encode(prime or start_char(vocab))[None, :]  # (1, T): run once, then copy to every sample
    state = model.initial_state(1)
    for at in range(0, idx.shape[1], PRIME_CHUNK):
        logits, state, _ = model.forward(idx[:, at : at + PRIME_CHUNK], state)
    return np.repeat(logits[-1:], num_samples, axis=0), tuple(np.repeat(s, num_samples, axis=1) for s in state)


def start_char(vocab: Vocab) -> str:
    """What a text with no prime is read after: a newline (the start of a line) when the vocabulary has one, else
    its first character."""
    return "\n" if "\n" in vocab else vocab.chars[0]


def check_stop(vocab: Vocab, stop_at: str | None) -> None:
    """A stop string must be able to appear."""
    if stop_at is None:
        return
    if not stop_at:
        raise CharrnnError("the stop string is empty")
    unknown = vocab.unknown(stop_at)
    if unknown:
        raise CharrnnError(f"the stop string has character(s) outside the model's vocabulary, so it can never "
                           f"appear: {describe_chars(unknown)}")


def generate(model: Model, vocab: Vocab, length: int, rng: np.random.Generator, prime: str = "",
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             greedy: bool = False, num_samples: int = 1) -> Iterator[np.ndarray]:
    """An iterator of (num_samples,) index arrays, one per generated character, each conditioned on all before
    it.  The options and the prime are checked, and the prime is run, before this returns."""
    if num_samples < 1:
        raise CharrnnError(f"num_samples must be at least 1, got {num_samples}")
    pick = Picker(num_samples, len(vocab), rng, temperature, top_k, top_p, greedy)
    logits, state = prime_state(model, vocab, prime, num_samples)
    return _feed_back(Stepper(model, state), pick, logits, length)


def _feed_back(stepper: Stepper, pick: Picker, logits: np.ndarray, length: int) -> Iterator[np.ndarray]:
    for t in range(length):
        idx = pick(logits)
        yield idx.copy()
        if t + 1 < length:  # no step for a character nobody will draw
            logits = stepper.step(idx)


def stream(model: Model, vocab: Vocab, length: int, rng: np.random.Generator, prime: str = "",
           stop_at: str | None = None, num_samples: int = 1, **options) -> Iterator[tuple[int, str]]:
    """Every sample's text (prime included) as (sample number, piece) pairs, in print order: sample 0's prime,
    then its characters as they are generated; each later sample's text so far as soon as all before it are
    complete, then its characters live.  Each sample yields at least one piece, its first.

    length counts generated characters.  With stop_at, a sample ends right after stop_at appears (a match may
    start in the prime but must end in generated text); the batch stops when every sample has ended.
    Everything is checked before this returns, so a bad option fails before any text is printed."""
    check_stop(vocab, stop_at)
    steps = generate(model, vocab, length, rng, prime, num_samples=num_samples, **options)
    return _interleave(steps, vocab.chars, prime, stop_at, num_samples)


def _interleave(steps, chars, prime, stop_at, N) -> Iterator[tuple[int, str]]:
    waiting = [[prime] for _ in range(N)]  # text not printed yet, per sample
    tails = [prime[max(0, len(prime) - len(stop_at) + 1) :] if stop_at else "" for _ in range(N)]
    done = [False] * N
    live = 0  # the sample being printed as it grows; all before it are complete and printed
    yield 0, prime
    waiting[0] = []
    for idx in steps:
        for k in range(live, N):
            if done[k]:
                continue
            ch = chars[idx[k]]
            if k == live:
                yield k, ch
            else:
                waiting[k].append(ch)
            if stop_at:
                tails[k] = (tails[k] + ch)[-len(stop_at) :]
                done[k] = tails[k] == stop_at
        while live < N and done[live]:
            live += 1
            if live < N:
                yield live, "".join(waiting[live])
                waiting[live] = []
        if live == N:
            steps.close()
            return
    for k in range(live + 1, N):
        yield k, "".join(waiting[k])


def sample_text(model: Model, vocab: Vocab, length: int, rng: np.random.Generator,
                stop: Callable[[], bool] | None = None, **options) -> str:
    """A whole sample as one string (batch of one; the prime, if any, included), e.g. for the samples shown
    during training; shorter where stop() said to stop (checked after every character)."""
    pieces = []
    for _, piece in stream(model, vocab, length, rng, **{**options, "num_samples": 1}):
        pieces.append(piece)
        if stop is not None and stop():
            break
    return "".join(pieces)
