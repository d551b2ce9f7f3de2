"""When a run does what: the learning rate of every step, the length of the run, where each epoch's streams start."""

from __future__ import annotations

import math

import numpy as np

from charrnn.errors import CharrnnError


def learning_rate(cfg, step: int, epoch: float, total_steps: int | None, time_fraction: float | None = None) -> float:
    """The learning rate for update number step + 1 (linear warm-up, then the schedule).  cfg: a TrainConfig.
    The cosine runs over total_steps, or, for a run limited only by time, over the fraction of --time-limit
    used so far."""
    if step < cfg.warmup:
        return cfg.lr * ((step + 1) / cfg.warmup)  # the fraction first: lr * (step + 1) overflows at --lr 1e308
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":  # char-rnn: lr *= decay at the end of every epoch after lr_decay_after
        return cfg.lr * cfg.lr_decay ** max(0, math.floor(epoch) - math.floor(cfg.lr_decay_after))
    if cfg.lr_schedule == "cosine":
        if total_steps is not None:
            progress = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
        else:
            progress = min(1.0, time_fraction or 0.0)
        return cfg.lr * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise CharrnnError(f"unknown learning-rate schedule {cfg.lr_schedule!r}")


def planned_steps(cfg, chunks_per_epoch: int) -> int | None:
    """The run's length in steps, where --steps or --epochs fixes it (None for a run limited by time alone)."""
    if cfg.steps is not None:
        return cfg.steps
    return math.ceil(cfg.epochs * chunks_per_epoch) if cfg.epochs else None


def epoch_offset(cfg, epoch: int, n: int) -> int:
    """Where epoch `epoch`'s streams start in a split of n characters.  Epoch 0 starts at 0 as in char-rnn; later
    ones at an offset drawn from (seed, epoch) alone, so resuming needs no extra state.  Without rotation every
    epoch repeats the same B x T chunks in the same order, and a small corpus is memorised sooner."""
    if not cfg.rotate or epoch == 0:
        return 0
    return int(np.random.default_rng([cfg.seed, epoch]).integers(n))
