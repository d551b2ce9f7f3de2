"""Engines: what runs a training step.  The training loop (charrnn.runs.train) drives either one through the same
few calls, so every option, schedule, signal and checkpoint behaves alike.

numpy   the default: charrnn's own maths (charrnn.core), a batch's streams sharded over the cores
torch/  the optional extra: the same model and optimisers on PyTorch, on a GPU or the CPU, in one process or many
        (torch.distributed); imported only when asked for, so nothing else needs torch

An engine offers:
    leads                   whether this process writes checkpoints and reports (rank 0, or the only process)
    model                   the model as it is now, its parameters as NumPy arrays (charrnn.core.model.Model)
    gradients(x, y)         forward, backward and clipping of the whole batch's (B, T) chunk -> (loss, norm);
                            nothing has changed yet, so a run that diverges keeps its last good step
    update(lr)              apply them: the optimiser's step, and the carried state moves on
    reset_state()           zero carried state: an epoch starts
    initial_state(N), evaluate(x, y, state)    scoring with carried state, as Model's (charrnn.runs.evaluate)
    agree(stop, lr)         one decision for all processes: the largest stop code any has, the first one's lr
    saved()                 (optimiser arrays, carried state (L, B, H), RNG arrays) for a checkpoint; every
                            process of a run calls it together
    running()               a context around the loop: the cores, or the processes
    describe()              the checkpoint's "engine" metadata: name, device, processes

May import: numpy, the standard library, charrnn.errors, charrnn.fast, charrnn.core and charrnn.store; torch only
inside torch/.  Never runs or the face.
"""

from __future__ import annotations

import os

from charrnn.errors import CharrnnError

ENGINES = ("numpy", "torch")
INSTALL = "pip install 'charrnn[torch]'"


class ProcessLost(CharrnnError):
    """A process of a many-process run stopped (killed, out of memory, its machine gone): the others cannot go on."""


def process_rank() -> int:
    """This process's rank in a run that torchrun (or --procs) started, else 0."""
    return int(os.environ.get("RANK", "0"))


def create(name: str, model, optim, state, rng, cfg, resumed=None, device: str | None = None):
    """The engine `name` (ENGINES) for a run that starts from these: model (charrnn.core.model.Model), optim (its
    charrnn.core.optim optimiser, loaded), state (the carried state, (L, B, H) arrays), rng (the run's NumPy
    Generator), cfg (clip, clip_mode, batch_size: a TrainConfig), resumed (the checkpoint it continues, or
    None) and device (torch only; None: the first CUDA device, else the CPU)."""
    if name == "numpy":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise CharrnnError("a run of many processes (torchrun, --procs) needs --engine torch")
        from charrnn.engines.numpy import NumpyEngine

        return NumpyEngine(model, optim, state, rng, cfg)
    if name == "torch":
        from charrnn.engines.torch import require

        require()  # one clear line where torch is missing
        from charrnn.engines.torch.engine import TorchEngine

        return TorchEngine(model, optim, state, rng, cfg, resumed, device)
    raise CharrnnError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
