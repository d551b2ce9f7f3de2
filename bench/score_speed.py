"""`charrnn score` against `charrnn eval` on the same text, and score's memory on a big input.

Speed: the lines of a corpus (tiny-shakespeare by default), repeated up to --lines, written to a temporary file;
then, in this process, evaluate_file (64 streams, sharded over the cores: what `charrnn eval` runs) and
score_records (every line from a fresh state, STREAMS lines side by side, sharded the same way: what `charrnn score`
runs) on that file, each timed over all of it, the JSON lines of score made and dropped. Memory: `charrnn score` run
by subprocess on --big-mb of lines and on a tenth of that, each one's peak RSS read from its own rusage (os.wait4):
flat memory means the two peaks agree. The memory runs use a small model (LSTM 1x32) so that 100 MB take minutes;
the memory held does not depend on the model's size beyond its weights and one batch. Random weights: the speed does
not depend on them; the vocabulary is the corpus's.

    python bench/score_speed.py [--corpus PATH] [--lines 1000000] [--big-mb 100] [--model lstm --layers 2 --hidden 256]

Saves its figures through bench/record.py (--big-mb 0: speed only); bench/report.py tables them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

from charrnn.core.model import Model, ModelConfig  # noqa: E402
from charrnn.core.vocab import Vocab  # noqa: E402
from charrnn.runs.evaluate import evaluate_file  # noqa: E402
from charrnn.runs.score import score_records, split_records  # noqa: E402
from charrnn.store import checkpoint  # noqa: E402
from charrnn.store.textstream import text_pieces  # noqa: E402

CORPUS = Path("/work/shared/data/tinyshakespeare.txt")


def lines_file(corpus: Path, lines: int, folder: Path) -> Path:
    """corpus's non-empty lines, repeated up to `lines` of them, in a file of folder."""
    source = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    path = folder / f"lines-{lines}.txt"
    with open(path, "w", encoding="utf-8") as f:
        for at in range(0, lines, len(source)):
            f.write("\n".join(source[: lines - at]) + "\n")
    return path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak resident memory in MB, seconds) of a child process running args, its output dropped."""
    t0 = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(args)} failed with exit code {child.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--big-mb", type=int, default=100, help="0: no memory runs")
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    vocab = Vocab.from_text(args.corpus.read_text(encoding="utf-8"))
    cfg = ModelConfig(vocab_size=len(vocab), cell=args.model, layers=args.layers, hidden=args.hidden)
    model = Model.create(cfg, np.random.default_rng(0))
    print(f"{record.kind(record.machine())}, {record.cpus()} CPUs")
    print(f"{args.model.upper()} {args.layers}x{args.hidden}, vocabulary {len(vocab)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text = lines_file(args.corpus, args.lines, folder)
        chars = text.stat().st_size
        t0 = time.perf_counter()
        result = evaluate_file(model, vocab, text)
        t_eval = time.perf_counter() - t0
        print(f"{args.lines:,} lines, {chars / 1e6:.1f} MB: eval {t_eval:.1f} s "
              f"({result['scored'] / t_eval:,.0f} chars/s)")
        t0 = time.perf_counter()
        for r in score_records(model, vocab, split_records(text_pieces(text), "\n")):
            json.dumps(r, ensure_ascii=False)
        t_score = time.perf_counter() - t0
        print(f"  score: {t_score:.1f} s ({chars / t_score:,.0f} chars/s): score / eval {t_score / t_eval:.2f}")
        figures = {"model": f"{args.model}-{args.layers}x{args.hidden}", "lines": args.lines, "megabytes": chars / 1e6,
                   "eval_s": t_eval, "score_s": t_score, "score_over_eval": t_score / t_eval, "memory": []}

        ck = folder / "model.npz"
        small = Model.create(ModelConfig(vocab_size=len(vocab), hidden=32, layers=1), np.random.default_rng(0))
        checkpoint.save(ck, small, vocab, {})
        big = lines_file(args.corpus, args.big_mb * 1_000_000 // 32, folder)  # lines average ~32 characters
        tenth = lines_file(args.corpus, args.big_mb * 100_000 // 32, folder)
        cli = [sys.executable, "-m", "charrnn", "score", str(ck)]
        for path in (tenth, big) if args.big_mb else ():
            peak, seconds = peak_rss_mb([*cli, str(path)])
            print(f"charrnn score on {path.stat().st_size / 1e6:.0f} MB: peak RSS {peak:.0f} MB, {seconds:.0f} s")
            figures["memory"].append({"megabytes": path.stat().st_size / 1e6, "peak_rss_mb": peak, "seconds": seconds})
    record.save("score_speed", figures)


if __name__ == "__main__":
    main()
