"""The torch engine: charrnn's model, optimisers and loop on PyTorch, for GPUs and for runs of many processes.

net      the model as torch.nn modules (LSTM, GRU, RNN: cuDNN on GPUs), under charrnn's parameter names
optim    charrnn's optimisers and clipping on tensors: the same formulas, so their state converts exactly
engine   the engine calls (charrnn.engines) on a device, one process or many (DistributedDataParallel): each
         process takes its contiguous share of the B streams, so the result does not depend on how many there are
launch   --procs N: the processes of a run on this machine, started as torchrun starts them

May import: torch, numpy, the standard library, charrnn.errors, charrnn.fast, charrnn.core, charrnn.store and
charrnn.engines.  Nothing outside this folder imports torch; launch does not either (it only starts processes).
"""

from __future__ import annotations

import importlib.util

from charrnn.engines import INSTALL
from charrnn.errors import CharrnnError


def require() -> None:
    """One line saying how to install PyTorch when it is missing (finds it without importing it: seconds)."""
    if importlib.util.find_spec("torch") is None:
        raise CharrnnError(f"the torch engine needs PyTorch, which is not installed: {INSTALL}")
