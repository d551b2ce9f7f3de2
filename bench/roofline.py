"""The physical limit: float32 GEMM GFLOP/s of NumPy's BLAS at a char-RNN training step's shapes.

Other benchmarks are read against this: a training loop cannot beat the rate of the GEMMs it is made of.
Shapes (N batch, T time, H hidden, G gates: 1 RNN, 3 GRU, 4 LSTM), per layer and chunk:

    step fwd    (N, H) @ (H, G*H)         recurrent pre-activations, T times per chunk, inside the loop
    step dh     (N, G*H) @ (G*H, H)       recurrent backward, T times per chunk, inside the loop
    chunk proj  (T*N, H) @ (H, G*H)       input projection of the whole chunk, one GEMM
    chunk dW    (G*H, T*N) @ (T*N, H)     weight gradient of the whole chunk (A is a transposed view)
    square      2048^3                    the large-GEMM ceiling

Run: python bench/roofline.py [--quick] [--rounds N]. Measures "as configured" (this environment) and
"autodetected" (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed) in a child process, because OpenBLAS reads
them when NumPy is imported. Saves its figures with bench/record.py. step_gemm_gflops / chunk_gemm_gflops give
the roofline for MFU in the calling process (same environment, same moment).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
from record import blas_info, contention_meter  # noqa: E402

PINNING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # what the autodetected child runs without
HIDDENS = (128, 256, 512)
CELLS = {"RNN": 1, "GRU": 3, "LSTM": 4}  # cell name -> gates G
BATCH = 64  # N, the training batch
SEQ_LEN = 64  # T, the TBPTT chunk
SQUARE = 2048  # large-GEMM ceiling
BUSY = 0.05  # share of the CPUs used by other processes above which a figure is flagged
_rng = np.random.default_rng(0)


def gemm_shapes(hidden: int, gates: int, batch: int = BATCH, seq_len: int = SEQ_LEN) -> dict:
    """The four GEMMs of one layer's training chunk: name -> (m, k, n, a_transposed)."""
    H, GH, TN = hidden, gates * hidden, seq_len * batch
    return {"step fwd": (batch, H, GH, False), "step dh": (batch, GH, H, False),
            "chunk proj": (TN, H, GH, False), "chunk dW": (GH, TN, H, True)}


def gemm_gflops(m: int, k: int, n: int, a_transposed: bool = False, min_time: float = 0.02,
                repeats: int = 7) -> float:
    """Sustained GFLOP/s of (m, k) @ (k, n) into an out= buffer: median of repeats, each >= min_time."""
    a = _rng.standard_normal((k, m) if a_transposed else (m, k), dtype=np.float32)
    a = a.T if a_transposed else a  # dW = dA.T @ x: BLAS gets a transpose flag, no copy
    b = _rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)

    def sample(calls: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=out)
        return time.perf_counter() - t0

    calls = 1
    while sample(calls) < min_time:  # calibration doubles as warm-up
        calls *= 2
    return 2.0 * m * k * n * calls / statistics.median(sample(calls) for _ in range(repeats)) / 1e9


def clean_gflops(m: int, k: int, n: int, a_transposed: bool = False, attempts: int = 3, **kw) -> tuple:
    """gemm_gflops, measured again (up to attempts, best kept) while other processes took the CPUs.

    A busy partner core stalls OpenBLAS's threads at every small GEMM: the rate can drop 10-1000x.
    Returns (GFLOP/s, share of the CPUs others used during the kept attempt)."""
    best = (0.0, None)
    for _ in range(attempts):
        others = contention_meter()
        rate = gemm_gflops(m, k, n, a_transposed, **kw)
        busy = others()
        best = max(best, (rate, busy), key=lambda rb: rb[0])
        if busy is None or busy < 2 * BUSY:  # 2x: /proc/stat counts whole ticks over a short window
            break
    return best


