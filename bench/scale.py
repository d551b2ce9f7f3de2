"""Scale: corpus preparation throughput and peak memory, and training memory and step cost, on big corpora.

For synthetic corpora of 10 MB, 100 MB and 1 GB (ASCII and mixed UTF-8), written to a temporary directory and
removed afterwards: the MB/s of preparing (the streaming two-pass read that writes the memory-mapped index
cache), the peak RSS of preparing, and the peak RSS and chars/s of training an LSTM 2x256 for 50 steps on the
cached corpus, and the peak RSS of reading it as `charrnn eval` does (evaluate.known_text) for a model whose
vocabulary holds one character more (read through a table) and for one that lacks the corpus's first character
(the line break, dropped: compacted into a copy).  Each measurement runs in a fresh child process, so peak RSS
is its own; training's data-parallel worker processes (charrnn.fast.shards) are counted apart, as the largest
one's peak (pages they share with the trainer, such as NumPy's code, count in both).

    python bench/scale.py [--sizes 10,100,1000] [--kinds ascii,utf8] [--steps 50]

Saves its figures with bench/record.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import record  # noqa: E402

WORDS = {
    "ascii": "the of and to a in that is was he for it with as his on be at by I had not are but from or have an "
             "they which one you were her all she there would their we him been has when who will more no if out "
             "ROMEO. JULIET. Enter, exeunt; O! what? thou thee thy doth hath".split(),
    "utf8": "le café était très élégant über straße grüße naïve façade año niño ¿qué? ¡sí! — «guillemets» "
            "Ελληνικά русский 日本語 中文 한국어 😀 🎉 ∑ ∫ π ≈ ≠ the and of a to in".split(),
}


def write_corpus(path: Path, kind: str, megabytes: int) -> int:
    """Random words and line breaks up to the size; a 4 MB block with fresh randomness per block."""
    rng = np.random.default_rng(0)
    words = WORDS[kind]
    target, written = megabytes * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            picks = rng.integers(0, len(words), 400_000)
            breaks = rng.random(400_000) < 0.1
            block = "".join(words[i] + ("\n" if b else " ") for i, b in zip(picks, breaks, strict=True))
            data = block.encode("utf-8")[: target - written].decode("utf-8", "ignore")
            f.write(data)
            written += len(data.encode("utf-8"))
    return written


def child(code: str) -> tuple[dict, float, float]:
    """Run python -c code in a fresh process; returns its JSON line, its own peak RSS and the largest peak RSS
    of the processes it started and ended (the training workers), in MB."""
    out = subprocess.run([sys.executable, "-c", code + PEAK], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, result.pop("peak_rss_kb") / 1024, result.pop("children_peak_rss_kb") / 1024


PEAK = """
import resource
print(json.dumps({**result, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""
PREPARE = """
import json, time
from charrnn.store.corpus import read_corpus
t = time.perf_counter(); c = read_corpus({path!r}); dt = time.perf_counter() - t
result = {{"seconds": dt, "chars": len(c.data), "vocab": len(c.vocab), "mmap": type(c.data).__name__}}
"""

TRAIN = """
import json
from charrnn.store.corpus import read_corpus
from charrnn.core.model import ModelConfig
from charrnn.runs.train import TrainConfig, Trainer
c = read_corpus({path!r})
cfg = TrainConfig(steps={steps}, val_frac=0.0001, eval_every={steps}, save_every=10**9, seed=0)
t = Trainer(c, ModelConfig(vocab_size=len(c.vocab), hidden=256, layers=2), cfg, {out!r})
t.run()
result = {{"chars_per_s": t.history[-1]["chars_per_s"], "val_chars": len(t.val_data)}}
"""

EVAL_READ = """
import json
from charrnn.store.corpus import read_corpus
from charrnn.runs.evaluate import known_text
from charrnn.core.vocab import Vocab
chars = read_corpus({path!r}).vocab.chars
vocab = Vocab(set(chars[{drop}:]) | {{"\\u2603"}})
data, read, unknown = known_text({path!r}, vocab)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))  # the memory held now, by kind
result = {{"anon_mb": int(status["RssAnon"].split()[0]) / 1024}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,100,1000", help="corpus sizes in MB")
    parser.add_argument("--kinds", default="ascii,utf8")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rows = []
    print(f"{'corpus':<14}{'prepare MB/s':>13}{'prep RSS MB':>12}{'cached read s':>14}{'train RSS MB':>13}"
          f"{'worker RSS MB':>14}{'train chars/s':>14}{'eval read RSS (anon) MB':>26}")
    for kind in args.kinds.split(","):
        for mb in map(int, args.sizes.split(",")):
            with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
                path = Path(tmp) / f"{kind}-{mb}MB.txt"
                size = write_corpus(path, kind, mb)
                t0 = time.perf_counter()
                prep, prep_rss, _ = child(PREPARE.format(path=str(path)))
                wall = time.perf_counter() - t0
                cached, _, _ = child(PREPARE.format(path=str(path)))  # second read: the cache, memory-mapped
                code = TRAIN.format(path=str(path), steps=args.steps, out=str(Path(tmp) / "ck"))
                train, train_rss, worker_rss = child(code)
                remap, remap_rss, _ = child(EVAL_READ.format(path=str(path), drop=0))
                compact, compact_rss, _ = child(EVAL_READ.format(path=str(path), drop=1))
            row = {"kind": kind, "megabytes": mb, "bytes": size, "chars": prep["chars"], "vocab": prep["vocab"],
                   "prepare_seconds": prep["seconds"], "prepare_wall_seconds": wall,
                   "prepare_mb_per_s": size / 1e6 / prep["seconds"], "prepare_peak_rss_mb": prep_rss,
                   "cached_read_seconds": cached["seconds"], "cached_is_mmap": cached["mmap"] == "memmap",
                   "train_peak_rss_mb": train_rss, "worker_peak_rss_mb": worker_rss,
                   "train_chars_per_s": train["chars_per_s"], "eval_read_remapped_peak_rss_mb": remap_rss,
                   "eval_read_remapped_anon_mb": remap["anon_mb"], "eval_read_compacted_peak_rss_mb": compact_rss,
                   "eval_read_compacted_anon_mb": compact["anon_mb"]}
            rows.append(row)
            eval_read = f"{remap_rss:.0f} ({remap['anon_mb']:.0f}) / {compact_rss:.0f} ({compact['anon_mb']:.0f})"
            print(f"{kind + ' ' + str(mb) + ' MB':<14}{row['prepare_mb_per_s']:>13.0f}{prep_rss:>12.0f}"
                  f"{cached['seconds']:>14.3f}{train_rss:>13.0f}{worker_rss:>14.0f}{train['chars_per_s']:>14,.0f}"
                  f"{eval_read:>26}",
                  flush=True)
    record.save("scale", {"steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
