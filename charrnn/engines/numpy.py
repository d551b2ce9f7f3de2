"""The NumPy engine, the default: charrnn.core's model and optimisers, each batch's streams sharded over the cores
(charrnn.fast.shards).  One process; it holds the run's arrays themselves, so a checkpoint reads them as they are."""

from __future__ import annotations

import contextlib

import numpy as np

from charrnn.core.model import Model
from charrnn.core.optim import Optimizer, clip_gradients
from charrnn.fast.shards import Sharded


class NumpyEngine:
    """See charrnn.engines for the calls.  rng draws the dropout masks."""

    name = "numpy"
    leads = True  # the only process

    def __init__(self, model: Model, optim: Optimizer, state, rng: np.random.Generator, cfg):
        self.model, self.optim, self.state, self.rng = model, optim, state, rng
        self.clip, self.clip_mode, self.batch_size = cfg.clip, cfg.clip_mode, cfg.batch_size
        self.sharded = Sharded(model)  # loss_and_grads and evaluate over the cores
        self._pending = None  # (gradients, final state) of the last gradients(), until update() applies them

    def gradients(self, x, y) -> tuple[float, float]:
        with np.errstate(over="ignore", invalid="ignore"):  # the loop checks the loss and norm
            loss, grads, state = self.sharded.loss_and_grads(x, y, self.state, self.rng)
            norm = clip_gradients(grads, self.clip, self.clip_mode)
        self._pending = grads, state
        return loss, norm

    def update(self, lr: float) -> None:
        grads, self.state = self._pending
        with np.errstate(over="ignore", invalid="ignore"):  # an update can overflow too (--lr 1e300): next step's
            self.optim.step(self.model.params, grads, lr)  # loss is then not finite, and the loop stops there

    def reset_state(self) -> None:
        self.state = self.model.initial_state(self.batch_size)

    def initial_state(self, batch: int):
        return self.sharded.initial_state(batch)

    def evaluate(self, x, y, state):
        return self.sharded.evaluate(x, y, state)

    def agree(self, stop: int, lr: float) -> tuple[int, float]:
        return stop, lr  # one process agrees with itself

    def saved(self) -> tuple[dict, tuple, dict]:
        return self.optim.state_dict(), self.state, {}

    @contextlib.contextmanager
    def running(self):
        """Where the batch is sharded, this process's BLAS stays single-threaded throughout (Sharded.owning_cores);
        the workers stop afterwards."""
        try:
            with self.sharded.owning_cores(self.batch_size):
                yield
        finally:
            self.sharded.close()

    def describe(self) -> dict:
        return {"name": self.name, "device": "cpu", "processes": 1}
