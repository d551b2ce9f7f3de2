"""The fast path's machine-dependent choices, measured on the machine instead of tuned by hand for one CPU.

Which recurrent GEMM a shard runs (the packed kernels or np.matmul), how wide a block of packed columns and how deep
a slab, how many streams a shard needs before processes beat BLAS's threads, and how the sampler runs its GEMVs at
batch 1: the best of each differs between machine kinds (AVX2 or AVX-512 kernels, cache sizes, cores) and BLAS
builds.  measure() times each choice's candidates on small problems shaped like training's and sampling's, the
candidates in turn round after round (so drift and other processes hit them alike), and keeps each one's best
time; pick() then keeps the default unless another candidate is faster by more than MARGIN, so a gap inside the
noise changes nothing and a large one decides the same way every time.  It runs once per machine, in the child
process that charrnn.fast.machine forks for the verdict, in a second or two; what it picked, and why, is cached
with the verdict and shown on the banner's `runs on` row.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np

from charrnn.fast import blas, packed

MARGIN = 1.10  # another candidate replaces the default only when its best time is this much shorter
ROUNDS, MIN_ROUNDS = 7, 3  # every candidate runs once a round, its best round counts: 7 rounds, or 3 at least
BUDGET = 0.3  # seconds a race may take before it stops at MIN_ROUNDS, whichever comes later: tuning takes 1-3 s
# Every choice's candidates, its default first: what the fast path did before it measured anything
CANDIDATES = {
    "block bytes": (packed.BLOCK_BYTES, 128 << 10, 512 << 10, 1 << 20),  # packed panels a kernel call
    "depth float32": (None, 256),  # rows of W a kernel call: None is all of them
    "depth float64": (256, 128),  # Haswell's dgemm kernel takes no more than 256 (packed.Kernels)
    "gemm float32": ("packed", "np.matmul"),  # a shard's recurrent GEMM
    "gemm float64": ("packed", "np.matmul"),
    "min streams": (16, 8, 32, None),  # streams a shard needs at least; None: never shard, BLAS's threads
    "sampler threads": ("one", "all"),  # the batch-1 sampler's GEMVs on one BLAS thread or all of them
    "sampler layout": ("transposed", "plain"),  # batch-1 weights stored (M, D), a dot product per output, or (D, M)
}
DEFAULTS = {name: candidates[0] for name, candidates in CANDIDATES.items()}
SHARD_HIDDEN = 128  # the proxy layer of the shards' race: the least work a stream, where shards pay off last
# (N, K, M) of a shard's recurrent GEMMs: LSTM H 256 forward (x W_hh^T, 4 gates) and backward (dA W_hh), H 512
# forward
GEMM_SHAPES = [(32, 256, 1024), (32, 1024, 256), (32, 512, 2048)]
GEMV_SHAPES = [(256, 1024), (513, 1024), (512, 2048)]  # (D, M) at batch 1: LSTM 2x256's layers, LSTM 1x512's


def label(name: str, value) -> str:
    """A candidate in words, e.g. "blocks of 256 KiB", "shards of 16+ streams"."""
    if name == "block bytes":
        return f"blocks of {value >> 10} KiB"
    if name.startswith("depth"):
        return "whole depth" if value is None else f"slabs of {value} rows"
    if name == "min streams":
        return "BLAS's threads" if value is None else f"shards of {value}+ streams"
    if name == "sampler threads":
        return f"{value} BLAS thread{'' if value == 'one' else 's'}"
    if name == "sampler layout":
        return f"{value} weights"
    return "packed kernels" if value == "packed" else str(value)


def choice(value, why: str) -> dict:
    """A choice as the verdict records it."""
    return {"value": value, "why": why}


def pick(name: str, times: dict, margin: float = MARGIN) -> dict:
    """The choice among measured candidates (times: candidate -> best seconds, the default's among them): the
    default unless the fastest is quicker by more than margin, with the ratio that decided."""
    default = DEFAULTS[name]
    fastest = min(times, key=times.get)
    if fastest == default:
        if len(times) == 1:
            return choice(default, "the only candidate")
        runner_up = min((c for c in times if c != default), key=times.get)
        return choice(default, f"{times[runner_up] / times[default]:.2f}x {label(name, runner_up)}")
    speedup = times[default] / times[fastest]
    if speedup > margin:
        return choice(fastest, f"{speedup:.2f}x {label(name, default)}")
    return choice(default, f"{label(name, fastest)} only {speedup:.2f}x")


def pick_min_streams(ratios: dict, margin: float = MARGIN) -> dict:
    """MIN_STREAMS from ratios: shard size -> BLAS threads' time over the shards' on the same streams (above 1:
    the shards are faster).  The default unless shards of the default size clearly lose (then the smallest
    larger size that does not, or never shard) or shards of the smaller size clearly win."""
    default = DEFAULTS["min streams"]
    sizes = sorted(ratios)

    def said(s):
        return f"shards of {s} {ratios[s]:.2f}x BLAS's threads"

    if ratios[default] < 1 / margin:
        for s in (s for s in sizes if s > default):
            if ratios[s] >= 1 / margin:
                return choice(s, f"{said(default)}, {said(s)}")
        return choice(None, said(sizes[-1]))
    smaller = [s for s in sizes if s < default and ratios[s] > margin]
    if smaller:
        return choice(smaller[0], said(smaller[0]))
    return choice(default, said(default))


def race(runs: dict, rounds: int = ROUNDS, budget: float = BUDGET) -> dict:
    """Each candidate's best time in seconds: runs maps a candidate to a function of no arguments, run once
    untimed first, then once a round, the candidates in turn; rounds of them, or fewer (MIN_ROUNDS at least) once
    budget seconds have gone (on a busy machine, where gaps are wide)."""
    started = time.perf_counter()
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, math.inf)
    for done in range(rounds):
        if done >= MIN_ROUNDS and time.perf_counter() - started > budget:
            break
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def gemm_problems(dtype, shapes=GEMM_SHAPES, steps: int = 2) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(W, xs, dest) for steps of a recurrent GEMM at each of shapes, (N, K, M): dest[t] += xs[t] @ W."""
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((K, M)).astype(dtype), rng.standard_normal((steps, N, K)).astype(dtype),
             np.zeros((steps, N, M), dtype)) for N, K, M in shapes]


