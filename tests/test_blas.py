"""NumPy's BLAS through threadpoolctl (charrnn.fast.blas): the library NumPy itself runs, found among any others a
process has loaded (PyTorch's, say), and its controller kept for the per-step thread switches."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from charrnn.fast import blas

BESIDE_NUMPY = os.path.join(os.path.dirname(os.path.realpath(np.__path__[0])), "numpy.libs", "libscipy_openblas.so")


@pytest.fixture
def loaded(monkeypatch):
    """Pretend these BLAS libraries are loaded; blas.library() finds among them afresh."""
    found = []

    class Controller:
        def select(self, user_api):
            assert user_api == "blas"
            return SimpleNamespace(lib_controllers=found)

    monkeypatch.setattr(blas, "ThreadpoolController", Controller)
    blas.library.cache_clear()
    yield found
    blas.library.cache_clear()


def lib(path):
    return SimpleNamespace(filepath=path, internal_api="openblas", version="0.3.31", architecture="Haswell")


def test_numpys_own_blas_among_others(loaded):
    loaded += [lib("/site-packages/torch/lib/libopenblas.so"), lib(BESIDE_NUMPY)]
    assert blas.library().filepath == BESIDE_NUMPY


def test_the_only_blas_is_numpys(loaded):
    loaded.append(lib("/usr/lib/x86_64-linux-gnu/libopenblas.so.0"))  # a NumPy built against the system's
    assert blas.library() is loaded[0]
    assert blas.describe() == "OpenBLAS 0.3.31 (Haswell)"


def test_none_where_it_cannot_tell(loaded):
    assert blas.library() is None and blas.threads() is None and blas.describe() == "no BLAS found"
    with blas.single_threaded():  # changes nothing, and does not fail
        pass
    loaded += [lib("/a/libopenblas.so"), lib("/b/libmkl_rt.so")]
    blas.library.cache_clear()
    assert blas.library() is None


def test_the_controller_is_found_once():
    blas.library()
    assert blas.library.cache_info().currsize == 1
