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
an inf or NaN carries on to the loss, which training checks.  Called through ctypes, a kernel whose interface is
not the one bound here does not raise: it crashes the process or writes where it should not.  So check() runs
them against np.matmul at training's shapes in a child process first (charrnn.fast.machine), once per machine,
and charrnn.fast.gemm takes them only where that check passed.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from charrnn.fast import blas

ALIGN = 64  # bytes: the packed panels start on a cache line, as OpenBLAS's own buffers do
BLOCK_BYTES = 256 << 10  # packed panels of one block of W's columns: within a core's L2 beside x's


class Kernels:
    """One dtype's copy routines and kernel, as ctypes functions, and the depth (rows of W) a kernel call takes
    at most.  OpenBLAS's own GEMM never hands a kernel more than its GEMM_Q rows, and Haswell's dgemm kernel copies
    its x panel into a stack buffer sized for 256: a deeper call crashed it (H 512, a shard of 32).  Its sgemm
    kernels take any depth.  How deep a call goes within these limits is measured per machine (charrnn.fast.tuning).
    check() runs both at depths past these, so a core with other limits fails it instead of crashing training."""

    def __init__(self, lib: ctypes.CDLL, prefix: str, suffix: str, ctype):
        long, pointer = ctypes.c_long, ctypes.c_void_p

        def bind(name, argtypes):
            f = getattr(lib, f"{prefix}gemm_{name}{suffix}")
            f.argtypes, f.restype = argtypes, ctypes.c_int
            return f

        self.pack_w = bind("itcopy", [long, long, pointer, long, pointer])  # (K, m, W^T, ld, out)
        self.pack_x = bind("oncopy", [long, long, pointer, long, pointer])  # (K, N, x^T, ld, out)
        self.kernel = bind("kernel", [long, long, long, ctype, pointer, pointer, pointer, long])
        self.one = ctype(1.0)  # the kernel's alpha
        self.depth = 256 if ctype is ctypes.c_double else None  # None: the whole of K


@functools.cache
def kernels(dtype) -> Kernels | None:
    """The packing GEMM's kernels for float32 or float64 from NumPy's OpenBLAS, bound but never called here;
    None where they are not to be had (another BLAS, an unknown core, a build without them)."""
    dtype = np.dtype(dtype)
    lib, name = blas.openblas(), blas.core_name()
    if lib is None or name is None or dtype not in (np.float32, np.float64):
        return None
    prefix, ctype = ("s", ctypes.c_float) if dtype == np.float32 else ("d", ctypes.c_double)
    for suffix in (f"_{name.upper()}", ""):  # a DYNAMIC_ARCH build names every core's kernels
        try:
            return Kernels(lib, prefix, suffix, ctype)
        except AttributeError:
            continue
    return None


def aligned(raw: np.ndarray, n: int, dtype) -> np.ndarray:
    """(n,) elements of dtype inside raw (uint8, ALIGN bytes longer than they need), starting on an ALIGN-byte
    boundary."""
    dtype = np.dtype(dtype)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n * dtype.itemsize].view(dtype)


def fits(W: np.ndarray, xs: np.ndarray, dests: list[np.ndarray]) -> bool:
    """Whether Packed can take these arrays: one dtype, C-contiguous W and rows of xs, destinations with unit
    column stride whose widths add up to W's columns, the same steps and batch everywhere."""
    size = W.dtype.itemsize
    K, M = W.shape
    T, N = xs.shape[:2]
    return (W.flags.c_contiguous and xs.ndim == 3 and xs.shape[-1] == K and xs.strides[-2:] == (K * size, size)
            and sum(d.shape[-1] for d in dests) == M
            and all(d.dtype == W.dtype == xs.dtype and d.shape[:2] == (T, N) and d.ndim == 3
                    and d.strides[-1] == size and d.strides[-2] % size == 0 for d in dests))