def gemm_run(how: str, block_bytes: int, depth, problems: list) -> Callable[[], None]:
    """Every step of problems (gemm_problems) as the cells run them: packed kernels in blocks of block_bytes and
    slabs of depth rows, or np.matmul into scratch and an add."""
    adds = []
    for W, xs, dest in problems:
        if how == "packed":
            raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, xs))
            adds.append(packed.Packed(W, packed.kernels(W.dtype), xs, [dest], raw, raw_x, block_bytes, depth).add)
        else:
            adds.append(plain_add(W, xs, dest))
    steps = len(problems[0][1])

    def run() -> None:
        for add in adds:
            for t in range(steps):
                add(t)

    return run


def plain_add(W: np.ndarray, xs: np.ndarray, dest: np.ndarray) -> Callable[[int], None]:
    """dest[t] += xs[t] @ W through np.matmul into scratch, as charrnn.fast.gemm.Plain does."""
    out = np.empty(dest.shape[1:], W.dtype)

    def add(t: int) -> None:
        np.matmul(xs[t], W, out=out)
        np.add(dest[t], out, out=dest[t])

    return add


def measure_gemm(found: dict) -> dict:
    """The packed kernels' block size and depths, then packed or np.matmul, per dtype whose kernels passed their
    check (found: dtype name -> bool); a dtype without kernels keeps np.matmul and the defaults."""
    picked = {}
    block = DEFAULTS["block bytes"]
    problems = {dtype: gemm_problems(dtype) for dtype in ("float32", "float64")}
    if found.get("float32"):
        times = race({b: gemm_run("packed", b, DEFAULTS["depth float32"], problems["float32"])
                      for b in CANDIDATES["block bytes"]})
        picked["block bytes"] = pick("block bytes", times)
        block = picked["block bytes"]["value"]
    for dtype in ("float32", "float64"):
        if not found.get(dtype):
            picked[f"gemm {dtype}"] = choice("np.matmul", "no packed kernels")
            continue
        name = f"depth {dtype}"
        picked[name] = pick(name, race({d: gemm_run("packed", block, d, problems[dtype]) for d in CANDIDATES[name]}))
        depth = picked[name]["value"]
        if packed.check(dtype, block, depth) is not None:  # never, where the defaults passed: but only sums seen
            picked[name] = choice(DEFAULTS[name], f"{label(name, depth)} failed the check")  # agreeing may run
            depth = DEFAULTS[name]
        name = f"gemm {dtype}"
        picked[name] = pick(name, race({how: gemm_run(how, block, depth, problems[dtype]) for how in CANDIDATES[name]}))
    return picked


def proxy_layer(N: int, H: int, steps: int, recurrent: str, block_bytes: int) -> Callable[[], None]:
    """steps of an LSTM layer's forward over N streams, as a stand-in for a shard's work: the recurrent GEMM
    (packed or np.matmul on BLAS's threads), then the gates' exp, add and divide, the cell's multiplies and tanh,
    in preallocated arrays."""
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32)
    hs = np.zeros((steps + 1, N, H), np.float32)
    hs[0] = rng.standard_normal((N, H))
    a = np.empty((steps, N, 4 * H), np.float32)
    c, tmp = np.zeros((N, H), np.float32), np.empty((N, H), np.float32)
    if recurrent == "packed":
        raw, raw_x = (np.empty(n, np.uint8) for n in packed.Packed.bytes_needed(W, hs[:steps]))
        add = packed.Packed(W, packed.kernels(np.float32), hs[:steps], [a], raw, raw_x, block_bytes).add
    else:
        add = plain_add(W, hs[:steps], a)

    def run() -> None:
        a.fill(-0.5)  # the input projection
        for t in range(steps):
            add(t)
            g = a[t]
            np.exp(g, out=g)
            g += 1
            np.divide(1, g, out=g)
            np.multiply(g[:, :H], c, out=c)
            np.multiply(g[:, H : 2 * H], g[:, 2 * H : 3 * H], out=tmp)
            np.add(c, tmp, out=c)
            np.tanh(c, out=tmp)
            np.multiply(g[:, 3 * H :], tmp, out=hs[t + 1])

    return run


