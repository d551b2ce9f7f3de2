"""How many threads NumPy's BLAS runs, and running a block of code with one.

The data-parallel trainer (charrnn.fast.shards) gives each core a shard of the batch; inside it BLAS must not split
every GEMM over the cores again.  NumPy has no API for this.  Its wheels bundle OpenBLAS (scipy-openblas, whose
symbols carry a prefix and a 64_ suffix) in numpy.libs; a NumPy built against a system OpenBLAS shows it in
/proc/self/maps.  ctypes reaches either one, already loaded, by its path.  Where no OpenBLAS is found (MKL,
Accelerate, ...) threads() is None, nothing is ever changed, and training runs unsharded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os

import numpy as np


def symbol(lib: ctypes.CDLL, name: str):
    """OpenBLAS's function `name` (e.g. get_num_threads) under any of its builds' prefixes and suffixes, or None."""
    names = [prefix + name + suffix for prefix in ("scipy_openblas_", "openblas_") for suffix in ("64_", "_64_", "")]
    return next((getattr(lib, n) for n in names if hasattr(lib, n)), None)


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries this process may have loaded: NumPy's bundled one first."""
    paths = glob.glob(os.path.join(os.path.dirname(np.__path__[0]), "numpy.libs", "lib*openblas*.so*"))
    try:
        with open("/proc/self/maps") as maps:
            paths += sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1]})
    except OSError:  # not Linux
        pass
    return paths


@functools.cache
def openblas() -> ctypes.CDLL | None:
    """NumPy's OpenBLAS, the one that can set its thread count, or None."""
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: this is the same instance
        except OSError:
            continue
        if symbol(lib, "get_num_threads") is not None and symbol(lib, "set_num_threads") is not None:
            return lib
    return None


@functools.cache
def _controls():
    """(get_num_threads, set_num_threads) of NumPy's OpenBLAS, or None."""
    lib = openblas()
    if lib is None:
        return None
    get, put = symbol(lib, "get_num_threads"), symbol(lib, "set_num_threads")
    get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
    return get, put


@functools.cache
def core_name() -> str | None:
    """The CPU core whose kernels NumPy's OpenBLAS runs (e.g. "Haswell"), or None where unknown."""
    lib = openblas()
    get = None if lib is None else symbol(lib, "get_corename")
    if get is None:
        return None
    get.restype = ctypes.c_char_p
    return (get() or b"").decode() or None


def threads() -> int | None:
    """The threads BLAS splits a GEMM over (OPENBLAS_NUM_THREADS, or the cores), or None where unknown."""
    controls = _controls()
    return None if controls is None else controls[0]()


@contextlib.contextmanager
def single_threaded():
    """BLAS runs every call on the calling thread inside the block (process-wide), as configured afterwards.
    Setting the count costs about a microsecond; OpenBLAS keeps its idle threads."""
    controls = _controls()
    if controls is None:
        yield
        return
    get, put = controls
    before = get()
    put(1)
    try:
        yield
    finally:
        put(before)
