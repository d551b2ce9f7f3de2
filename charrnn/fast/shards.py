"""Data parallelism on one machine: a batch's streams split into shards, one core each, the first shard in this
process and every other one in a worker process of its own.

At char-rnn batch sizes a step's GEMMs are small, and between them the element-wise work of every time step
(gate nonlinearities, cell updates) runs on one core while BLAS's other threads wait: on a 2-core machine the
second core idled a third of an LSTM 2x256 step at B 64.  With a shard per core, each core runs its own
single-threaded GEMMs and element-wise work.  Processes, not threads: a time step makes dozens of NumPy calls,
each of which takes and drops the GIL, and with two threads handing it to each other a B 64 step took 1.09-1.38x
the time of one B 32 shard alone (2-core Zen 3: LSTM 1x128 1.38, 2x256 1.12, 1x512 1.09, GRU 1x256 1.21, RNN
1x256 1.16), with two processes 1.07-1.13x.

A worker is forked once and shares a block of anonymous memory with this process (an Arena).  Each call copies
the parameters and the shard's inputs in, the worker computes its shard with its own replica of the model and
writes its gradients and final state back; only a short message crosses the pipe.  The shards compute what the
whole batch would: the dropout masks are drawn for the whole batch (the random stream is unchanged), a shard's
mean loss and gradients are weighted by its share of the streams, the final states are joined again.  Only the
order of float sums differs, so the shard count is a function of the batch and the machine (shard_count).
Where there is no fork (not Linux), no BLAS to run single-threaded, or the fast path is off (CHARRNN_FAST=0),
training runs unsharded.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import signal
import sys
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.fast import blas, machine

ALIGN = 64  # bytes: every array in an arena starts on its own cache line


def shard_count(batch: int, cores: int | None) -> int:
    """One shard per core (BLAS thread), each of at least the streams this machine's verdict says a shard needs
    to beat BLAS's threads (its "min streams", measured by charrnn.fast.tuning: 16 on a 2-core Zen 3, where B 16
    split in two ran 1.04-1.08x for LSTM 2x256 and GRU 1x256 but 0.71x for LSTM 1x128); 1 where that count is
    unknown, where workers cannot be forked, where the fast path is off or where the verdict says never."""
    if not may_shard(cores):
        return 1
    min_streams = machine.verdict().value("min streams")
    return 1 if min_streams is None else max(1, min(cores, batch // min_streams))


def may_shard(cores: int | None) -> bool:
    """Whether a batch may run in shards at all: on Linux (fork, and anonymous shared memory it inherits), with
    the fast path on, over more than one core."""
    return sys.platform == "linux" and machine.enabled() and (cores or 1) > 1


def shard_bounds(batch: int, shards: int) -> list[slice]:
    """Consecutive, near-equal slices of the batch's streams."""
    edges = [batch * s // shards for s in range(shards + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False)]


@dataclass(frozen=True)
class Shape:
    """What a worker needs to know of a model to lay out its jobs and build its replica.  A model here is anything
    with .cfg, .params (name -> array), initial_state(N) (a tuple of (L, N, H) arrays), loss_and_grads, evaluate,
    surprisal and dropout_masks, built as type(model)(cfg, params): charrnn.core.model.Model, which this part of the
    package does not import (the maths sits above the speed machinery)."""

    kind: type
    cfg: object
    params: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape), in the model's order
    states: int  # arrays of the carried state: 2 for an LSTM (h, c), else 1
    layers: int
    hidden: int
    dtype: np.dtype

    @classmethod
    def of(cls, model) -> Shape:
        state = model.initial_state(0)
        L, _, H = state[0].shape
        return cls(type(model), model.cfg, tuple((k, p.shape) for k, p in model.params.items()), len(state), L, H,
                   np.dtype(state[0].dtype))

    def replica(self, params: dict):
        return self.kind(self.cfg, params)


