"""Recurrent GEMMs against weights packed once a chunk, through the kernels of NumPy's own OpenBLAS.

A layer's time loop multiplies T small matrices by the same weights, x_t @ W.  np.matmul hands each product to
OpenBLAS's sgemm, which copies W into its kernel's panel layout at every call: at a shard's 32 rows that copy is
a quarter of the call (LSTM, H 256, one core: 235 us a step, 67 of them packing).  oneDNN's fused LSTM packs
once a chunk; so does this.  OpenBLAS exports the pieces of its GEMM under its core's name: the copy routines
that pack each operand (sgemm_itcopy_HASWELL, sgemm_oncopy_HASWELL) and the kernel that multiplies packed panels
into C (sgemm_kernel_HASWELL; C += alpha A B, column-major).  A Packed holds W's packed panels, a block of W's
columns at a time (each block's panels fit in a core's L2); a step packs only x (N x K, a few KB) and runs the
kernel once per block, adding into the destination, so the input projection needs no separate add either.

In OpenBLAS's column-major terms, out^T (M x N) += W^T (M x K) x^T (K x N): a C-contiguous W (K, M) is W^T with
leading dimension M, a C-contiguous x (N, K) is x^T with leading dimension K, and a destination (N, m) with
unit column stride and row stride ldc is a column-major m x N block.

The kernels run on the calling thread, so this is for code that runs BLAS single-threaded anyway (a shard of
charrnn.fast.shards).  Like BLAS itself they raise no float errors (np.matmul checks the flags after BLAS returns):
an inf or NaN carries on to the loss, which training checks.  They are found and checked against np.matmul on
first use (kernels()); anything missing or different (another BLAS, an unknown core, a changed interface) leaves
np.matmul in charge.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from charrnn.fast import blas

ALIGN = 64  # bytes: the packed panels start on a cache line, as OpenBLAS's own buffers do
BLOCK_BYTES = 256 << 10  # packed panels of one block of W's columns: within a core's L2 beside x's


class Kernels:
    """One dtype's copy routines and kernel, as ctypes functions."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, suffix: str, ctype):
        long, pointer = ctypes.c_long, ctypes.c_void_p

        def bind(name, argtypes):
            f = getattr(lib, f"{prefix}gemm_{name}{suffix}")
            f.argtypes, f.restype = argtypes, ctypes.c_int
            return f

        self.pack_w = bind("itcopy", [long, long, pointer, long, pointer])  # (K, m, W^T, ld, out)
        self.pack_x = bind("oncopy", [long, long, pointer, long, pointer])  # (K, N, x^T, ld, out)
        self.kernel = bind("kernel", [long, long, long, ctype, pointer, pointer, pointer, long])


def aligned(raw: np.ndarray, n: int, dtype) -> np.ndarray:
    """(n,) elements of dtype inside raw (uint8, ALIGN bytes longer than they need), starting on an ALIGN-byte
    boundary."""
    dtype = np.dtype(dtype)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n * dtype.itemsize].view(dtype)


def fits(W: np.ndarray, xs: np.ndarray, dests: list[np.ndarray]) -> bool:
    """Whether Packed can take these arrays: one dtype, C-contiguous W and rows of xs, destinations with unit
    column stride whose widths add up to W's columns, the same batch everywhere."""
    size = W.dtype.itemsize
    K, M = W.shape
    N = xs.shape[-2]
    return (W.flags.c_contiguous and xs.ndim in (2, 3) and xs.shape[-1] == K and xs.strides[-2:] == (K * size, size)
            and sum(d.shape[-1] for d in dests) == M
            and all(d.dtype == W.dtype == xs.dtype and d.ndim in (2, 3) and d.shape[-2] == N
                    and d.strides[-1] == size and d.strides[-2] % size == 0 for d in dests))


