"""NumPy's BLAS: which library it is, how many threads it runs, and running a block of code with one.

The data-parallel trainer (charrnn.fast.shards) gives each core a shard of the batch; inside it BLAS must not split
every GEMM over the cores again.  NumPy has no API for this; threadpoolctl finds the BLAS libraries a process has
loaded (OpenBLAS, MKL, BLIS, ...) and sets their thread counts.  Its controller is found once: a new one scans
every loaded library, while a step switches BLAS to one thread and back (single_threaded) for a few microseconds.
Where NumPy's BLAS is not found, threads() is None, nothing is ever changed, and training runs unsharded.
"""

from __future__ import annotations

import ctypes
import functools
import os

import numpy as np
from threadpoolctl import LibController, ThreadpoolController


@functools.cache
def library() -> LibController | None:
    """threadpoolctl's controller of NumPy's own BLAS: the one NumPy's wheel bundles beside it (numpy.libs, or
    numpy/.libs), else the only BLAS loaded (a NumPy built against the system's); None where it is not found."""
    found = ThreadpoolController().select(user_api="blas").lib_controllers
    site = os.path.dirname(os.path.realpath(np.__path__[0]))
    beside_numpy = (os.path.join(site, "numpy.libs") + os.sep, os.path.join(site, "numpy") + os.sep)
    bundled = [c for c in found if os.path.realpath(c.filepath or "").startswith(beside_numpy)]
    mine = bundled or (found if len(found) == 1 else [])
    return mine[0] if mine else None


def describe() -> str:
    """The library in a few words, e.g. "OpenBLAS 0.3.31 (Haswell)", or "no BLAS found"."""
    lib = library()
    if lib is None:
        return "no BLAS found"
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(lib.internal_api, lib.internal_api)
    core = getattr(lib, "architecture", None)
    return f"{name} {lib.version or '(version unknown)'}" + (f" ({core})" if core else "")


def openblas() -> ctypes.CDLL | None:
    """NumPy's OpenBLAS as a ctypes library (to bind the GEMM kernels it exports), or None where NumPy runs
    another BLAS."""
    lib = library()
    return lib.dynlib if lib is not None and lib.internal_api == "openblas" else None


def core_name() -> str | None:
    """The CPU core whose kernels NumPy's OpenBLAS runs (e.g. "Haswell"), or None where unknown."""
    lib = library()
    return getattr(lib, "architecture", None) if lib is not None and lib.internal_api == "openblas" else None


def threads() -> int | None:
    """The threads BLAS splits a GEMM over (OPENBLAS_NUM_THREADS, or the cores), or None where unknown."""
    lib = library()
    return None if lib is None else lib.get_num_threads()


class single_threaded:  # named as the function it stands for: `with blas.single_threaded():`
    """BLAS runs every call on the calling thread inside the block (process-wide), as configured afterwards.
    Setting the count costs microseconds; OpenBLAS keeps its idle threads.  A class rather than a generator
    context: it is entered around every training step."""

    def __enter__(self):
        self.lib = library()
        self.before = None if self.lib is None else self.lib.get_num_threads()
        if self.before not in (None, 1):  # already on one thread (inside a shard): nothing to set, twice
            self.lib.set_num_threads(1)

    def __exit__(self, *exc):
        if self.before not in (None, 1):
            self.lib.set_num_threads(self.before)
