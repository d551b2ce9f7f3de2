"""Scoring records of text with a model, each from a fresh state: `charrnn score`.

A record is a line, or the text between two separators, or the whole text.  Each is read after the start
character (charrnn.core.sample.start_char: a newline when the model knows one), as if it began a line, so its
first character is predicted too.  Characters the model lacks are dropped from a record, counted and named, as
`charrnn eval` does with a file.

Records stream in and out: a block of them (BLOCK_CHARS characters) is sorted by length and cut into batches of
STREAMS records of about the same length, each batch one (N, T) run of Model.forward in chunks with the state
carried, the padding after a short record masked out; the block's results then go out in input order.  Memory
stays that of one block (or of the longest record), whatever the input's size.  The whole text (whole_text) is one
stream, chunk after chunk, in bounded memory whatever its length.

Each batch runs over the cores as `charrnn eval` does (charrnn.fast.shards.Sharded, its surprisal job: every
stream's figures, where eval's sums them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from charrnn.core.logprob import surprisal
from charrnn.core.model import LN2, Model
from charrnn.core.sample import start_char
from charrnn.core.vocab import Vocab
from charrnn.fast.shards import Sharded

BLOCK_CHARS = 1 << 20  # characters of records gathered, sorted and scored together
STREAMS = 128  # records scored side by side
CHUNK = 64  # time steps per Model.forward call
ROUND = 8  # a batch's length is padded to a multiple of this, so the model's buffers change shape seldom
WHOLE_CHUNK = 1024  # characters per Model.forward call in the one stream of the whole text


@dataclass
class Encoded:
    """A record as the model's indices, its unknown characters dropped and counted."""

    text: str
    idx: np.ndarray
    unknown: Counter


def split_records(pieces: Iterable[str], sep: str) -> Iterator[str]:
    """The records between separators in text that arrives in pieces (a record or a separator may span pieces).
    Text after the last separator is a record unless it is empty: a file's last newline ends its last line."""
    current, carry = [], ""  # the record so far; its last len(sep) - 1 characters, which may begin a separator
    keep = len(sep) - 1
    for piece in pieces:
        parts = (carry + piece).split(sep)
        if len(parts) > 1:
            yield "".join([*current, parts[0]])
            yield from parts[1:-1]
            current = []
        last = parts[-1]
        cut = max(0, len(last) - keep)
        current.append(last[:cut])
        carry = last[cut:]
    if current or carry:
        last = "".join([*current, carry])
        if last:
            yield last


def encode(vocab: Vocab, records: list[str]) -> list[Encoded]:
    """Records as indices into vocab, with one pass over their code points for the whole list."""
    text = "".join(records)
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    idx = vocab.encode_code_points(cps)
    bounds = np.cumsum([0] + [len(r) for r in records])
    out = []
    for r, a, b in zip(records, bounds[:-1], bounds[1:], strict=True):
        piece = idx[a:b]
        known = piece >= 0
        unknown = Counter()
        if not known.all():
            code_points, counts = np.unique(cps[a:b][~known], return_counts=True)
            unknown = Counter({chr(c): int(n) for c, n in zip(code_points, counts, strict=True)})
        out.append(Encoded(r, piece[known].astype(vocab.dtype), unknown))
    return out


