"""Validation loss reached within a wall-clock budget: the number a user of a char-rnn cares about in the end.

Trains through the real command line (`python -m charrnn train`) with the given preset and options on a corpus
(default: ../shared/data/tinyshakespeare.txt, last 10% held out, as in nanoGPT and PERF-NOTES) for a time
limit, then prints the validation curve (nats and bits per character against training time) and the best
value, and saves them with bench/record.py as benchmark quality-NAME.  The run's checkpoints stay in
bench/runs/quality-NAME (not committed).

    python bench/quality.py [CORPUS] [--time-limit 10m] [--name NAME] [-- extra charrnn train options]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "bench" / "runs"
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--time-limit", default="10m", help="training budget, as charrnn train takes it")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--eval-every", default=None,
                        help="steps between validation runs, the curve's points (default: the preset's, as a user "
                             "runs it; each run of the whole validation split costs ~30 training steps)")
    parser.add_argument("--name", default=None, help="results name (default: the preset)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1 :]  # after --: charrnn train options
    name = args.name or args.preset
    out = RUNS / f"quality-{name}"
    command = [sys.executable, "-m", "charrnn", "train", str(args.corpus), "--preset", args.preset,
               "--time-limit", args.time_limit, "--val-frac", "0.1", "--save-every", "100000", "--out", str(out),
               "--overwrite", "--quiet", *(["--eval-every", args.eval_every] if args.eval_every else []), *extra]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True)
    wall = time.monotonic() - started

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import record

    from charrnn.store import checkpoint

    meta = checkpoint.load(out / "latest.npz").meta
    print(f"\n{'minutes':>8}{'step':>8}{'train':>8}{'val':>8}{'bits':>7}")
    curve = []
    for h in meta["history"]:
        if h["val_loss"] is None:
            continue
        curve.append({"minutes": h["elapsed"] / 60, "step": h["step"], "train": h["train_loss"], "val": h["val_loss"]})
        print(f"{h['elapsed'] / 60:>8.2f}{h['step']:>8}{h['train_loss']:>8.4f}{h['val_loss']:>8.4f}"
              f"{h['val_loss'] / math.log(2):>7.3f}")
    best = meta["best_val_loss"]
    print(f"best val {best:.4f} nats/char = {best / math.log(2):.3f} bits/char at step {meta['best_step']}; "
          f"{meta['progress']['chars_seen']:,} characters in {wall / 60:.1f} min wall time")
    record.save(f"quality-{name}", {
        "preset": args.preset, "time_limit": args.time_limit, "eval_every": args.eval_every, "options": extra,
        "corpus": args.corpus.name, "train_command": command, "model": meta["model"], "train": meta["train"],
        "best_val_loss": best, "best_step": meta["best_step"], "steps": meta["progress"]["step"], "wall_seconds": wall,
        "chars_seen": meta["progress"]["chars_seen"], "curve": curve})


if __name__ == "__main__":
    main()