class Team:
    """helpers forked processes that run one of a list of workloads beside this process when told, each on one
    BLAS thread: the shards of a sharded step, in small.  A helper leaves when its pipe closes (this process
    gone, or close())."""

    def __init__(self, runs: list[Callable[[], None]], helpers: int):
        self.pipes, self.pids = [], []  # (this side's write end to a helper, read end from it); their pids
        for _ in range(helpers):
            to_helper, from_helper = os.pipe(), os.pipe()
            pid = os.fork()
            if pid == 0:  # a helper: never returns into the caller's code
                try:
                    os.close(to_helper[1])
                    os.close(from_helper[0])
                    for write, read in self.pipes:
                        os.close(write)
                        os.close(read)
                    with blas.single_threaded():
                        while job := os.read(to_helper[0], 1):
                            runs[job[0]]()
                            os.write(from_helper[1], b"d")
                finally:
                    os._exit(0)
            os.close(to_helper[0])
            os.close(from_helper[1])
            self.pipes.append((to_helper[1], from_helper[0]))
            self.pids.append(pid)

    def run(self, runs: list[Callable[[], None]], index: int) -> None:
        """runs[index]() here and in every helper at once; returns when all are done."""
        for write, _ in self.pipes:
            os.write(write, bytes([index]))
        runs[index]()
        for _, read in self.pipes:
            os.read(read, 1)

    def close(self) -> None:
        for write, read in self.pipes:
            os.close(write)
            os.close(read)
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.pipes, self.pids = [], []


def measure_shards(cores: int, recurrent: str, block_bytes: int) -> dict:
    """MIN_STREAMS: the proxy layer at each candidate shard size s, on cores processes of s streams each (one
    BLAS thread apiece) against one process of cores * s streams on BLAS's cores threads."""
    sizes = sorted(s for s in CANDIDATES["min streams"] if s is not None)
    steps = 8
    shard_runs = [proxy_layer(s, SHARD_HIDDEN, steps, recurrent, block_bytes) for s in sizes]
    whole_runs = {s: proxy_layer(cores * s, SHARD_HIDDEN, steps, "np.matmul", block_bytes) for s in sizes}
    lib = blas.library()
    team = Team(shard_runs, cores - 1)
    try:
        def threaded(run):
            def timed() -> None:
                lib.set_num_threads(cores)
                try:
                    run()
                finally:
                    lib.set_num_threads(1)
            return timed

        runs = {}
        for i, s in enumerate(sizes):
            runs[("shards", s)] = lambda i=i: team.run(shard_runs, i)
            runs[("threads", s)] = threaded(whole_runs[s])
        times = race(runs)
    finally:
        team.close()
    return pick_min_streams({s: times[("threads", s)] / times[("shards", s)] for s in sizes})


def gemv_run(layout: str, threads: int, shapes=GEMV_SHAPES, calls: int = 20) -> Callable[[], None]:
    """calls of the batch-1 sampler's GEMVs at each of shapes, in one layout, on this many BLAS threads."""
    rng = np.random.default_rng(0)
    products = []
    for D, M in shapes:
        W = rng.standard_normal((D, M)).astype(np.float32)
        x, out = np.ones((1, D), np.float32), np.empty((1, M), np.float32)
        products.append((np.ascontiguousarray(W.T), x[0], out[0]) if layout == "transposed" else (x, W, out))
    lib = blas.library()

    def run() -> None:
        lib.set_num_threads(threads)
        try:
            for product in products:
                for _ in range(calls):
                    np.matmul(*product)
        finally:
            lib.set_num_threads(1)

    return run


def measure_sampler(cores: int) -> dict:
    """The batch-1 sampler's GEMV layout, then its BLAS threads where there are more than one."""
    name = "sampler layout"
    picked = {name: pick(name, race({layout: gemv_run(layout, 1) for layout in CANDIDATES[name]}))}
    layout = picked[name]["value"]
    if cores > 1:
        name = "sampler threads"
        picked[name] = pick(name, race({"one": gemv_run(layout, 1), "all": gemv_run(layout, cores)}))
    return picked


def measure(cores: int, found: dict) -> dict:
    """Every choice, measured here: cores, the BLAS threads of the process that asks; found, dtype name -> whether
    its packed kernels passed their check.  Run in a child process with BLAS on one thread (charrnn.fast.machine):
    it forks helpers of its own and changes BLAS's threads as it goes."""
    picked = measure_gemm(found)
    block = picked.get("block bytes", choice(DEFAULTS["block bytes"], ""))["value"]
    recurrent = picked["gemm float32"]["value"]
    if cores > 1 and blas.library() is not None:
        picked["min streams"] = measure_shards(cores, recurrent, block)
    if blas.library() is not None:
        picked.update(measure_sampler(cores))
    return picked