def job_layout(shape: Shape, kind: str, N: int, T: int, index_dtype, masked: bool) -> list[tuple]:
    """(name, shape, dtype) of every array of a job in an arena.  The parameters come first, at the same offsets
    for every job, so a worker's replica keeps viewing them; then a training job's gradients, the inputs, the
    states in and out, the dropout masks, and a surprisal job's (N, T) answer."""
    dt, L, H = shape.dtype, shape.layers, shape.hidden
    layout = [(f"param {k}", size, dt) for k, size in shape.params]
    if kind == "train":
        layout += [(f"grad {k}", size, dt) for k, size in shape.params]
    layout += [("x", (N, T), index_dtype), ("y", (N, T), index_dtype)]
    layout += [(f"{io} {i}", (L, N, H), dt) for io in ("state", "final") for i in range(shape.states)]
    if masked:
        layout += [(f"mask {k}", (T, N, H), dt) for k in range(L)]
    if kind == "surprisal":
        layout += [("surprisal", (N, T), dt)]
    return layout


class Arena:
    """Named arrays one after another in a block of anonymous shared memory: this process and a child forked
    after it see the same pages.  Pages never touched take no memory."""

    def __init__(self, size: int):
        self.size = size
        self.memory = mmap.mmap(-1, size)  # MAP_SHARED | MAP_ANONYMOUS

    @staticmethod
    def bytes_for(layout: list[tuple]) -> int:
        return sum(-(-int(np.prod(shape)) * np.dtype(dt).itemsize // ALIGN) * ALIGN for _, shape, dt in layout)

    def arrays(self, layout: list[tuple]) -> dict[str, np.ndarray]:
        if self.bytes_for(layout) > self.size:
            raise ValueError("the job does not fit this arena")
        out, offset = {}, 0
        for name, shape, dt in layout:
            out[name] = np.ndarray(shape, dt, buffer=self.memory, offset=offset)
            offset += -(-out[name].nbytes // ALIGN) * ALIGN
        return out


class WorkerDied(CharrnnError):
    """A worker process ended in the middle of a job (killed, out of memory): the step's result is lost, the
    model's parameters are not."""


def _serve(conn, arena: Arena, shape: Shape) -> None:
    """A worker's life: compute one shard per message until the pipe closes or says None."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C (to the terminal's whole process group) and SIGTERM
        signal.signal(sig, signal.SIG_IGN)  # are the parent's: it finishes the step, saves and closes us
    arrays = arena.arrays(job_layout(shape, "evaluate", 0, 0, np.uint8, False))
    replica = shape.replica({k: arrays[f"param {k}"] for k, _ in shape.params})  # reads what the parent copies in
    with blas.single_threaded():
        while True:
            try:
                job = conn.recv()
            except EOFError:  # the parent is gone
                return
            if job is None:
                return
            kind, N, T, index_dtype, masked, errstate = job
            try:
                a = arena.arrays(job_layout(shape, kind, N, T, np.dtype(index_dtype), masked))
                state = tuple(a[f"state {i}"] for i in range(shape.states))
                with np.errstate(**errstate):  # the caller's float-error handling
                    if kind == "train":
                        masks = [a[f"mask {k}"] for k in range(shape.layers)] if masked else None
                        loss, grads, final = replica.loss_and_grads(a["x"], a["y"], state, masks=masks)
                        for k, g in grads.items():
                            np.copyto(a[f"grad {k}"], g)
                        reply = loss
                    elif kind == "surprisal":
                        nats, final = replica.surprisal(a["x"], a["y"], state)
                        np.copyto(a["surprisal"], nats)
                        reply = None
                    else:
                        loss, count, final = replica.evaluate(a["x"], a["y"], state)
                        reply = (loss, count)
                for i, s in enumerate(final):
                    np.copyto(a[f"final {i}"], s)
                conn.send((True, reply))
            except Exception as error:  # the caller raises it
                try:
                    conn.send((False, error))
                except Exception:  # an error that does not pickle
                    conn.send((False, RuntimeError(f"{type(error).__name__}: {error}")))


class Worker:
    """A forked process computing one shard per call, through its Arena and a pipe.  Forked with os.fork, not
    multiprocessing.Process: at exit, multiprocessing terminates its daemons with SIGTERM, which a worker ignores
    (see _serve); these are closed by their Sharded, or leave when the pipe closes."""

    def __init__(self, shape: Shape, size: int, others: tuple[Worker, ...] = ()):
        """others: the workers forked before, whose pipe ends this one's process closes."""
        self.shape, self.arena = shape, Arena(size)
        self._conn, child = multiprocessing.Pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns of fork beside threads (BLAS's); the child runs
            warnings.simplefilter("ignore", DeprecationWarning)  # only _serve, which takes none of their locks
            try:
                self.pid = os.fork()
            except OSError as e:  # out of memory or processes
                raise CharrnnError(f"cannot start a worker process: {e.strerror or e}; set {machine.SWITCH}=0 to "
                                   "train in one process") from None
        if self.pid == 0:  # the worker: never returns into the caller's code
            status = 1
            try:
                for conn in (self._conn, *(w._conn for w in others)):  # else a pipe never closes when the
                    conn.close()  # trainer dies: this process would hold its other end open
                _serve(child, self.arena, shape)
                status = 0
            finally:
                os._exit(status)
        child.close()
        self._job, self._kind, self.exit_code = None, None, None

    def alive(self) -> bool:
        if self.exit_code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code is None

    def fits(self, layout: list[tuple]) -> bool:
        return Arena.bytes_for(layout) <= self.arena.size

    def submit(self, kind: str, layout: list[tuple], params: dict, x, y, state, masks) -> None:
        """Copy a job in (layout: its job_layout) and start it; result() waits for it."""
        N, T = x.shape
        a = self.arena.arrays(layout)
        for k, p in params.items():
            np.copyto(a[f"param {k}"], p)
        np.copyto(a["x"], x)
        np.copyto(a["y"], y)
        for i, s in enumerate(state):
            np.copyto(a[f"state {i}"], s)
        for k, m in enumerate(masks or ()):
            np.copyto(a[f"mask {k}"], m)
        try:
            self._conn.send((kind, N, T, x.dtype.str, masks is not None, np.geterr()))
        except OSError:  # a broken pipe: the worker is gone
            raise self._died() from None
        self._job, self._kind = a, kind

    def result(self):
        """The job's answer, as the model's method of its kind gives it: (loss, gradients, final state),
        (summed loss, characters, final state) or (surprisal, final state); arrays are views of the arena,
        valid until the next submit."""
        try:
            ok, reply = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if not ok:
            raise reply
        a = self._job
        final = tuple(a[f"final {i}"] for i in range(self.shape.states))
        if self._kind == "evaluate":
            return (*reply, final)
        if self._kind == "surprisal":
            return a["surprisal"], final
        return reply, {k: a[f"grad {k}"] for k, _ in self.shape.params}, final

    def _died(self) -> WorkerDied:
        self._wait(1.0)
        return WorkerDied(f"a worker process of the sharded step died (exit code {self.exit_code}); "
                          f"set {machine.SWITCH}=0 to train in one process")

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.001)

    def close(self, kill: bool = False) -> None:
        """Ask the worker to stop (or kill it: it may be busy with a job nobody will read) and wait for it."""
        if not kill:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._wait(1.0)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)
        self._conn.close()


def _close_all(workers: list[Worker], kill: bool = False) -> None:
    for worker in workers:
        worker.close(kill)
    workers.clear()


class Sharded:
    """A model's loss_and_grads and evaluate over shards of the batch: the first shard on the model itself, the
    others in worker processes, each on its own core."""

    def __init__(self, model, cores: int | None = None):
        """model: see Shape."""
        self.model, self.shape = model, Shape.of(model)
        self.cores = blas.threads() if cores is None else cores
        self._workers: list[Worker] = []
        self._finalizer = weakref.finalize(self, _close_all, self._workers)  # no process outlives its Sharded

    def shards(self, batch: int) -> int:
        return shard_count(batch, self.cores)

    def owning_cores(self, batch: int):
        """A context for a whole training loop at this batch size: where it is sharded, this process's BLAS stays
        single-threaded throughout, clipping's dot products too, so that BLAS's own threads sleep.  Woken once
        a step, each would spin-wait on a core that a worker needs (LSTM 2x256 at B 32 ran 0.74x)."""
        return blas.single_threaded() if self.shards(batch) > 1 else contextlib.nullcontext()

    def initial_state(self, batch: int) -> tuple[np.ndarray, ...]:
        return self.model.initial_state(batch)

    def _run(self, kind: str, x, y, state, masks=None) -> tuple[list[slice], list] | None:
        """The job on every shard at once; None when the batch is one shard.  Every worker has finished when this
        returns; when it raises (an error, or Ctrl-C), the workers are stopped, so no answer is read late."""
        N, T = x.shape
        shards = self.shards(N)
        if shards == 1:
            return None
        bounds = shard_bounds(N, shards)
        x, y = np.asarray(x), np.asarray(y)
        machine.verdict()  # the fast path's verdict, found before any worker forks: they inherit it
        try:
            for w, s in enumerate(bounds[1:]):
                layout = job_layout(self.shape, kind, s.stop - s.start, T, x.dtype, masks is not None)
                if w == len(self._workers) or not self._workers[w].fits(layout):
                    size = 2 * Arena.bytes_for(layout) + (1 << 20)  # room for other jobs; untouched pages are free
                    if w < len(self._workers):
                        self._workers.pop(w).close()
                    self._workers.insert(w, Worker(self.shape, size, tuple(self._workers)))
                self._workers[w].submit(kind, layout, self.model.params, x[s], y[s], tuple(a[:, s] for a in state),
                                        None if masks is None else [m[:, s] for m in masks])
            here = bounds[0]
            with blas.single_threaded():
                if kind == "train":
                    shard_masks = None if masks is None else [m[:, here] for m in masks]
                    first = self.model.loss_and_grads(x[here], y[here], tuple(a[:, here] for a in state),
                                                      masks=shard_masks)
                else:  # evaluate or surprisal: the model's method of that name
                    first = getattr(self.model, kind)(x[here], y[here], tuple(a[:, here] for a in state))
            results = [first] + [worker.result() for worker in self._workers[: shards - 1]]
        except BaseException:
            _close_all(self._workers, kill=True)
            raise
        return bounds, results

    def loss_and_grads(self, x, y, state, rng=None, masks=None):
        """As Model.loss_and_grads: x, y (N, T), state of (L, N, H) arrays."""
        N, T = np.shape(x)
        if masks is None and rng is not None and self.shards(N) > 1:
            masks = self.model.dropout_masks(rng, T, N)  # for the whole batch, as an unsharded step draws them
        ran = self._run("train", x, y, state, masks)
        if ran is None:
            return self.model.loss_and_grads(x, y, state, rng, masks)
        bounds, results = ran
        weights = [(s.stop - s.start) / N for s in bounds]
        loss = sum(w * shard_loss for w, (shard_loss, _, _) in zip(weights, results, strict=True))
        grads = results[0][1]  # this process's own arrays: the workers' are views of their arenas
        for name, total in grads.items():
            total *= total.dtype.type(weights[0])
            for w, (_, shard_grads, _) in zip(weights[1:], results[1:], strict=True):
                g = shard_grads[name]
                g *= g.dtype.type(w)
                total += g
        return loss, grads, join_states([final for _, _, final in results])

    def evaluate(self, x, y, state):
        """As Model.evaluate: (summed loss in nats, characters, final state)."""
        ran = self._run("evaluate", x, y, state)
        if ran is None:
            return self.model.evaluate(x, y, state)
        _, results = ran
        return (sum(r[0] for r in results), sum(r[1] for r in results), join_states([r[2] for r in results]))

    def surprisal(self, x, y, state):
        """As Model.surprisal: (each target's surprisal in nats (N, T), final state)."""
        ran = self._run("surprisal", x, y, state)
        if ran is None:
            return self.model.surprisal(x, y, state)
        _, results = ran
        return np.concatenate([r[0] for r in results]), join_states([r[1] for r in results])

    def close(self) -> None:
        """Stop the worker processes (they stop, too, when this object goes or the process exits)."""
        _close_all(self._workers)


def join_states(states: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """The shards' final states, (L, N_s, H) each, as the batch's (L, N, H)."""
    return tuple(np.concatenate(parts, axis=1) for parts in zip(*states, strict=True))
