"""How much memory training, evaluating or sampling a model needs, from its shapes alone, so that a model that
cannot fit is refused in one line (store.memory.check_fits) before anything is allocated.

Estimates, on the generous side: parameters, gradients, the optimiser's slots and scratch are exact; a chunk's
activations and their gradients were measured at 5-7 x L*T*B*G*H elements (tracemalloc over training steps of
LSTM, GRU and RNN, H 32-256, B 8-64, T 32-256), the logits and their gradient at 1-2 x T*B*V.  Each worker of a
sharded run adds a replica of the parameters and its gradients (charrnn.fast.shards).
"""

from __future__ import annotations

import math
import os

import numpy as np

from charrnn.core.model import ModelConfig, param_shapes
from charrnn.core.optim import OPTIMIZERS
from charrnn.fast.shards import shard_count

ACTIVATIONS = 7  # a chunk's arrays, per L*T*B*G*H elements
LOGITS = 2  # per T*B*V elements
PICKER = 17  # bytes per stream and symbol when sampling: float64 weights and a bool mask (core.sample.Picker)


def parameter_bytes(cfg: ModelConfig) -> int:
    """The model's parameters (param_shapes is arithmetic: nothing is built)."""
    return sum(math.prod(shape) for shape in param_shapes(cfg).values()) * np.dtype(cfg.dtype).itemsize


def chunk_bytes(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """One (B, T) chunk's forward and backward pass: activations and logits, with their gradients."""
    elements = ACTIVATIONS * cfg.layers * seq_len * batch * cfg.gates * cfg.hidden + LOGITS * seq_len * batch * (
        cfg.vocab_size)
    return elements * np.dtype(cfg.dtype).itemsize


def replicas(batch: int) -> int:
    """Copies of the parameters and gradients the shards of a batch add (none unsharded)."""
    return 2 * (shard_count(batch, os.cpu_count()) - 1)


def training(cfg: ModelConfig, batch: int, seq_len: int, optimizer: str) -> int:
    """Bytes a training run needs: parameters, gradients, the optimiser's slots and scratch, a chunk, shards."""
    slots = len(OPTIMIZERS[optimizer].slots) if optimizer in OPTIMIZERS else 2
    return parameter_bytes(cfg) * (3 + slots + replicas(batch)) + chunk_bytes(cfg, batch, seq_len)


def evaluation(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """Bytes scoring a text in (B, T) chunks needs besides the loaded model and the text."""
    return parameter_bytes(cfg) * replicas(batch) + chunk_bytes(cfg, batch, seq_len)


def sampling(cfg: ModelConfig, samples: int, prime_chunk: int) -> int:
    """Bytes generating `samples` streams needs besides the loaded model: the stepper's prepared weights, the
    streams' states and draws, and the prime's pass (one stream, chunks of prime_chunk characters)."""
    per_stream = cfg.vocab_size * (PICKER + np.dtype(cfg.dtype).itemsize) + 8 * cfg.layers * cfg.hidden * (
        np.dtype(cfg.dtype).itemsize)
    return parameter_bytes(cfg) + samples * per_stream + chunk_bytes(cfg, 1, prime_chunk)
