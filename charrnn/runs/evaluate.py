"""Scoring a text file with a trained model: average loss, bits per character and perplexity.

The file is read like a training corpus (charrnn.store.corpus.read_corpus: strict decoding, NUL check), cut into B
streams and scored in (B, T) chunks with the state carried from chunk to chunk, as validation does during
training.  Characters outside the model's vocabulary are counted and dropped; the rest is scored as one text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from charrnn.core.model import LN2, Model
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.fast.shards import Sharded
from charrnn.runs import footprint
from charrnn.runs.streams import eval_batches, eval_layout
from charrnn.store.cache import CACHE_MIN_BYTES, scratch_array
from charrnn.store.corpus import Remapped, join_blocks, read_corpus
from charrnn.store.memory import check_fits

# Streams that validation and `charrnn eval` cut a text into, whatever the training batch.  Each stream starts from
# a zero state, so the count moves the figure a little (16 streams score ~0.004 nats/char lower than 64); fixed, it
# depends on the model alone, and 64 streams score faster than a small training batch would.
VAL_STREAMS = 64


# Characters read at a time when counting and compacting a file: the transient copies (bincount's intp cast, the
# mask) stay a few MB however large the file.
BLOCK = 1 << 20


def known_text(path, vocab: Vocab, encoding: str = "utf-8",
               reading: Callable[[int, int], None] | None = None) -> tuple[np.ndarray | Remapped, int, list[dict]]:
    """The file as indices into vocab, with characters outside it dropped.
    Returns (indices, characters read, [{char, code_point, count}] of the dropped characters, most frequent first).
    Memory stays flat: a file without unknown characters is read through a table (memory-mapped when cached),
    one with them is compacted block by block into one byte a character (two past 256 symbols), in a memory-mapped
    scratch file when that is a big corpus's size (charrnn.store.cache.scratch_array), else in memory."""
    corpus = read_corpus(path, encoding, label="file", progress=reading)  # its own vocabulary: the file's
    to_model = vocab.encode_code_points(corpus.vocab.code_points)  # -1 where the model lacks a character
    data, n = corpus.data, len(corpus.data)

    def pieces():
        return (data[at : at + BLOCK] for at in range(0, n, BLOCK))

    counts = sum(np.bincount(piece, minlength=len(corpus.vocab)) for piece in pieces())
    known = to_model >= 0
    unknown = [{"char": ch, "code_point": f"U+{ord(ch):04X}", "count": int(counts[j])}
               for j, ch in enumerate(corpus.vocab.chars) if not known[j]]
    unknown.sort(key=lambda u: -u["count"])
    if not unknown:
        return corpus.reindexed(vocab).data, n, unknown
    table = np.where(known, to_model, 0).astype(vocab.dtype)
    size = int(counts[known].sum())
    big = size * vocab.dtype.itemsize >= CACHE_MIN_BYTES
    out = scratch_array(Path(path), size, vocab.dtype) if big else None
    if out is None:
        out = np.empty(size, vocab.dtype)
    return join_blocks((table[piece[known[piece]]] for piece in pieces()), out), n, unknown


def score(model: Model | Sharded, data: np.ndarray, batch_size: int, seq_len: int,
          progress: Callable[[int, int], None] | None = None, limit: int | None = None,
          stop: Callable[[], bool] | None = None) -> tuple[float, int]:
    """(summed loss in nats, characters predicted) over data, with carried state and no dropout; limit: about
    that many predictions, in windows spread over data (see eval_batches).  progress(characters just predicted,
    characters to predict in all) is called after every chunk; stop() before every chunk, and when it says so,
    scoring ends there (a Ctrl-C must not wait for a whole split)."""
    if len(data) < 2:
        return 0.0, 0
    B, _, per_stream = eval_layout(len(data), batch_size, seq_len, limit)
    state, total, count = model.initial_state(B), 0.0, 0
    for x, y in eval_batches(data, batch_size, seq_len, limit):
        if stop is not None and stop():
            break
        loss, n, state = model.evaluate(x, y, state)
        total, count = total + loss, count + n
        if progress is not None:
            progress(n, B * per_stream)
    return total, count


def evaluate_file(model: Model, vocab: Vocab, path, *, encoding: str = "utf-8", batch_size: int = 64,
                  seq_len: int = 64, progress: Callable[[int, int], None] | None = None,
                  reading: Callable[[int, int], None] | None = None) -> dict:
    """Loss (nats/char), bits/char and perplexity of the model on a text file, and what was skipped.
    progress: score's, while scoring; reading: read_corpus's, while reading the file."""
    if batch_size < 1 or seq_len < 1:
        raise CharrnnError("batch size and sequence length must be positive")
    data, read, unknown = known_text(path, vocab, encoding, reading)
    if len(data) < 2:
        raise CharrnnError(f"{path} has {len(data)} character(s) in the model's vocabulary; at least 2 are needed "
                           f"to score a prediction")
    streams = max(1, min(batch_size, (len(data) - 1) // seq_len))  # what eval_batches cuts the text into
    check_fits(footprint.evaluation(model.cfg, streams, min(seq_len, (len(data) - 1) // streams)),
               f"scoring in chunks of --batch-size {streams:,} x --seq-len {seq_len:,}")
    sharded = Sharded(model)  # the streams over the cores (charrnn.fast.shards)
    try:
        with sharded.owning_cores(batch_size):
            total, count = score(sharded, data, batch_size, seq_len, progress)
    finally:
        sharded.close()
    loss = total / count
    return {
        "file": str(Path(path)),
        "encoding": encoding,
        "loss": loss,  # nats per character
        "bits_per_char": loss / LN2,
        "perplexity": math.exp(loss) if loss < 700 else None,  # past e^709 a float overflows
        "characters": read,
        "scored": count,  # predictions made: each stream's first character and the < B left over are context only
        "skipped": sum(u["count"] for u in unknown),
        "unknown": unknown,
        "batch_size": batch_size,
        "seq_len": seq_len,
    }
