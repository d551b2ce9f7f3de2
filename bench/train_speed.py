"""Training throughput of charrnn in characters per second, against the machine's GEMM roofline and PyTorch.

One training step is a chunk of B*T characters: forward, loss, backward, clipping, Adam.  Throughput is B*T over
the median step time after warm-up.  Model FLOPs per character count matmuls only (forward + backward = 3 x
forward; the first layer's input is a row gather, so it has no input GEMM):

    forward = sum over layers of 2*G*H*(D_in + H), D_in = 0 for layer 0, + 2*H*V for the decoder

MFU is achieved FLOP/s over the roofline measured in this process at this layer's GEMM shapes
(bench/roofline.chunk_gemm_gflops), once a round beside the training steps, best kept like the speeds: one
measurement alone wandered from 66 to 107 GFLOP/s between configurations of one run and put MFU above 100%.
When torch is importable, the same configuration runs in PyTorch on the CPU (bench/torch_peer.py),
alternating with charrnn in this process, and the ratio is printed.

    python bench/train_speed.py [--quick] [--rounds N] [--no-torch] [--only gru-1x256,lstm-2x256]

The whole grid's figures are saved with bench/record.py; a run with --only prints its subset and saves nothing,
so the saved table stays one run's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab  # noqa: E402
import record  # noqa: E402
import roofline  # noqa: E402
import torch_peer  # noqa: E402

CONFIGS = [("lstm", 1, 128), ("lstm", 1, 256), ("lstm", 1, 512), ("lstm", 2, 256), ("lstm", 2, 512),
           ("gru", 1, 256), ("rnn", 1, 256)]
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
VOCAB, BATCH, SEQ_LEN = ab.VOCAB, 64, 64  # the vocabulary of ab.trainer's model


def flops_per_char(cell: str, layers: int, hidden: int, vocab: int = VOCAB) -> float:
    G, H = GATES[cell], hidden
    forward = sum(2 * G * H * ((0 if k == 0 else H) + H) for k in range(layers)) + 2 * H * vocab
    return 3.0 * forward


def chars_per_s(step, chars: int, steps: int, warmup: int = 3) -> float:
    """chars (a step's characters) over the median time of step() after warm-up."""
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return chars / statistics.median(times[warmup:])


def charrnn_speed(cell: str, layers: int, hidden: int, steps: int, warmup: int = 3) -> float:
    """chars/s of charrnn's training step (median over steps after warm-up), state carried between chunks."""
    return chars_per_s(ab.trainer("charrnn", cell, layers, hidden, BATCH, SEQ_LEN), BATCH * SEQ_LEN, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (noisier)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of charrnn and PyTorch; best kept")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--only", default=None, help="comma-separated configurations, e.g. gru-1x256,lstm-2x256")
    args = parser.parse_args()
    names = {f"{cell}-{layers}x{hidden}": (cell, layers, hidden) for cell, layers, hidden in CONFIGS}
    chosen = args.only.split(",") if args.only else list(names)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(names)}")
    if not args.no_torch:
        torch_peer.tune_malloc()  # PyTorch's best figures need glibc's thresholds raised (PERF-NOTES)
    steps = 6 if args.quick else 15
    print(f"BLAS: {roofline.blas_info()}  threads: {torch_peer.numpy_threads()}")
    print(f"B={BATCH} T={SEQ_LEN} V={VOCAB} float32, Adam, clip 5; median of {steps} steps, best of {args.rounds}")
    header = (f"{'config':<12}{'chars/s':>10}{'MFLOP/ch':>10}{'GFLOP/s':>9}{'roof':>7}{'MFU':>6}{'torch':>10}"
              f"{'ratio':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    roofs = {}  # (hidden, gates) -> every roofline measured for it in this run, one a round
    for cell, layers, hidden in (names[n] for n in chosen):
        ours, theirs = [], []
        shape = (hidden, GATES[cell])
        for _ in range(args.rounds):
            ours.append(charrnn_speed(cell, layers, hidden, steps))
            roofs.setdefault(shape, []).append(roofline.chunk_gemm_gflops(*shape))
            if not args.no_torch:
                peer = torch_peer.train_speed(cell.upper(), layers, hidden, VOCAB, BATCH, SEQ_LEN, steps=steps)
                if peer is not None:
                    theirs.append(peer["chars_per_s"])
        speed = max(ours)
        flops = flops_per_char(cell, layers, hidden)
        roof = max(roofs[shape])  # best of all rounds, as the speeds are: one sample wandered 66-107 in a run
        achieved = speed * flops / 1e9
        torch_speed = max(theirs) if theirs else None
        row = {"cell": cell, "layers": layers, "hidden": hidden, "chars_per_s": speed, "mflop_per_char": flops / 1e6,
               "gflops": achieved, "roofline_gflops": roof, "mfu": achieved / roof, "torch_chars_per_s": torch_speed,
               "ratio": speed / torch_speed if torch_speed else None, "all_charrnn": ours, "all_torch": theirs,
               "all_roofline": list(roofs[shape])}
        rows.append(row)
        torch_text = f"{torch_speed:>10,.0f}{speed / torch_speed:>7.2f}" if torch_speed else f"{'-':>10}{'-':>7}"
        print(f"{cell.upper()} {layers}x{hidden:<5}{speed:>10,.0f}{flops / 1e6:>10.2f}{achieved:>9.0f}{roof:>7.0f}"
              f"{achieved / roof:>6.0%}{torch_text}", flush=True)
    if args.only:
        print("a subset (--only): not saved")
    else:
        record.save("train_speed", {"batch": BATCH, "seq_len": SEQ_LEN, "steps": steps, "rounds": args.rounds,
                                    "rows": rows})


if __name__ == "__main__":
    main()