def chunk_weights(seq_len: int = SEQ_LEN) -> dict:
    """GEMM calls per layer and chunk: T steps each way; projection and dx; dW_ih and dW_hh."""
    return {"step fwd": seq_len, "step dh": seq_len, "chunk proj": 2, "chunk dW": 2}


def _harmonic(rates: dict, shapes: dict, weights: dict) -> float:
    """Rate of a job made of these GEMMs: total FLOPs / total time (each GEMM at its own rate)."""
    flops = {name: w * 2.0 * math.prod(shapes[name][:3]) for name, w in weights.items()}
    return sum(flops.values()) / sum(f / rates[name] for name, f in flops.items())


def _mix_gflops(shapes: dict, weights: dict, **kw) -> float:
    """Measure the weighted GEMMs now and combine them (_harmonic)."""
    rates = {name: clean_gflops(*shapes[name], **kw)[0] for name in weights}
    return _harmonic(rates, shapes, weights)


def step_gemm_gflops(hidden: int, gates: int, batch: int = BATCH, **kw) -> float:
    """GFLOP/s of the recurrent GEMMs inside the time loop (step fwd + step dh), in this process."""
    return _mix_gflops(gemm_shapes(hidden, gates, batch), {"step fwd": 1, "step dh": 1}, **kw)


def chunk_gemm_gflops(hidden: int, gates: int, batch: int = BATCH, seq_len: int = SEQ_LEN, **kw) -> float:
    """GFLOP/s of all GEMMs of one layer's training chunk (input width H), FLOP-weighted, in this process.

    Per chunk: T x step fwd, T x step dh, and for the chunk: input projection, dx (same FLOPs as the
    projection, measured as it), dW_ih and dW_hh (two chunk dW). The roofline for MFU of a whole step."""
    return _mix_gflops(gemm_shapes(hidden, gates, batch, seq_len), chunk_weights(seq_len), **kw)


