"""Training speed of the two engines side by side: charrnn's NumPy engine and the torch engine, on this machine's
CPU and on its GPU where there is one.

One training step as the loop runs it (Trainer.train_step: the chunk from the streams, forward, loss, backward,
clipping at 5, Adam, the carried state), float32, LSTM 2x256 and 2x512 at B 64 and 256, T 64, a vocabulary of 65.
chars/s is B*T over the median step time after warm-up; the engines take turns, each configuration `--rounds`
times, and each keeps its best round (this machine's speed wanders by tens of percent within minutes).  glibc's
allocator is tuned as for the PyTorch peer (bench/torch_peer.py), for both engines: they share this process.

    python bench/engines.py [--quick] [--rounds N] [--only lstm-2x256-b64]

Saves its figures through bench/record.py (the machine kind, versions, the command, the date, the share of the
CPUs other processes used meanwhile), with the GPU where there is one; bench/report.py tables them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import record  # noqa: E402
import torch_peer  # noqa: E402
import train_speed  # noqa: E402

from charrnn.core.model import ModelConfig  # noqa: E402
from charrnn.runs.train import TrainConfig, Trainer  # noqa: E402
from charrnn.store.corpus import corpus_from_text  # noqa: E402

CONFIGS = [(2, 256, 64), (2, 512, 64), (2, 256, 256), (2, 512, 256)]  # LSTM (layers, hidden, B)
SEQ_LEN, VOCAB = 64, 65


def engine_speed(engine: str, device: str | None, layers: int, hidden: int, batch: int, steps: int,
                 warmup: int = 2) -> float:
    """chars/s of the training loop's step on this engine: B*T over the median step time after warm-up."""
    rng = np.random.default_rng(0)
    symbols = [chr(32 + k) for k in range(VOCAB)]
    text = "".join(rng.choice(symbols, batch * SEQ_LEN * (steps + warmup) + 1))
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(corpus_from_text(text), ModelConfig(VOCAB, "lstm", hidden, layers, dtype="float32"),
                          TrainConfig(seq_len=SEQ_LEN, batch_size=batch, val_frac=0.0, lr=2e-3, clip=5.0),
                          out, engine=engine, device=device)
        with trainer.engine.running():
            return train_speed.chars_per_s(lambda: trainer.train_step(2e-3), batch * SEQ_LEN, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (noisier)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every engine; the best is kept")
    parser.add_argument("--only", default=None, help="comma-separated configurations, e.g. lstm-2x256-b64")
    args = parser.parse_args()
    torch = torch_peer._torch()
    if torch is None:
        raise SystemExit("the torch engine needs PyTorch: pip install -e '.[torch]'")
    torch_peer.tune_malloc()
    names = {f"lstm-{layers}x{hidden}-b{batch}": (layers, hidden, batch) for layers, hidden, batch in CONFIGS}
    chosen = args.only.split(",") if args.only else list(names)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        parser.error(f"unknown configuration {', '.join(unknown)}; choose from {', '.join(names)}")
    engines = [("numpy", None), ("torch", "cpu")] + ([("torch", "cuda")] if torch.cuda.is_available() else [])
    facts = record.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    steps = 4 if args.quick else 10
    print(f"{record.kind(facts)}, {facts['cpus']} CPUs; GPU {gpu}; torch threads {torch.get_num_threads()}")
    print(f"LSTM, T={SEQ_LEN}, V={VOCAB}, float32, Adam, clip 5; median of {steps} steps, best of {args.rounds}")
    labels = [f"{e}/{d}" if d else e for e, d in engines]
    header = f"{'config':<18}" + "".join(f"{label:>14}" for label in labels) + f"{'torch/numpy':>13}{'busy':>7}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in chosen:
        layers, hidden, batch = names[name]
        speeds = {label: [] for label in labels}
        others = record.contention_meter()
        for _ in range(args.rounds):
            for label, (engine, device) in zip(labels, engines, strict=True):
                speeds[label].append(engine_speed(engine, device, layers, hidden, batch, steps))
        best = {label: max(s) for label, s in speeds.items()}
        busy = others()
        row = {"config": name, "cell": "lstm", "layers": layers, "hidden": hidden, "batch": batch,
               "seq_len": SEQ_LEN, "chars_per_s": best, "all": speeds, "torch_cpu_over_numpy":
               best["torch/cpu"] / best["numpy"], "others_cpu_share": busy}
        rows.append(row)
        print(f"{name:<18}" + "".join(f"{best[label]:>14,.0f}" for label in labels)
              + f"{row['torch_cpu_over_numpy']:>13.2f}" + (f"{busy:>7.0%}" if busy is not None else f"{'?':>7}"),
              flush=True)
    if args.only is None:  # a saved table is one whole run
        record.save("engines", {"gpu": gpu, "torch_threads": torch.get_num_threads(), "steps": steps,
                                "rounds": args.rounds, "rows": rows})


if __name__ == "__main__":
    main()
