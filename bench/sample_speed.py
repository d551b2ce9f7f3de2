"""Sampling throughput at batch 1: characters per second generating 5,000 characters, against PyTorch.

Each character costs one Stepper.step (per layer a row gather or input GEMV, the recurrent GEMV and a few
element-wise ops) plus the softmax and the draw on a V-sized vector.  Random weights: speed does not depend on
them.  When torch is importable, bench/torch_peer.sample_speed runs the same model in this process.

    python bench/sample_speed.py [--chars 5000] [--no-torch]

Saves its figures with bench/record.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402
import torch_peer  # noqa: E402

from charrnn.core.model import Model, ModelConfig  # noqa: E402
from charrnn.core.sample import generate  # noqa: E402
from charrnn.core.vocab import Vocab  # noqa: E402

CONFIGS = [("lstm", 2, 256), ("lstm", 1, 512), ("gru", 1, 256), ("rnn", 1, 256)]
VOCAB = Vocab(chr(c) for c in range(32, 97))  # 65 symbols, like tiny-shakespeare


def charrnn_speed(cell: str, layers: int, hidden: int, chars: int, rounds: int = 3) -> float:
    model = Model.create(ModelConfig(vocab_size=len(VOCAB), cell=cell, layers=layers, hidden=hidden),
                         np.random.default_rng(0))
    best = 0.0
    for r in range(rounds):
        steps = generate(model, VOCAB, chars, np.random.default_rng(r), prime="THE ", temperature=0.8)
        t0 = time.perf_counter()
        for _ in steps:
            pass
        best = max(best, chars / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=5000)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    if not args.no_torch:
        torch_peer.tune_malloc()  # PyTorch's best figures need glibc's thresholds raised (PERF-NOTES)
    print(f"batch 1, {args.chars:,} characters, temperature 0.8, best of 3")
    print(f"{'config':<12}{'chars/s':>10}{'torch':>10}{'ratio':>7}")
    rows = []
    for cell, layers, hidden in CONFIGS:
        speed = charrnn_speed(cell, layers, hidden, args.chars)
        peer = None if args.no_torch else torch_peer.sample_speed(cell.upper(), layers, hidden, len(VOCAB),
                                                                   n_chars=args.chars)
        theirs = peer["chars_per_s"] if peer else None
        rows.append({"cell": cell, "layers": layers, "hidden": hidden, "chars_per_s": speed,
                     "torch_chars_per_s": theirs, "ratio": speed / theirs if theirs else None})
        tail = f"{theirs:>10,.0f}{speed / theirs:>7.2f}" if theirs else f"{'-':>10}{'-':>7}"
        print(f"{cell.upper()} {layers}x{hidden:<5}{speed:>10,.0f}{tail}", flush=True)
    record.save("sample_speed", {"chars": args.chars, "rows": rows})


if __name__ == "__main__":
    main()