def runtime_text() -> str:
    """numpy.show_runtime() as text (it prints; names the BLAS only when threadpoolctl is installed)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        np.show_runtime()
    return buf.getvalue()


def measure(quick: bool = False, rounds: int = 2) -> dict:
    """Every shape of the grid plus the square ceiling, in this process.

    Each shape is timed in `rounds` passes over the whole grid and the best pass kept: this VM's host
    sometimes halves small-GEMM throughput for seconds at a time, invisibly from inside (no steal time),
    and a roofline is what the machine sustains, not its worst moment. `spread` = worst pass / best pass.
    Shapes disturbed by other processes are measured again within a pass (clean_gflops)."""
    kw = {"min_time": 0.01, "repeats": 3} if quick else {}
    square_kw = {"min_time": 0.1, "repeats": 3} if quick else {"min_time": 0.3, "repeats": 5}
    others = contention_meter()
    gemm_gflops(SQUARE, SQUARE, SQUARE, min_time=0.5, repeats=1)  # wake BLAS threads and clocks; discarded
    grid = {(cell, hidden): gemm_shapes(hidden, gates) for hidden in HIDDENS for cell, gates in CELLS.items()}
    jobs = {(key, name): shape for key, shapes in grid.items() for name, shape in shapes.items()}
    jobs["square", "square"] = (SQUARE, SQUARE, SQUARE, False)
    passes = {job: [] for job in jobs}  # (GFLOP/s, others' CPU share) per round
    for _ in range(rounds):
        for job, shape in jobs.items():
            passes[job].append(clean_gflops(*shape, **(square_kw if job[0] == "square" else kw)))
    best = {job: max(p, key=lambda rb: rb[0]) for job, p in passes.items()}
    spread = {job: min(r for r, _ in p) / max(r for r, _ in p) for job, p in passes.items()}
    rows = []
    for (cell, hidden), shapes in grid.items():
        rates = {name: best[(cell, hidden), name][0] for name in shapes}
        rows.append({"cell": cell, "hidden": hidden, "gates": CELLS[cell], **rates,
                     "step": _harmonic(rates, shapes, {"step fwd": 1, "step dh": 1}),
                     "chunk": _harmonic(rates, shapes, chunk_weights()),
                     "spread": {name: spread[(cell, hidden), name] for name in shapes},
                     "others_cpu": {name: best[(cell, hidden), name][1] for name in shapes}})
    env = {v: os.environ.get(v) for v in PINNING_VARS}
    return {"env": env, "blas": blas_info(), "runtime": runtime_text(), "rounds": rounds,
            "square": best["square", "square"][0], "square_spread": spread["square", "square"],
            "rows": rows, "numpy": np.__version__, "batch": BATCH, "seq_len": SEQ_LEN, "others_cpu": others()}


def run_child(quick: bool, rounds: int) -> dict:
    """The same measurement with the pinning variables removed, before NumPy is imported there."""
    env = {k: v for k, v in os.environ.items() if k not in PINNING_VARS}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"--rounds={rounds}"]
    cmd += ["--quick"] if quick else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the autodetected measurement failed:\n{done.stderr}")
    return json.loads(done.stdout)


def print_report(label: str, res: dict, base: dict | None = None) -> None:
    """One table per configuration: GFLOP/s per GEMM, the FLOP-weighted step / chunk rates, and the
    chunk rate relative to `base` (the as-configured run)."""
    env = ", ".join(f"{k}={v}" for k, v in res["env"].items())
    b = res["blas"]
    print(f"\n== {label}: {env}")
    print(f"   BLAS: {b['name']} {b['version']} | kernels: {b['core']} | threads: {b['threads']}")
    cols = ("step fwd", "step dh", "chunk proj", "chunk dW", "step", "chunk")
    print(f"   {'cell':<5}{'H':>5} " + "".join(f"{c:>11}" for c in cols) + f"{'spread':>8}"
          + ("  chunk vs configured" if base else ""))
    for i, r in enumerate(res["rows"]):
        disturbed = any((x or 0) > 2 * BUSY for x in r["others_cpu"].values())
        ratio = f"  x{r['chunk'] / base['rows'][i]['chunk']:.2f}" if base else ""
        print(f"   {r['cell']:<5}{r['hidden']:>5} " + "".join(f"{r[c]:>11.1f}" for c in cols)
              + f"{min(r['spread'].values()):>8.2f}{ratio}" + ("  ! busy" if disturbed else ""))
    ratio = f", x{res['square'] / base['square']:.2f} vs configured" if base else ""
    print(f"   square {SQUARE}^3: {res['square']:.1f} GFLOP/s (large-GEMM ceiling), "
          f"spread {res['square_spread']:.2f}{ratio}")
    busy = res.get("others_cpu")
    if busy is not None:
        warn = "  <- the machine was busy: figures are low and noisy" if busy > BUSY else ""
        print(f"   other processes used {busy:.0%} of the CPUs meanwhile{warn}; "
              "disturbed shapes were measured again")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (noisier)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the grid; the best is kept")
    parser.add_argument("--child", action="store_true", help="measure here and print JSON (internal)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.quick, args.rounds)))
        return
    t0 = time.perf_counter()
    rounds = 1 if args.quick else args.rounds
    configured = measure(args.quick, rounds)
    if any(v in os.environ for v in PINNING_VARS):
        autodetected = run_child(args.quick, rounds)
    else:
        autodetected = configured  # nothing pinned: this environment already autodetects
    elapsed = time.perf_counter() - t0

    print(f"float32 GEMM GFLOP/s, N={BATCH}, T={SEQ_LEN}: median of repeats, best of {rounds} passes "
          "('spread' = worst pass / best, lowest in the row);\n'step' = step fwd + step dh, "
          "'chunk' = all GEMMs of a layer's training chunk (FLOP-weighted)")
    print("\nnumpy.show_runtime() as configured:\n" + configured["runtime"].rstrip())
    print_report("as configured", configured)
    print_report("autodetected", autodetected, base=configured)
    print(f"\n({elapsed:.1f} s)")
    record.save("roofline", {"configured": configured, "autodetected": autodetected, "seconds": elapsed})


if __name__ == "__main__":
    main()