def score_batch(model: Model | Sharded, records: list[np.ndarray], start: int) -> np.ndarray:
    """Surprisal in nats (N, T) of every character of N records scored side by side, each from a fresh state
    after the start character; T is the longest record's length, rounded up to ROUND; zero past a record's end."""
    lengths = np.array([len(r) for r in records])
    T = -(-int(lengths.max()) // ROUND) * ROUND
    N = len(records)
    rows = np.repeat(np.arange(N), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.concatenate(records)
    y = np.zeros((N, T), np.int64)
    y[rows, cols] = flat
    x = np.full((N, T + 1), start, np.int64)
    x[rows, cols + 1] = flat  # each input is the character before its target; the last is never an input
    out = np.zeros((N, T), np.float64)
    state = model.initial_state(N)
    for a in range(0, T, CHUNK):
        b = min(a + CHUNK, T)  # x has a column more than y: the last character, never an input
        out[:, a:b], state = model.surprisal(x[:, a:b], y[:, a:b], state)
    out[np.arange(T) >= lengths[:, None]] = 0.0
    return out


def score_records(model: Model, vocab: Vocab, records: Iterable[str], per_char: bool = False) -> Iterator[dict]:
    """One result (see result) per record, in order; each batch of records over the cores, as eval's streams."""
    sharded = Sharded(model)
    try:
        with sharded.owning_cores(STREAMS):
            yield from _score_records(sharded, vocab, records, per_char)
    finally:
        sharded.close()


def _score_records(model: Sharded, vocab: Vocab, records: Iterable[str], per_char: bool) -> Iterator[dict]:
    start = int(vocab.encode(start_char(vocab))[0])
    number = 0
    for block in blocks(records):
        encoded = encode(vocab, block)
        lengths = np.array([len(e.idx) for e in encoded])
        nats = np.zeros(len(block))
        bits = [np.zeros(0) if per_char else None] * len(block)  # an empty record keeps these
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]  # an empty record has nothing to score
        for at in range(0, len(order), STREAMS):
            batch = order[at : at + STREAMS]
            losses = score_batch(model, [encoded[i].idx for i in batch], start)
            nats[batch] = losses.sum(axis=1)
            if per_char:
                for row, i in enumerate(batch):
                    bits[i] = losses[row, : lengths[i]] / LN2
        for i, e in enumerate(encoded):
            number += 1
            yield result({"record": number, "text": e.text}, lengths[i], nats[i], e.unknown, bits[i])


def blocks(records: Iterable[str]) -> Iterator[list[str]]:
    """Consecutive records in lists of about BLOCK_CHARS characters (a longer record alone)."""
    block, size = [], 0
    for r in records:
        block.append(r)
        size += len(r)
        if size >= BLOCK_CHARS:
            yield block
            block, size = [], 0
    if block:
        yield block


def whole_text(model: Model, vocab: Vocab, pieces: Iterable[str], per_char: bool = False) -> dict:
    """One result for the whole text as one stream, read after the start character, the state carried from
    chunk to chunk: what a single Model.forward over all of it would give, in bounded memory."""
    state, prev = model.initial_state(1), int(vocab.encode(start_char(vocab))[0])
    count, nats, unknown, bits = 0, 0.0, Counter(), []
    for piece in pieces:
        e = encode(vocab, [piece])[0]
        unknown += e.unknown
        for a in range(0, len(e.idx), WHOLE_CHUNK):
            y = e.idx[a : a + WHOLE_CHUNK].astype(np.int64)
            x = np.concatenate([[prev], y[:-1]])[None, :]
            logits, state, _ = model.forward(x, state)
            losses = surprisal(logits, y)
            nats += float(losses.sum(dtype=np.float64))
            count, prev = count + len(y), int(y[-1])
            if per_char:
                bits.append(losses / LN2)
    return result({}, count, nats, unknown, np.concatenate([np.zeros(0), *bits]) if per_char else None)


def result(head: dict, chars: int, nats: float, unknown: Counter, bits: np.ndarray | None) -> dict:
    """A record's figures, JSON-ready: head, then the characters scored, their summed surprisal in nats, bits per
    character and perplexity (None for an empty record), the characters skipped and which, and with per_char
    each scored character's surprisal in bits."""
    per_char = nats / chars if chars else None
    out = {
        **head,
        "chars": int(chars),
        "nats": float(nats),
        "bits_per_char": per_char / LN2 if per_char is not None else None,
        "perplexity": math.exp(per_char) if per_char is not None and per_char < 700 else None,
        "skipped": sum(unknown.values()),
        "unknown": [{"char": ch, "code_point": f"U+{ord(ch):04X}", "count": n} for ch, n in unknown.most_common()],
    }
    if bits is not None:
        out["surprisal"] = np.round(np.asarray(bits, np.float64), 4).tolist()
    return out
