"""Data parallelism on one machine: a batch's streams split into shards, one thread and one core each.

At char-rnn batch sizes a step's GEMMs are small, and between them the element-wise work of every time step
(gate nonlinearities, cell updates) runs on one core while BLAS's other threads wait: on a 2-core machine the
second core idled a third of an LSTM 2x256 step at B 64.  With a shard per core, each core runs its own
single-threaded GEMMs and element-wise work; NumPy lets go of the GIL in both.  The shards compute what the
whole batch would: the dropout masks are drawn for the whole batch (the random stream is unchanged), a shard's
mean loss and gradients are weighted by its share of the streams, the final states are joined again.  Only
the order of float sums differs, so the shard count is a function of the batch and the machine (shard_count).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from queue import SimpleQueue

import numpy as np

from charrnn import blas
from charrnn.model import Model

MIN_STREAMS = 16  # per shard: LSTM 2x256 at B 16 split in two ran 0.95-1.10x, at B 32 1.06-1.17x (2-core Zen 3)


def shard_count(batch: int, threads: int | None) -> int:
    """One shard per BLAS thread, each of at least MIN_STREAMS streams; 1 where BLAS threads are unknown."""
    return max(1, min(threads or 1, batch // MIN_STREAMS))


def shard_bounds(batch: int, shards: int) -> list[slice]:
    """Consecutive, near-equal slices of the batch's streams."""
    edges = [batch * s // shards for s in range(shards + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False)]


class Workers:
    """Threads that each run one call at a time, started once and reused step after step."""

    def __init__(self, count: int):
        self.count = count
        self._jobs = [SimpleQueue() for _ in range(count)]
        self._results = [SimpleQueue() for _ in range(count)]
        for jobs, results in zip(self._jobs, self._results, strict=True):
            threading.Thread(target=self._serve, args=(jobs, results), daemon=True, name="charrnn-shard").start()

    @staticmethod
    def _serve(jobs: SimpleQueue, results: SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            call, errstate = job
            try:
                with np.errstate(**errstate):  # the caller's float-error handling (errstate is per thread)
                    results.put((True, call()))
            except BaseException as error:  # handed to the caller, which raises it
                results.put((False, error))

    def run(self, calls: list[Callable]) -> list:
        """calls[0]() here, the others on the workers, all at once; their results in order.  Every call has
        finished when this returns or raises (an error, or Ctrl-C here, waits for the workers' calls)."""
        errstate = np.geterr()
        for jobs, call in zip(self._jobs, calls[1:], strict=False):
            jobs.put((call, errstate))
        outcomes = []
        try:
            outcomes.append((True, calls[0]()))
        finally:
            outcomes += [results.get() for results in self._results[: len(calls) - 1]]
        for ok, value in outcomes:
            if not ok:
                raise value
        return [value for _, value in outcomes]

    def close(self) -> None:
        for jobs in self._jobs:
            jobs.put(None)


class Sharded:
    """A model's loss_and_grads and evaluate over shards of the batch.  The replicas share the model's
    parameter arrays (read only here) and own their scratch memory."""

    def __init__(self, model: Model, threads: int | None = None):
        self.model = model
        self.threads = blas.threads() if threads is None else threads
        self._replicas = [model]
        self._workers = None

    def shards(self, batch: int) -> int:
        return shard_count(batch, self.threads)

    def owning_cores(self, batch: int):
        """A context for a whole training loop at this batch size: where it is sharded, BLAS stays
        single-threaded throughout, clipping's dot products too, so that BLAS's own threads sleep.  Woken once
        a step, each would spin-wait on a core that a shard needs (LSTM 2x256 at B 32 ran 0.74x)."""
        return blas.single_threaded() if self.shards(batch) > 1 else contextlib.nullcontext()

    def initial_state(self, batch: int) -> tuple[np.ndarray, ...]:
        return self.model.initial_state(batch)

    def _run(self, batch: int, call: Callable) -> tuple[list[slice], list] | None:
        """call(replica, streams) for each shard, in parallel; None when the batch is one shard."""
        shards = self.shards(batch)
        if shards == 1:
            return None
        while len(self._replicas) < shards:
            self._replicas.append(Model(self.model.cfg, self.model.params))
        if self._workers is None or self._workers.count < shards - 1:
            self.close()
            self._workers = Workers(shards - 1)
        bounds = shard_bounds(batch, shards)
        calls = [lambda r=r, s=s: call(r, s) for r, s in zip(self._replicas, bounds, strict=False)]
        with blas.single_threaded():
            return bounds, self._workers.run(calls)

    def loss_and_grads(self, x, y, state, rng=None, masks=None):
        """As Model.loss_and_grads: x, y (N, T), state of (L, N, H) arrays."""
        N, T = x.shape
        if masks is None and rng is not None and self.shards(N) > 1:
            masks = self.model.dropout_masks(rng, T, N)  # for the whole batch, as an unsharded step draws them

        def shard(replica: Model, s: slice):
            shard_masks = None if masks is None else [m[:, s] for m in masks]
            return replica.loss_and_grads(x[s], y[s], tuple(a[:, s] for a in state), masks=shard_masks)

        ran = self._run(N, shard)
        if ran is None:
            return self.model.loss_and_grads(x, y, state, rng, masks)
        bounds, results = ran
        weights = [(s.stop - s.start) / N for s in bounds]
        loss = sum(w * shard_loss for w, (shard_loss, _, _) in zip(weights, results, strict=True))
        grads = results[0][1]
        for name, total in grads.items():
            total *= total.dtype.type(weights[0])
            for w, (_, shard_grads, _) in zip(weights[1:], results[1:], strict=True):
                g = shard_grads[name]
                g *= g.dtype.type(w)
                total += g
        return loss, grads, join_states([final for _, _, final in results])

    def evaluate(self, x, y, state):
        """As Model.evaluate: (summed loss in nats, characters, final state)."""
        ran = self._run(x.shape[0], lambda replica, s: replica.evaluate(x[s], y[s], tuple(a[:, s] for a in state)))
        if ran is None:
            return self.model.evaluate(x, y, state)
        _, results = ran
        return (sum(r[0] for r in results), sum(r[1] for r in results), join_states([r[2] for r in results]))

    def close(self) -> None:
        """Stop the worker threads (they are daemons: a process may also just exit)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None


def join_states(states: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """The shards' final states, (L, N_s, H) each, as the batch's (L, N, H)."""
    return tuple(np.concatenate(parts, axis=1) for parts in zip(*states, strict=True))
