"""What a checkpoint records of a run besides its arrays: where the run is, what it has seen, how it went.

Everything here goes into the checkpoint's JSON metadata and comes back on resume, so a run that stops and
resumes is the run that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

from charrnn.errors import CharrnnError
from charrnn.store.schema import MAX_HISTORY, as_text


@dataclass
class Progress:
    """A run's position and record.  chunks: chunks per epoch of the run's streams."""

    chunks: int
    step: int = 0  # updates done
    epoch: int = 0  # whole epochs done
    chunk: int = 0  # chunks done in the current epoch
    chars_seen: int = 0
    elapsed: float = 0.0  # seconds trained by earlier invocations, evaluation included
    history: list[dict] = field(default_factory=list)  # a row per validation
    best_val: float | None = None
    best_step: int | None = None
    started: float | None = field(default=None, repr=False)  # monotonic start of this invocation, while it trains

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.chunk / self.chunks

    @property
    def run_time(self) -> float:
        """Wall time this run has trained, over all its invocations (resumes add up)."""
        return self.elapsed + (time.monotonic() - self.started if self.started is not None else 0.0)

    def start_clock(self) -> None:
        self.started = time.monotonic()

    def stop_clock(self) -> None:
        self.elapsed, self.started = self.run_time, None

    def advance(self, chars: int) -> bool:
        """One step done; True at an epoch boundary, where the streams start over and the state resets."""
        self.step += 1
        self.chunk += 1
        self.chars_seen += chars
        if self.chunk < self.chunks:
            return False
        self.epoch, self.chunk = self.epoch + 1, 0
        return True

    def record(self, row: dict) -> bool:
        """Add a validation's row (step, losses, speed); True when its val_loss is the best so far.  Past
        MAX_HISTORY rows every other one is dropped, counting back from the newest: the curve keeps its shape at
        half the resolution, and a checkpoint's metadata stays small however long the run."""
        self.history.append(row)
        if len(self.history) > MAX_HISTORY:
            self.history = self.history[::-2][::-1]
        val = row.get("val_loss")
        if val is None or not math.isfinite(val) or (self.best_val is not None and val >= self.best_val):
            return False
        self.best_val, self.best_step = val, self.step
        return True

    def meta(self) -> dict:
        """The metadata fields this class owns."""
        return {
            "progress": {"step": self.step, "epoch": self.epoch, "chunk": self.chunk,
                         "epoch_progress": self.epoch_progress, "chars_seen": self.chars_seen,
                         "elapsed": self.run_time},
            "history": self.history,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
        }

    @classmethod
    def from_meta(cls, meta: dict, chunks: int) -> Progress:
        """A resumed run's progress; its stream position must lie inside this corpus's epoch."""
        p = meta.get("progress")
        if p is None:
            raise CharrnnError("checkpoint has no training progress to resume from")
        progress = cls(chunks, p["step"], p["epoch"], p["chunk"], p["chars_seen"], p["elapsed"],
                       meta.get("history", []), meta.get("best_val_loss"), meta.get("best_step"))
        if progress.chunk >= chunks:
            raise CharrnnError("the checkpoint's stream position is past the end of this corpus's epoch")
        return progress


def corpus_facts(corpus, train_chars: int, val_chars: int) -> dict:
    """What a checkpoint records of the corpus it was trained on (a resume checks the SHA-256)."""
    return {"name": as_text(corpus.name), "size": corpus.size, "sha256": corpus.sha256, "chars": len(corpus.data),
            "train_chars": train_chars, "val_chars": val_chars}


def run_identity(model: dict, seed: int, corpus_sha256: str, init_from: dict | None) -> str:
    """A run's identity: a digest of what fixes it from its first step (model, seed, corpus, starting point),
    recorded by its first checkpoint and kept by every resumption, --force on a changed corpus included.  Two
    runs alike in all of these train alike, so telling them apart would guard nothing."""
    basis = json.dumps([model, seed, corpus_sha256, init_from], sort_keys=True)
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


def run_id(meta: dict) -> str:
    """Which run wrote a checkpoint: its recorded identity, or the same digest for one written before identities
    were recorded."""
    if "run" in meta:
        return meta["run"]
    return run_identity(meta.get("model"), (meta.get("train") or {}).get("seed"),
                        (meta.get("corpus") or {}).get("sha256"), meta.get("init_from"))
