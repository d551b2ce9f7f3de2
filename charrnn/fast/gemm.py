"""The one seam for a layer's recurrent GEMM: the cells call recurrent(...).add(t) at every step, and what runs
behind it is chosen here, once a chunk.

Packed (charrnn.fast.packed): OpenBLAS's own kernels on weights packed once a chunk, adding straight into the
destinations.  It runs where BLAS runs on one thread (a shard of charrnn.fast.shards, or OPENBLAS_NUM_THREADS=1),
the fast path is on (charrnn.fast.machine.enabled) and the kernels passed this machine's check.  Plain, its twin,
everywhere else: np.matmul into scratch, then one add per destination.  np.matmul splits each GEMM over BLAS's
threads (an unsharded batch, such as B 16 on 2 cores) and runs on any BLAS.

describe_path() is the line a run's banner shows: how a batch runs here, in shards or not, and which GEMM.
"""

from __future__ import annotations

import numpy as np

from charrnn.fast import blas, machine, packed, tuning
from charrnn.fast.shards import may_shard, shard_bounds, shard_count
from charrnn.fast.workspace import Workspace


class Plain:
    """np.matmul's twin of packed.Packed: dests[i][:, t] += the gates of xs[t] @ W, through a product in out."""

    def __init__(self, W: np.ndarray, xs: np.ndarray, dests: list[np.ndarray], out: np.ndarray):
        self.W, self.xs, self.out = W, xs, out
        N, H = out.shape[0], dests[0].shape[-1]
        gates = out.reshape(N, -1, H).transpose(1, 0, 2)  # (G, N, H): the product gate by gate, a view
        self.parts, first = [], 0  # (destination, its gates of the product)
        for dest in dests:
            self.parts.append((dest, gates[first : first + len(dest)]))
            first += len(dest)

    def add(self, t: int) -> None:
        """dests[i][:, t] += the gates of xs[t] @ W."""
        np.matmul(self.xs[t], self.W, out=self.out)
        for dest, part in self.parts:
            d = dest[:, t]
            np.add(d, part, out=d)


def recurrent(ws: Workspace, name: str, W: np.ndarray, xs: np.ndarray, dests: list[np.ndarray]):
    """A layer's recurrent GEMM over a chunk, one step at a time: .add(t) does dests[i][:, t] += (xs[t] @ W)'s
    gates, in order.  W (K, G*H); xs (T, N, K), the GEMM's input at every step (written step by step as the loop
    runs: only its address is taken now); dests: gate-major arrays (g, T, N, H) whose gates add up to G (an
    LSTM's pre-activations take all four; a GRU's r and z take two and W_hn h the third).  Scratch comes from the
    layer's Workspace under name.  Returns a packed.Packed or a Plain."""
    parts = [dest[g] for dest in dests for g in range(len(dest))]  # the kernels' view: consecutive columns
    if packs(W.dtype) and packed.fits(W, xs, parts):
        raw, raw_x = packed.Packed.bytes_needed(W, xs)
        chosen = machine.verdict()
        return packed.Packed(W, packed.kernels(W.dtype), xs, parts, ws.get(f"{name} packed", (raw,), np.uint8),
                             ws.get(f"{name} packed x", (raw_x,), np.uint8), chosen.value("block bytes"),
                             chosen.value(f"depth {W.dtype.name}"))
    return Plain(W, xs, dests, ws.get(f"{name} product", (xs.shape[1], W.shape[1]), W.dtype))


def packs(dtype) -> bool:
    """Whether a chunk of this dtype runs the packed kernels now: the fast path on, BLAS on one thread (np.matmul
    would split each GEMM over the others), and the kernels passed this machine's check and were not slower than
    np.matmul there."""
    return machine.enabled() and blas.threads() == 1 and machine.verdict().packs(dtype)


def describe_path(batch: int, dtype="float32") -> str:
    """How a training batch runs on this machine, in a line: shards and BLAS threads, which recurrent GEMM, which
    BLAS, and the measurements that chose them (charrnn.fast.tuning).  E.g. "2 shards of 32 streams on 1 BLAS
    thread each (16+ streams a shard: shards of 16 1.52x BLAS's threads), packed kernels (1.31x np.matmul,
    blocks of 256 KiB) — OpenBLAS 0.3.31 (Haswell)"."""
    threads = blas.threads()
    shards = shard_count(batch, threads)
    dtype = np.dtype(dtype).name
    if shards > 1:
        sizes = sorted({s.stop - s.start for s in shard_bounds(batch, shards)})
        where = f"{shards} shards of {'-'.join(map(str, sizes))} streams on 1 BLAS thread each"
    else:
        where = f"1 process on {threads or 'an unknown number of'} BLAS thread{'' if threads == 1 else 's'}"
    if not machine.enabled():
        return f"{where}, np.matmul ({machine.SWITCH}=0) — {blas.describe()}"
    chosen = machine.verdict()
    if may_shard(threads):
        least = chosen.value("min streams")
        where += f" ({'never shards' if least is None else f'{least}+ streams a shard'}: {chosen.why('min streams')})"
    if shards == 1 and threads != 1:
        how = "np.matmul"  # on BLAS's threads
    elif chosen.packs(dtype):
        how = (f"packed kernels ({chosen.why(f'gemm {dtype}')}, "
               f"{tuning.label('block bytes', chosen.value('block bytes'))})")
    elif not chosen.agrees(dtype):
        how = f"np.matmul (packed kernels: {chosen.packed.get(dtype)})"
    else:
        how = f"np.matmul ({chosen.why(f'gemm {dtype}')})"
    return f"{where}, {how} — {blas.describe()}"
