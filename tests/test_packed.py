"""The recurrent GEMMs on weights packed once a chunk (charrnn.fast.packed): the same sums as np.matmul, in slabs
and blocks of any size, writing nothing outside their parts; and the check that a child process runs before
training may call them."""

import copy

import numpy as np
import pytest

from charrnn.fast import blas, machine, packed


def found(dtype=np.float32, depth=None):
    """The dtype's kernels, where they passed this machine's check (never called here otherwise: they may
    crash), with a depth of depth rows a call where given."""
    if not machine.verdict().packs(dtype):
        pytest.skip(f"no packed kernels here: {machine.verdict().packed[np.dtype(dtype).name]}")
    kernels = packed.kernels(dtype)
    if depth is not None:
        kernels = copy.copy(kernels)
        kernels.depth = depth
    return kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("depth", [None, 16], ids=["own-depth", "slabs-of-16"])
@pytest.mark.parametrize("block_bytes", [1, 5 * 4 * 8, packed.BLOCK_BYTES])  # a column a block, ragged, whole
def test_adds_the_product_into_each_part_at_each_step(dtype, depth, block_bytes):
    rng = np.random.default_rng(0)
    T, N, K = 4, 7, 5 * 8  # slabs of 16: 16, 16 and 8 rows
    W = rng.standard_normal((K, 3 + 21 + 29)).astype(dtype)
    xs = rng.standard_normal((T, N, K)).astype(dtype)
    wide = rng.standard_normal((T, N, 40)).astype(dtype)  # the middle part is a slice of it: ldc 40
    parts = [rng.standard_normal((T, N, 3)).astype(dtype), wide[:, :, 5:26],
             rng.standard_normal((T, N, 29)).astype(dtype)]
    start, wide_start = [p.copy() for p in parts], wide.copy()
    assert packed.fits(W, xs, parts)
    raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, xs))
    gemm = packed.Packed(W, found(dtype, depth), xs, parts, raw, raw_x, block_bytes=block_bytes)
    with blas.single_threaded():
        for t in range(T):
            gemm.add(t)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    product = xs @ W
    np.testing.assert_allclose(parts[0], start[0] + product[:, :, :3], rtol=tol, atol=tol)
    np.testing.assert_allclose(parts[1], start[1] + product[:, :, 3:24], rtol=tol, atol=tol)
    np.testing.assert_allclose(parts[2], start[2] + product[:, :, 24:], rtol=tol, atol=tol)
    np.testing.assert_array_equal(wide[:, :, :5], wide_start[:, :, :5])
    np.testing.assert_array_equal(wide[:, :, 26:], wide_start[:, :, 26:])


def test_float64_goes_no_deeper_than_a_kernel_call_takes():
    """Haswell's dgemm kernel crashed past a depth of 256 (its stack buffer), at a shard's 32 rows: float64's
    depth at H 512 comes in slabs."""
    rng = np.random.default_rng(1)
    W, xs = rng.standard_normal((512, 64)), rng.standard_normal((2, 32, 512))
    dest = np.zeros((2, 32, 64))
    raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, xs))
    gemm = packed.Packed(W, found(np.float64), xs, [dest], raw, raw_x)
    assert [depth for _, depth, _, _ in gemm.slabs] == [256, 256]
    with blas.single_threaded():
        gemm.add(1)
    np.testing.assert_allclose(dest[1], xs[1] @ W, rtol=1e-12, atol=1e-12)


def test_writes_nothing_outside_its_parts():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((16, 12)).astype(np.float32)
    xs = rng.standard_normal((1, 3, 16)).astype(np.float32)
    frame = rng.standard_normal((1, 5, 20)).astype(np.float32)
    before = frame.copy()
    part = frame[:, 1:4, 4:16]  # rows 3 of 5, columns 12 of 20: ldc 20
    raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, xs))
    packed.Packed(W, found(), xs, [part], raw, raw_x, block_bytes=5 * 16 * 4).add(0)
    np.testing.assert_allclose(part, before[:, 1:4, 4:16] + xs @ W, rtol=1e-5, atol=1e-5)
    outside = np.ones(frame.shape, bool)
    outside[:, 1:4, 4:16] = False
    np.testing.assert_array_equal(frame[outside], before[outside])


def test_fits_only_what_the_kernels_can_take():
    W, xs, dest = np.ones((8, 8), np.float32), np.ones((2, 3, 8), np.float32), [np.zeros((2, 3, 8), np.float32)]
    assert packed.fits(W, xs, dest)
    assert not packed.fits(np.asfortranarray(W), xs, dest)  # not C-contiguous
    assert not packed.fits(W, xs, [np.zeros((2, 3, 7), np.float32)])  # widths
    assert not packed.fits(W, xs, [np.zeros((2, 3, 8))])  # dtypes differ
    assert not packed.fits(W, xs[:, ::-1], dest)  # rows run backwards
    assert not packed.fits(W, xs, [np.zeros((3, 8), np.float32)])  # no time axis


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_check_passes_the_kernels_here(dtype):
    found(dtype)  # the child process's check passed: run it here too, and see it say so
    with blas.single_threaded():
        assert packed.check(dtype) is None


def test_the_check_sees_sums_that_differ(monkeypatch):
    """Kernels that add their product twice fail the check: it compares, it does not just run them."""
    twice = copy.copy(found(np.float32))
    kernel = twice.kernel
    twice.kernel = lambda *args: (kernel(*args), kernel(*args))[0]
    monkeypatch.setattr(packed, "kernels", lambda dtype: twice)
    with blas.single_threaded():
        assert "float32 sums differ from np.matmul's" in packed.check(np.float32)


def test_no_kernels_where_blas_is_not_openblas(monkeypatch):
    packed.kernels.cache_clear()
    try:
        monkeypatch.setattr(packed.blas, "openblas", lambda: None)
        assert packed.kernels(np.float64) is None
        assert packed.check(np.float64) == "no float64 kernels for core " + str(blas.core_name())
    finally:
        packed.kernels.cache_clear()
    assert packed.kernels(np.int32) is None
