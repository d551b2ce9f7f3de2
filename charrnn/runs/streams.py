"""Cutting a split into B parallel streams of (B, T) chunks, for training and for scoring with carried state."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from charrnn.errors import CharrnnError


class Streams:
    """A split cut into B contiguous streams, as char-rnn does it.

    Stream b covers data[b*S : (b+1)*S + 1] with S = (n - 1) // B.  Chunk j of an epoch is columns
    [j*T, (j+1)*T) of every stream; targets are the inputs shifted by one character.  The position is just the
    chunk number, held by the caller, so a run can stop and continue at exactly the same place.

    An offset r rotates the split: stream b then starts at r + b*S, wrapping around the end of the data, so the
    trainer can give every epoch different streams and chunk boundaries (see charrnn.runs.train.epoch_offset).
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, split: str = "train"):
        if batch_size < 1 or seq_len < 1:
            raise CharrnnError("batch size and sequence length must be positive")
        n = len(data)
        self.data, self.batch_size, self.seq_len = data, batch_size, seq_len
        self.stream_len = (n - 1) // batch_size if n > 0 else 0
        self.chunks = self.stream_len // seq_len  # per epoch
        if self.chunks == 0:
            fit = (n - 1) // seq_len
            hint = (f"--batch-size {fit} would fit, or use a longer corpus" if fit >= 1 else
                    f"even --batch-size 1 needs {seq_len + 1}: use a shorter --seq-len or a longer corpus")
            raise CharrnnError(
                f"the {split} split has {n} characters, too short for one chunk of --batch-size {batch_size} x "
                f"--seq-len {seq_len} (needs {batch_size * seq_len + 1}); {hint}"
            )
        self._starts = np.arange(batch_size) * self.stream_len

    def batch(self, chunk: int, length: int | None = None, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (B, T) of chunk number `chunk` (0 <= chunk < self.chunks), rotated by `offset`."""
        T = self.seq_len if length is None else length
        idx = (self._starts + (offset + chunk * self.seq_len))[:, None] + np.arange(T + 1)
        if offset:
            idx %= len(self.data)
        window = self.data[idx]
        return window[:, :-1], window[:, 1:]


def eval_batches(data: np.ndarray, batch_size: int, seq_len: int,
                 limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every character of a split (but the < B left over by the stream cut) in (B, T) chunks, the last shorter,
    for evaluation with carried state.  Uses fewer streams when the split is short.

    limit: predict about this many characters in all, the first limit // B of every stream: B windows spread
    evenly over the split, the same ones every time (validation of a big corpus during training)."""
    if len(data) < 2:
        return
    B, T, length = eval_layout(len(data), batch_size, seq_len, limit)
    streams = Streams(data, B, T)
    chunks = length // T
    for j in range(chunks):
        yield streams.batch(j)
    if length % T:
        yield streams.batch(chunks, length % T)


def eval_layout(n: int, batch_size: int, seq_len: int, limit: int | None = None) -> tuple[int, int, int]:
    """(streams, chunk length, predictions per stream) with which eval_batches scores n >= 2 characters."""
    B = max(1, min(batch_size, (n - 1) // seq_len))
    per_stream = (n - 1) // B
    return B, min(seq_len, per_stream), per_stream if limit is None else max(1, min(per_stream, limit // B))
