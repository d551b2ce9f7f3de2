"""Shared test set-up.

Tests use tiny models, for which OpenBLAS's thread wake-ups cost more than the maths: pin BLAS to one thread
(before NumPy is first imported) unless the caller chose otherwise, and PyTorch's OpenMP too (its threads spin-wait:
with another process busy on a 2-core machine, a tiny torch-engine step took 0.41 s on 2 threads, 0.03 s on one).
Tests import tests/naive.py as a module.  The fast path's per-machine verdict (charrnn.fast.machine) is cached in a
directory of the session's own, never the user's: a test that patches the kernels must not leave its verdict behind.
"""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="session")
def own_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