class Packed:
    """W (K, M) packed for dests += xs[t] @ W, block by block of W's columns.

    xs: (T, N, K) or (N, K), C-contiguous rows.  dests: the product's columns as consecutive parts, each a
    (T, N, m) array (or (N, m), the same for every step) with unit column stride, into which step t adds.
    raw, raw_x: uint8 scratch for the packed panels of W and of one step's x (see bytes_needed), reused from
    chunk to chunk.  Check the arrays with fits() first."""

    def __init__(self, W: np.ndarray, kernels: Kernels, xs: np.ndarray, dests: list[np.ndarray], raw: np.ndarray,
                 raw_x: np.ndarray, block_bytes: int = BLOCK_BYTES):
        K, M = W.shape
        size = W.dtype.itemsize
        self.k, self.N, self.K = kernels, xs.shape[-2], K
        self._arrays = (xs, dests, raw, raw_x)  # the kernels read and write through their addresses
        self.x_base, self.x_step = xs.ctypes.data, xs.strides[0] if xs.ndim == 3 else 0
        self.x_panels = aligned(raw_x, K * self.N, W.dtype).ctypes.data
        per_block = max(1, block_bytes // (K * size))
        self.blocks = []  # (columns, packed panels' address, the destination's address at t = 0, t stride, ldc)
        panels, column = aligned(raw, K * M, W.dtype).ctypes.data, 0
        for dest in dests:
            step = dest.strides[0] if dest.ndim == 3 else 0
            for c0 in range(0, dest.shape[-1], per_block):
                m = min(per_block, dest.shape[-1] - c0)
                kernels.pack_w(K, m, W.ctypes.data + (column + c0) * size, M, panels)
                self.blocks.append((m, panels, dest.ctypes.data + c0 * size, step, dest.strides[-2] // size))
                panels += K * m * size
            column += dest.shape[-1]

    @staticmethod
    def bytes_needed(W: np.ndarray, xs: np.ndarray) -> tuple[int, int]:
        """Sizes of raw and raw_x for these arrays."""
        K, M = W.shape
        return K * M * W.dtype.itemsize + ALIGN, K * xs.shape[-2] * W.dtype.itemsize + ALIGN

    def add(self, t: int = 0) -> None:
        """dests[...][t] += xs[t] @ W."""
        k, N, K, x_panels = self.k, self.N, self.K, self.x_panels
        k.pack_x(K, N, self.x_base + t * self.x_step, K, x_panels)
        for m, panels, dest, step, ldc in self.blocks:
            k.kernel(m, N, K, 1.0, panels, x_panels, dest + t * step, ldc)


def recurrent(ws, name: str, W: np.ndarray, xs: np.ndarray, dests: list[np.ndarray]) -> Packed | None:
    """A Packed for a layer's chunk, its scratch from the layer's Workspace under `name`, when this chunk's BLAS
    runs on one thread (a shard of charrnn.fast.shards, or OPENBLAS_NUM_THREADS=1); else None, and np.matmul, which
    splits every GEMM over BLAS's threads, stays in charge.  None too where the kernels or the layout do not fit."""
    found = kernels(W.dtype) if blas.threads() == 1 else None
    if found is None or not fits(W, xs, dests):
        return None
    raw, raw_x = Packed.bytes_needed(W, xs)
    return Packed(W, found, xs, dests, ws.get(name, (raw,), np.uint8), ws.get(name + " x", (raw_x,), np.uint8))


@functools.cache
def kernels(dtype) -> Kernels | None:
    """The packing GEMM's kernels for float32 or float64 from NumPy's OpenBLAS, checked against np.matmul on a
    problem with ragged blocks; None where they are not to be had."""
    dtype = np.dtype(dtype)
    lib = blas.openblas()
    if lib is None or dtype not in (np.float32, np.float64):
        return None
    name = blas.core_name()
    if name is None:
        return None
    prefix, ctype = ("s", ctypes.c_float) if dtype == np.float32 else ("d", ctypes.c_double)
    for suffix in (f"_{name.upper()}", ""):  # a DYNAMIC_ARCH build names every core's kernels
        try:
            found = Kernels(lib, prefix, suffix, ctype)
        except AttributeError:
            continue
        try:
            return found if _agrees(found, dtype) else None
        except Exception:  # a ctypes error: an interface other than this module's
            return None
    return None


def _agrees(k: Kernels, dtype) -> bool:
    """Whether the kernels add what np.matmul computes, on parts and blocks of odd sizes over several steps."""
    rng = np.random.default_rng(0)
    T, N, K, widths = 3, 5, 37, (19, 51)  # odd sizes: panels of every width, several blocks a part
    W = rng.standard_normal((K, sum(widths))).astype(dtype)
    xs = rng.standard_normal((T, N, K)).astype(dtype)
    parts = [rng.standard_normal((T, N, m)).astype(dtype) for m in widths]
    want = [p + xs @ w for p, w in zip(parts, np.split(W, [widths[0]], axis=1), strict=True)]
    raw, raw_x = (np.empty(n, np.uint8) for n in Packed.bytes_needed(W, xs))
    packed = Packed(W, k, xs, parts, raw, raw_x, block_bytes=8 * K * np.dtype(dtype).itemsize)  # 8 columns a block
    for t in range(T):
        packed.add(t)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    return all(np.allclose(p, w, rtol=tol, atol=tol) for p, w in zip(parts, want, strict=True))
