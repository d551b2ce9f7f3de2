"""Memory for the cells: scratch arrays reused from call to call, so the time loop of a chunk allocates nothing,
and cache-friendly ways through big arrays (time blocks, tiled transposes).

glibc returns multi-MB blocks to the OS on every free; allocating fresh (T, N, G*H) arrays per chunk turns into
page-fault storms. Each layer owns one Workspace; its arrays live until the next call with the same name.
"""

from __future__ import annotations

import numpy as np


class Workspace:
    """Named arrays, reallocated only when a shape or dtype changes."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array of this shape: the caller overwrites it completely."""
        a = self._arrays.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype)
        return a


BLOCK_ELEMENTS = 1 << 17  # 512 KiB of float32: a block's few arrays stay within a core's L2 (1-2 MiB)


def time_blocks(T: int, step_elements: int) -> list[slice]:
    """Split T steps into consecutive blocks of about BLOCK_ELEMENTS elements, a step holding step_elements.

    Chunk-wide element-wise passes run at memory speed once a chunk outgrows the cache (LSTM 1x512 at B 64:
    32 MB a gate array); a block's passes, and then its steps, find the data still in cache."""
    size = max(1, BLOCK_ELEMENTS // max(1, step_elements))
    return [slice(t, min(t + size, T)) for t in range(0, T, size)]


TILE = (32, 256)  # rows x columns of the source read per call; found fastest for (4H, H) at H 256 and 512


def scaled_transpose(W: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """C-contiguous (W * scale[:, None]).T, copied tile by tile.  A straight transposing copy of a (4H, H)
    float32 matrix reads with a power-of-two stride, whose cache-set conflicts made it 2-4x slower (9 ms for
    H 512, every chunk); the recurrent GEMM wants this layout, as h @ W.T through BLAS's transpose flag ran
    5-35% slower a step."""
    rows, cols = W.shape
    out = np.empty((cols, rows), W.dtype)
    r, c = TILE
    for i in range(0, rows, r):
        for j in range(0, cols, c):
            tile = W[i : i + r, j : j + c].T
            if scale is None:
                out[j : j + c, i : i + r] = tile
            else:
                np.multiply(tile, scale[i : i + r], out=out[j : j + c, i : i + r])
    return out



def sum_rows(a: np.ndarray) -> np.ndarray:
    """(..., M, K) -> (..., K), the sum over M (a bias gradient over a chunk's rows) as ones @ a: BLAS's GEMV
    runs on both cores and took half the time of a.sum over those axes (LSTM, B 64, T 64, H 128-512)."""
    return np.matmul(np.ones(a.shape[-2], a.dtype), a)