class Packed:
    """W (K, M) packed for dests[...][t] += xs[t] @ W, in slabs of a depth (rows of W), each slab block by block of
    W's columns.

    xs: (T, N, K), C-contiguous rows.  dests: the product's columns as consecutive parts, each a (T, N, m) array
    with unit column stride, into which step t adds.  raw, raw_x: uint8 scratch for the packed panels of W and
    of one step's x (see bytes_needed), reused from chunk to chunk.  Check the arrays with fits() first."""

    def __init__(self, W: np.ndarray, kernels: Kernels, xs: np.ndarray, dests: list[np.ndarray], raw: np.ndarray,
                 raw_x: np.ndarray, block_bytes: int = BLOCK_BYTES, depth: int | None = None):
        """block_bytes: packed panels a kernel call (a block of W's columns); depth: rows of W a kernel call, None
        for all, never more than the kernels take (charrnn.fast.tuning measures both)."""
        K, M = W.shape
        N, size = xs.shape[1], W.dtype.itemsize
        self.k, self.N, self.K = kernels, N, K
        self._arrays = (xs, dests, raw, raw_x)  # the kernels read and write through their addresses
        self.x_base, self.x_step = xs.ctypes.data, xs.strides[0]
        x_panels = aligned(raw_x, K * N, W.dtype).ctypes.data
        panels = aligned(raw, K * M, W.dtype).ctypes.data
        slab = min(depth or K, kernels.depth or K)
        self.slabs = []  # (x's offset in bytes, depth, its packed x, its blocks)
        for k0 in range(0, K, slab):
            depth = min(slab, K - k0)
            per_block = max(1, block_bytes // (depth * size))
            blocks = []  # (columns, packed panels, the destination's address at t = 0, t stride, ldc)
            column = 0
            for dest in dests:
                for c0 in range(0, dest.shape[-1], per_block):
                    m = min(per_block, dest.shape[-1] - c0)
                    kernels.pack_w(depth, m, W.ctypes.data + (k0 * M + column + c0) * size, M, panels)
                    blocks.append((m, panels, dest.ctypes.data + c0 * size, dest.strides[0], dest.strides[1] // size))
                    panels += depth * m * size
                column += dest.shape[-1]
            self.slabs.append((k0 * size, depth, x_panels, blocks))
            x_panels += depth * N * size
        self.calls = self._calls()

    @staticmethod
    def bytes_needed(W: np.ndarray, xs: np.ndarray) -> tuple[int, int]:
        """Sizes of raw and raw_x for these arrays."""
        K, M = W.shape
        return K * M * W.dtype.itemsize + ALIGN, K * xs.shape[1] * W.dtype.itemsize + ALIGN

    def _calls(self) -> list[tuple]:
        """Every kernel call of a step, its arguments made ctypes objects once: (function, arguments, the pointer
        among them that moves with t, its address at t = 0, its step).  Python ints and floats cost ctypes a
        conversion each, a microsecond a call (LSTM H 256: 10 calls a layer's step)."""
        k, long, at = self.k, ctypes.c_long, ctypes.c_void_p
        calls = []
        for offset, depth, x_panels, blocks in self.slabs:
            x = at()
            calls.append((k.pack_x, (long(depth), long(self.N), x, long(self.K), at(x_panels)), x,
                          self.x_base + offset, self.x_step))
            for m, panels, dest, step, ldc in blocks:
                d = at()
                calls.append((k.kernel, (long(m), long(self.N), long(depth), k.one, at(panels), at(x_panels), d,
                                         long(ldc)), d, dest, step))
        return calls

    def add(self, t: int) -> None:
        """dests[...][t] += xs[t] @ W."""
        for call, args, moving, start, step in self.calls:
            moving.value = start + t * step
            call(*args)


# The check's problems, (N, K, part widths, columns a block or None for BLOCK_BYTES'), each run over 2 steps: a
# shard's 32 streams through an LSTM of H 512, forward (4 gates of 512 columns, 4 blocks each) and backward (K 4H:
# blocks of 32 columns, slabs of float64's depth); rows, depth and widths off every kernel tile and slab (13 x 300);
# blocks of 8 columns over odd widths
CHECKS = [(32, 512, (512,) * 4, None), (32, 2048, (512,), None), (13, 300, (100, 100, 100), None), (5, 37, (19, 51), 8)]


def check(dtype, block_bytes: int = BLOCK_BYTES, depth: int | None = None) -> str | None:
    """Run the dtype's kernels against np.matmul on CHECKS, in blocks of block_bytes (where a problem names none)
    and slabs of depth rows; None when they add the same sums and write nothing else, else what differed.  A
    kernel whose interface is not the one bound here may crash instead: run this in a child process
    (charrnn.fast.machine does)."""
    dtype = np.dtype(dtype)
    found = kernels(dtype)
    if found is None:
        return f"no {dtype.name} kernels for core {blas.core_name()}"
    rng = np.random.default_rng(0)
    T, margin = 2, 3  # each part sits inside a wider array, margin columns either side that must stay as they are
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for N, K, widths, columns in CHECKS:
        W = (rng.standard_normal((K, sum(widths))) / np.sqrt(K)).astype(dtype)
        xs = rng.standard_normal((T, N, K)).astype(dtype)
        frames = [rng.standard_normal((T, N, m + 2 * margin)).astype(dtype) for m in widths]
        want, first = [f.copy() for f in frames], 0
        for w, m in zip(want, widths, strict=True):
            w[..., margin:-margin] += xs @ W[:, first : first + m]
            first += m
        raw, raw_x = (np.empty(n, np.uint8) for n in Packed.bytes_needed(W, xs))
        block = block_bytes if columns is None else columns * K * W.dtype.itemsize
        packed = Packed(W, found, xs, [f[..., margin:-margin] for f in frames], raw, raw_x, block, depth)
        for t in range(T):
            packed.add(t)
        if not all(np.allclose(f, w, rtol=tol, atol=tol) for f, w in zip(frames, want, strict=True)):
            return f"{dtype.name} sums differ from np.matmul's at N {N}, K {K}, widths {widths}"
    return None
