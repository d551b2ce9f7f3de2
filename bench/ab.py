"""A/B of training or sampling speed in one process: the working tree's charrnn against the one of a git revision.

On a noisy machine two runs minutes apart differ by more than most changes do, so both versions run here, step
for step in turn, on the same data and the same start: forward, loss, backward, clipping and Adam; or, with
--sample, generating SAMPLE_CHARS characters at batch 1 from the same weights and seed.  The revision's package
is exported with `git archive` into a temporary directory and imported under another name.  Beside the speed-up
of the medians it prints the middle half of the turns' own speed-ups: a change inside that range is not shown.

    python bench/ab.py --against HEAD~3 [--only lstm-2x256-b32t32,gru-1x256] [--steps 40]
    python bench/ab.py --against HEAD~3 --sample [--only lstm-2x256]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = ["lstm-2x256-b32t32", "lstm-1x128", "lstm-1x512", "lstm-2x256", "lstm-2x512", "gru-1x256", "rnn-1x256"]
SAMPLE_CONFIGS = ["lstm-2x256", "lstm-1x512", "gru-1x256", "rnn-1x256"]  # bench/sample_speed's
VOCAB = 65
SAMPLE_CHARS = 1000  # generated characters a timed sampling step
# Turns of BLOCK timed steps each, after SETTLE untimed ones: OpenBLAS's threads spin-wait ~0.1 s after a
# multi-threaded call, and on 2 cores took one from the other version's next steps when that version runs
# sharded (charrnn.fast.shards): step-by-step turns read 0.68-0.76x for changes that were 1.04-1.30x on their own
SETTLE, BLOCK = 2, 5
LAYOUTS = {"model": ("core.model", "model"), "optim": ("core.optim", "optim"), "shards": ("fast.shards", "parallel"),
           "sample": ("core.sample", "sample"), "vocab": ("core.vocab", "vocab")}


def export(revision: str, into: Path) -> str:
    """Write the revision's charrnn/ as package charrnn_ab into `into`; returns its module name."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "charrnn"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "charrnn_ab"
    (into / "charrnn").rename(package)
    for source in package.rglob("*.py"):  # its own imports must find itself, not the working tree's charrnn
        text = re.sub(r"\bcharrnn\b(?=[. ])", "charrnn_ab", source.read_text())
        source.write_text(text)
    sys.path.insert(0, str(into))
    return "charrnn_ab"


def module(package: str, name: str):
    """A module of either layout: the folders by part (core/model.py, fast/shards.py) or the flat one before it
    (model.py, parallel.py), so a revision from either side of the move compares."""
    for path in LAYOUTS[name]:
        try:
            return importlib.import_module(f"{package}.{path}")
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"{package} has no {name} module")


def parse(name: str) -> tuple[str, int, int, int, int]:
    match = re.fullmatch(r"(lstm|gru|rnn)-(\d+)x(\d+)(?:-b(\d+)t(\d+))?", name)
    if not match:
        raise SystemExit(f"bad configuration {name!r}: write e.g. lstm-2x256 or lstm-2x256-b32t32")
    cell, layers, hidden, batch, seq_len = match.groups()
    return cell, int(layers), int(hidden), int(batch or 64), int(seq_len or 64)


def trainer(package: str, cell: str, layers: int, hidden: int, batch: int, seq_len: int):
    """One training step of that package's code (forward, loss, backward, norm clip 5, Adam 2e-3), as a closure,
    state carried between calls; the same weights and data for every package.  Sharded over the cores as
    `charrnn train` runs it, where the package can (charrnn.fast.shards).  bench/train_speed times it too."""
    model_mod, optim_mod = module(package, "model"), module(package, "optim")
    cfg = model_mod.ModelConfig(vocab_size=VOCAB, cell=cell, layers=layers, hidden=hidden)
    model = model_mod.Model.create(cfg, np.random.default_rng(0))
    try:
        runner = module(package, "shards").Sharded(model)
    except ModuleNotFoundError:  # a revision from before data parallelism
        runner = model
    optim = optim_mod.make_optimizer("adam", model.params)
    data = np.random.default_rng(1).integers(0, VOCAB, (batch, seq_len + 1)).astype(np.uint8)
    x, y = data[:, :-1], data[:, 1:]
    state = [model.initial_state(batch)]

    cores = getattr(runner, "owning_cores", lambda batch: contextlib.nullcontext())

    def step() -> None:
        with cores(batch):  # as charrnn.runs.train runs its loop
            _, grads, state[0] = runner.loss_and_grads(x, y, state[0])
            optim_mod.clip_gradients(grads, 5.0)
            optim.step(model.params, grads, 2e-3)

    return step


def sampler(package: str, cell: str, layers: int, hidden: int, batch: int = 1, seq_len: int = 0):
    """Generating SAMPLE_CHARS characters at batch 1 (temperature 0.8, the prime "THE ") with that package's
    code, as a closure; the same weights and seed for every package and call.  batch and seq_len are there so
    that main calls it as it calls trainer; sampling always runs one stream."""
    model_mod, sample_mod = module(package, "model"), module(package, "sample")
    vocab = module(package, "vocab").Vocab(chr(c) for c in range(32, 32 + VOCAB))
    cfg = model_mod.ModelConfig(vocab_size=VOCAB, cell=cell, layers=layers, hidden=hidden)
    model = model_mod.Model.create(cfg, np.random.default_rng(0))

    def step() -> None:
        for _ in sample_mod.generate(model, vocab, SAMPLE_CHARS, np.random.default_rng(1), prime="THE ",
                                     temperature=0.8):
            pass

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="HEAD", help="git revision to compare with (default HEAD)")
    parser.add_argument("--only", default=None, help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each version, at least")
    parser.add_argument("--sample", action="store_true", help=f"time sampling ({SAMPLE_CHARS} characters a step)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else SAMPLE_CONFIGS if args.sample else CONFIGS
    make = sampler if args.sample else trainer
    with tempfile.TemporaryDirectory() as tmp:
        other = export(args.against, Path(tmp))
        what = (f"generating {SAMPLE_CHARS} characters at batch 1" if args.sample else
                "a training step (forward, backward, clip, Adam)")
        print(f"working tree against {args.against}: median ms {what}")
        print(f"{'config':<20}{args.against[:12]:>12}{'tree':>10}{'speed-up':>10}  {'middle half of the turns':>24}")
        for name in names:
            spec = parse(name)
            steps = {"them": make(other, *spec), "us": make("charrnn", *spec)}
            times = {k: [] for k in steps}
            turns = []  # each turn's speed-up: how far the machine's moments alone move the figure
            while len(times["us"]) < args.steps:
                for k, step in steps.items():  # in turn, so both see the same moments of the machine
                    for i in range(SETTLE + BLOCK):
                        t0 = time.perf_counter()
                        step()
                        if i >= SETTLE:
                            times[k].append(time.perf_counter() - t0)
                turns.append(statistics.median(times["them"][-BLOCK:]) / statistics.median(times["us"][-BLOCK:]))
            them, us = (statistics.median(times[k]) * 1e3 for k in ("them", "us"))
            low, _, high = statistics.quantiles(turns, n=4) if len(turns) > 1 else (turns[0], None, turns[0])
            print(f"{name:<20}{them:>12.1f}{us:>10.1f}{them / us:>9.3f}x  {low:>17.2f}x-{high:.2f}x", flush=True)


if __name__ == "__main__":
    main()
