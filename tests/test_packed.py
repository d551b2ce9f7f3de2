"""The recurrent GEMMs on weights packed once a chunk (charrnn.fast.packed): the same sums as np.matmul, and np.matmul
wherever the kernels, the thread count or the layout do not fit."""

import numpy as np
import pytest

from charrnn.fast import blas, packed
from charrnn.fast.workspace import Workspace


def found(dtype=np.float32):
    kernels = packed.kernels(dtype)
    if kernels is None:
        pytest.skip("no OpenBLAS kernels to pack for here")
    return kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_bytes", [1, 5 * 4 * 8, packed.BLOCK_BYTES])  # a column a block, ragged, whole
def test_adds_the_product_into_each_part_at_each_step(dtype, block_bytes):
    rng = np.random.default_rng(0)
    T, N, K = 4, 7, 5 * 8
    W = rng.standard_normal((K, 3 + 21 + 29)).astype(dtype)
    xs = rng.standard_normal((T, N, K)).astype(dtype)
    wide = rng.standard_normal((T, N, 40)).astype(dtype)  # the middle part is a slice of it: ldc 40
    parts = [rng.standard_normal((T, N, 3)).astype(dtype), wide[:, :, 5:26], rng.standard_normal((N, 29)).astype(dtype)]
    start, wide_start = [p.copy() for p in parts], wide.copy()
    assert packed.fits(W, xs, parts)
    raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, xs))
    gemm = packed.Packed(W, found(dtype), xs, parts, raw, raw_x, block_bytes=block_bytes)
    for t in range(T):
        gemm.add(t)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    product = xs @ W
    np.testing.assert_allclose(parts[0], start[0] + product[:, :, :3], rtol=tol, atol=tol)
    np.testing.assert_allclose(parts[1], start[1] + product[:, :, 3:24], rtol=tol, atol=tol)
    np.testing.assert_allclose(parts[2], start[2] + product[:, :, 24:].sum(axis=0), rtol=tol, atol=tol)  # every step
    np.testing.assert_array_equal(wide[:, :, :5], wide_start[:, :, :5])
    np.testing.assert_array_equal(wide[:, :, 26:], wide_start[:, :, 26:])


def test_writes_nothing_outside_its_parts():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 12)).astype(np.float32)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    frame = rng.standard_normal((5, 20)).astype(np.float32)
    before = frame.copy()
    part = frame[1:4, 4:16]  # rows 3 of 5, columns 12 of 20: ldc 20
    raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, x))
    packed.Packed(W, found(), x, [part], raw, raw_x, block_bytes=5 * 16 * 4).add()
    np.testing.assert_allclose(part, before[1:4, 4:16] + x @ W, rtol=1e-5, atol=1e-5)
    outside = np.ones(frame.shape, bool)
    outside[1:4, 4:16] = False
    np.testing.assert_array_equal(frame[outside], before[outside])


def test_a_chunk_packs_only_where_blas_runs_on_one_thread():
    found()
    ws = Workspace()
    W, xs = np.ones((8, 8), np.float32), np.ones((2, 3, 8), np.float32)
    dest = [np.zeros((2, 3, 8), np.float32)]
    with blas.single_threaded():
        assert isinstance(packed.recurrent(ws, "w", W, xs, dest), packed.Packed)
        assert packed.recurrent(ws, "w", np.asfortranarray(W), xs, dest) is None  # not C-contiguous
        assert packed.recurrent(ws, "w", W, xs, [np.zeros((2, 3, 7), np.float32)]) is None  # widths
        assert packed.recurrent(ws, "w", W, xs, [np.zeros((2, 3, 8))]) is None  # dtypes differ
        assert packed.recurrent(ws, "w", W, xs[:, ::-1], dest) is None  # rows run backwards
    if (blas.threads() or 1) > 1:  # np.matmul splits each GEMM over the threads: it stays
        assert packed.recurrent(ws, "w", W, xs, dest) is None


def test_no_kernels_where_the_check_disagrees_or_blas_is_not_openblas(monkeypatch):
    packed.kernels.cache_clear()
    try:
        monkeypatch.setattr(packed, "_agrees", lambda k, dtype: False)
        assert packed.kernels(np.float32) is None
        packed.kernels.cache_clear()
        monkeypatch.setattr(packed.blas, "openblas", lambda: None)
        assert packed.kernels(np.float64) is None
        assert packed.kernels(np.int32) is None
    finally:
        packed.kernels.cache_clear()
