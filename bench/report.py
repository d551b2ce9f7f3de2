"""bench/README.md and the README's headline table, made from the saved results, so no figure can drift.

Reads bench/results/*.json (written by bench/record.py, one file per benchmark and machine kind) and writes
bench/README.md: the targets judged on every machine kind met, then one section per machine kind with a table per
benchmark, each under its command, date, library versions and how busy the machine was.  The README's headline
table, between its two report markers, is the targets table.

    python bench/report.py            # write both
    python bench/report.py --check    # exit 1 when either is not what the results make (as the tests do)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_README = ROOT / "bench" / "README.md"
README = ROOT / "README.md"
BEGIN, END = "<!-- bench/report.py: headline -->", "<!-- bench/report.py: end -->"
BUSY = 0.10  # share of the CPUs other processes took above which a figure is marked as measured on a busy machine

# Figures measured before bench/results/ was committed, shown with their date and command (the run is described in
# bench/HISTORY.md) until a newer run of the same benchmark on the same machine kind outranks them.  Only ever
# a run that happened: never an estimate.
CARRIED = [
    {"benchmark": "quality-zen3-s20-packed", "kind": "AMD EPYC (family 25, model 1), AVX2, Haswell kernels",
     "date": "2026-12-03", "command": "python bench/quality.py --name zen3-s20-packed", "carried": True,
     "machine": {"numpy": "2.4.6", "blas": {"name": "OpenBLAS", "version": "0.3.31", "threads": 2}},
     "result": {"preset": "default", "time_limit": "10m", "options": [], "best_val_loss": 1.4513,
                "best_step": 9500, "steps": 11073}},
]


def load(directory: Path = RESULTS, carried: list[dict] = CARRIED) -> list[dict]:
    """Every saved entry and every carried one, by machine kind, benchmark and date."""
    entries = [json.loads(p.read_text()) for p in sorted(directory.glob("*--*.json"))] + carried
    return sorted(entries, key=lambda e: (e["kind"], e["benchmark"], e["date"]))


def by_kind(entries: list[dict]) -> dict[str, list[dict]]:
    grouped = {}
    for e in entries:
        grouped.setdefault(e["kind"], []).append(e)
    return grouped


def machine_name(kind: str, entries: list[dict]) -> str:
    """The kind with its core count: every figure here is a whole machine's (or a busy one's)."""
    return f"{kind}, {entries[-1]['machine'].get('cpus', '?')} CPUs"


def table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def num(x, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def config(row: dict) -> str:
    return f"{row['cell'].upper()} {row['layers']}×{row['hidden']}"


def busy(share) -> str:
    return "?" if share is None else f"{share:.0%}" + (" (busy)" if share > BUSY else "")


# --- one renderer per benchmark: entry -> markdown lines -------------------------------------------------------

def roofline(e: dict) -> list[str]:
    lines = []
    for label, r in e["result"].items():
        if label == "seconds" or (label == "autodetected" and r == e["result"]["configured"]):
            continue  # nothing pinned: autodetected is the configured run
        pinned = ", ".join(f"{k}={v}" for k, v in r["env"].items() if v) or "nothing pinned"
        names = ["step fwd", "step dh", "chunk proj", "chunk dW", "step", "chunk"]
        rows = [[row["cell"], row["hidden"], *(num(row[n], 1) for n in names),
                 busy(max((x or 0) for x in row["others_cpu"].values()))] for row in r["rows"]]
        lines += [f"BLAS {label} ({pinned}), float32 GFLOP/s at B {r['batch']}, T {r['seq_len']}, best of "
                  f"{r['rounds']} passes; square 2048³ GEMM: **{r['square']:.1f}** GFLOP/s. 'step' = the recurrent "
                  "GEMMs, 'chunk' = all GEMMs of a layer's chunk, FLOP-weighted (the roofline of MFU).", "",
                  *table(["cell", "H", *names, "others' CPU"], rows), ""]
    return lines


def train_speed(e: dict) -> list[str]:
    r = e["result"]
    rows = [[config(x), num(x["chars_per_s"]), num(x["torch_chars_per_s"]), num(x["ratio"], 2),
             f"{x['mfu']:.0%}", num(x["roofline_gflops"])] for x in r["rows"]]
    return [f"chars/s at B {r['batch']}, T {r['seq_len']}, float32, Adam, norm clip 5, state carried; median of "
            f"{r['steps']} steps, best of {r['rounds']} alternations with PyTorch in one process. MFU = model FLOPs "
            "(matmuls, forward + backward) per second over the chunk roofline measured in the same run.", "",
            *table(["config", "charrnn chars/s", "PyTorch chars/s", "ratio", "MFU", "roofline GFLOP/s"], rows), ""]


def sample_speed(e: dict) -> list[str]:
    r = e["result"]
    rows = [[config(x), num(x["chars_per_s"]), num(x["torch_chars_per_s"]), num(x["ratio"], 2)] for x in r["rows"]]
    return [f"Batch 1, {r['chars']:,} characters, temperature 0.8, best of 3; PyTorch on its fastest per-step loop.",
            "", *table(["config", "charrnn chars/s", "PyTorch chars/s", "ratio"], rows), ""]


def scale(e: dict) -> list[str]:
    r = e["result"]
    rows = [[f"{'ASCII' if x['kind'] == 'ascii' else 'UTF-8'} {x['megabytes']:,} MB", num(x["prepare_mb_per_s"]),
             num(x["prepare_peak_rss_mb"]), num(x["train_peak_rss_mb"]), num(x["worker_peak_rss_mb"]),
             num(x["train_chars_per_s"]),
             f"{x['eval_read_remapped_peak_rss_mb']:,.0f} ({x['eval_read_remapped_anon_mb']:,.0f}) / "
             f"{x['eval_read_compacted_peak_rss_mb']:,.0f} ({x['eval_read_compacted_anon_mb']:,.0f})"]
            for x in r["rows"]]
    return [f"Synthetic corpora; LSTM 2×256 trained {r['steps']} steps; peak RSS of each phase in its own process. "
            "The last column reads the corpus as `charrnn eval` does, through a table / compacted: peak RSS "
            "(anonymous memory at the end).", "",
            *table(["corpus", "prepare MB/s", "prepare RSS MB", "train RSS MB", "worker RSS MB", "train chars/s",
                    "eval read MB"], rows), ""]


def quality(entries: list[dict]) -> list[str]:
    rows = []
    for e in entries:
        r, loss = e["result"], e["result"]["best_val_loss"]
        options = " ".join(r["options"]) or "–"
        rows.append([f"`{e['command']}`", e["date"][:10], r["preset"], options, r["time_limit"],
                     f"**{loss:.4f}** ({loss / math.log(2):.3f})", f"{r['best_step']:,} of {r['steps']:,}",
                     "carried: bench/HISTORY.md" if e.get("carried") else busy(e.get("others_cpu"))])
    return ["tiny-shakespeare, last 10% held out; best validation nats/char (bits/char) in the time limit, "
            "validation included.", "",
            *table(["command", "date", "preset", "options", "time", "best val", "at step", "others' CPU"], rows), ""]


def forget_bias(e: dict) -> list[str]:
    curves = e["result"]["curves"]
    names = {"0": "forget bias 0 (charrnn)", "1": "forget bias 1", "torch": "PyTorch's init"}
    steps = [p["step"] for p in curves["0"]]
    rows = [[step, *(num(next(p["val"] for p in curves[k] if p["step"] == step), 4) for k in curves)]
            for step in steps]
    return ["LSTM 2×256, B 64, T 64, Adam 2e-3: validation nats/char after each block of steps.", "",
            *table(["step", *(names.get(k, k) for k in curves)], rows), ""]


def torch_peer(e: dict) -> list[str]:
    r = e["result"]
    train = [[config(x), num(x["chars_per_s"]), num(x["step_ms"], 1), "on" if x["onednn"] else "off",
              busy(x.get("others_cpu"))] for x in r["train"]]
    sample = [[config(x), num(x["chars_per_s"]), f"{x['path']}, threads {x['threads']}", busy(x.get("others_cpu"))]
              for x in r["sample"]]
    return [f"PyTorch {r['torch']} alone, allocator {r['malloc']}, {r['numpy_threads']} threads: training at B 64, "
            "T 64, and sampling at batch 1 on its fastest path (probed).", "",
            *table(["training", "chars/s", "ms a step", "oneDNN", "others' CPU"], train), "",
            *table(["sampling", "chars/s", "path", "others' CPU"], sample), ""]


def engines(e: dict) -> list[str]:
    r = e["result"]
    labels = list(r["rows"][0]["chars_per_s"]) if r["rows"] else []
    rows = [[x["config"], *(num(x["chars_per_s"][label]) for label in labels), num(x["torch_cpu_over_numpy"], 2),
             busy(x.get("others_cpu_share"))] for x in r["rows"]]
    return [f"chars/s of the training loop's step (LSTM, T 64, float32, Adam, clip 5) on each engine, in turns in "
            f"one process; median of {r['steps']} steps, best of {r['rounds']} rounds; GPU: {r['gpu'] or 'none'}.",
            "", *table(["config", *(f"{label} chars/s" for label in labels), "torch CPU / NumPy", "others' CPU"],
                       rows), ""]


def score_speed(e: dict) -> list[str]:
    r = e["result"]
    memory = [[f"{m['megabytes']:,.0f} MB", num(m["peak_rss_mb"]), num(m["seconds"])] for m in r["memory"]]
    return [f"`charrnn score` (every line from a fresh state) against `charrnn eval` (64 carried streams) on the same "
            f"{r['lines']:,} lines ({r['megabytes']:.1f} MB), {r['model'].upper()}, random weights, both over the "
            f"cores: eval {r['eval_s']:.1f} s, score {r['score_s']:.1f} s, **{r['score_over_eval']:.2f}×**.", "",
            *(["Peak RSS of `charrnn score` (LSTM 1×32) on a tenth and on the whole of a big input:", "",
               *table(["input", "peak RSS MB", "seconds"], memory), ""] if memory else [])]


SECTIONS = {"roofline": ("Roofline", roofline), "train_speed": ("Training speed", train_speed),
            "sample_speed": ("Sampling speed", sample_speed), "scale": ("Big corpora", scale),
            "quality": ("Quality in a time limit", None), "forget_bias": ("Forget-gate bias", forget_bias),
            "torch_peer": ("The PyTorch peer alone", torch_peer), "engines": ("The two engines", engines),
            "score_speed": ("Scoring records against eval", score_speed)}


def section(benchmark: str) -> str:
    """The section a benchmark's entries go to: quality-NAME runs share one table."""
    name = "quality" if benchmark.startswith("quality-") else benchmark
    if name not in SECTIONS:
        raise ValueError(f"bench/report.py has no table for benchmark {benchmark!r}: add one to SECTIONS")
    return name


def provenance(e: dict) -> str:
    """Command, date, libraries and how busy the machine was: what a reader needs to trust a table."""
    m, blas = e["machine"], e["machine"]["blas"]
    libs = f"NumPy {m['numpy']}, {blas.get('name')} {blas.get('version')}, {blas.get('threads')} threads"
    libs += f", PyTorch {m['torch']}" if m.get("torch") else ""
    return f"`{e['command']}` · {e['date'][:10]} · {libs} · other processes' CPU share: {busy(e.get('others_cpu'))}"


# --- the targets of issue 24, judged on every machine kind ------------------------------------------------------

def latest(benchmark: str):
    """Picks a machine kind's latest entry of the benchmark (entries are sorted by date)."""
    return lambda entries: next((e for e in reversed(entries) if e["benchmark"] == benchmark), None)


def default_quality(entries: list[dict]) -> dict | None:
    """The latest run of the `default` preset as it is, for 10 minutes, whatever its name."""
    return next((e for e in reversed(entries) if e["benchmark"].startswith("quality-")
                 and e["result"]["preset"] == "default" and e["result"]["time_limit"] == "10m"
                 and not e["result"]["options"]), None)


def row_of(cell: str, layers: int, hidden: int, key: str):
    """A model's figure in a table of rows (train_speed, sample_speed)."""
    return lambda result: next((x[key] for x in result["rows"]
                                if (x["cell"], x["layers"], x["hidden"]) == (cell, layers, hidden)), None)


def lowest_mfu(result: dict) -> float | None:
    larger = [x["mfu"] for x in result["rows"] if x["cell"] == "lstm" and (x["layers"], x["hidden"]) in LARGER]
    return min(larger, default=None)


def slowest_sampling(result: dict) -> float | None:
    return min((x["ratio"] for x in result["rows"] if x["ratio"]), default=None)


def big_corpus_rss(result: dict) -> float | None:
    return next((x["train_peak_rss_mb"] for x in result["rows"] if (x["kind"], x["megabytes"]) == ("ascii", 1000)),
                None)


def at_least(bound):
    return lambda value: value >= bound


def at_most(bound):
    return lambda value: value <= bound


LARGER = {(2, 256), (1, 512), (2, 512)}  # (layers, hidden) of the LSTMs the MFU target is for
# The targets of issue 24 and a headline figure: (figure, target, whether a value meets it (None: no target),
# which entry holds it, the value in that entry's result, how it is shown)
TARGETS = [
    ("Training LSTM 2×256, B 64 T 64: charrnn / PyTorch", "≥ 1.0×", at_least(1.0), latest("train_speed"),
     row_of("lstm", 2, 256, "ratio"), "{:.2f}×"),
    ("Training LSTM 1×512: charrnn / PyTorch", "≥ 1.0×", at_least(1.0), latest("train_speed"),
     row_of("lstm", 1, 512, "ratio"), "{:.2f}×"),
    ("Training GRU 1×256: charrnn / PyTorch", "≥ 1.2×", at_least(1.2), latest("train_speed"),
     row_of("gru", 1, 256, "ratio"), "{:.2f}×"),
    ("Training RNN 1×256: charrnn / PyTorch", "≥ 1.2×", at_least(1.2), latest("train_speed"),
     row_of("rnn", 1, 256, "ratio"), "{:.2f}×"),
    ("MFU of LSTM 2×256, 1×512, 2×512 (the lowest)", "≥ 70%", at_least(0.7), latest("train_speed"), lowest_mfu,
     "{:.0%}"),
    ("Sampling at batch 1: charrnn / PyTorch (the slowest model)", "≥ 3×", at_least(3.0), latest("sample_speed"),
     slowest_sampling, "{:.2f}×"),
    ("Validation nats/char, `default` preset, 10 minutes", "≤ 1.43", at_most(1.43), default_quality,
     lambda result: result["best_val_loss"], "{:.4f}"),
    ("Training peak RSS on a 1 GB corpus, MB", "–", None, latest("scale"), big_corpus_rss, "{:,.0f}"),
]


def judged(entry: dict | None, target: tuple, notes: list[str]) -> str:
    """A target's cell for one machine kind: the value, bold with ✓ when met, ✗ when not, marked when measured on
    a busy machine.  A carried figure gets a numbered note with its date, appended to notes."""
    _figure, _goal, meets, _pick, value_of, shown = target
    value = entry and value_of(entry["result"])
    if value is None:
        return "–"
    text = shown.format(value)
    if meets is not None:
        text = f"**{text}** ✓" if meets(value) else f"{text} ✗"
    if (entry.get("others_cpu") or 0) > BUSY:
        text += " (busy)"  # other processes took a share of the CPUs while it ran: bench/README.md says how much
    if entry.get("carried"):
        notes.append(f"measured on {entry['date']}, before results were committed: bench/HISTORY.md")
        text += f" ({len(notes)})"
    return text


def targets_table(entries: list[dict]) -> list[str]:
    """The targets as rows, the machine kinds as columns (each with its dates), and the command of each figure;
    then the carried figures' notes."""
    kinds = by_kind(entries)
    header = ["figure", "target"]
    for kind, measured in kinds.items():
        dates = sorted({e["date"][:10] for e in measured})
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        header.append(f"{machine_name(kind, measured)}, {when}")
    rows, notes = [], []
    for target in TARGETS:
        picked = [target[3](measured) for measured in kinds.values()]
        commands = dict.fromkeys(f"`{e['command']}`" for e in picked if e)  # distinct, in column order
        rows.append([*target[:2], *(judged(e, target, notes) for e in picked), " / ".join(commands) or "–"])
    lines = table([*header, "command"], rows)
    return lines + [""] + [f"({i}) {note}" for i, note in enumerate(notes, 1)] if notes else lines


# --- the two documents --------------------------------------------------------------------------------------------

INTRO = """\
# Benchmarks

<!-- Made by bench/report.py from bench/results/*.json: run a benchmark or edit the script, never this file. -->

Every script here measures one thing, prints a table and saves its figures to `bench/results/` (through
`bench/record.py`), one file per benchmark and machine kind: the CPU model, its widest vector instructions (ISA)
and the kernels NumPy's OpenBLAS runs on it. A re-run replaces that machine kind's figures for that benchmark and
no others. `python bench/report.py` then writes this file and the README's headline table from the saved results;
a test fails when either is out of date, so commit the results with the report.

| script | measures |
| --- | --- |
| `roofline.py` | float32 GEMM GFLOP/s of NumPy's BLAS at a training step's shapes: the ceiling for MFU |
| `train_speed.py` | training chars/s at B 64, T 64, MFU, and the ratio to PyTorch alternating in one process |
| `sample_speed.py` | sampling chars/s at batch 1, against PyTorch's fastest per-step loop |
| `scale.py` | preparing, training and `eval` reading on corpora up to 1 GB: MB/s, peak memory, step cost |
| `quality.py` | the best validation loss a preset reaches on tiny-shakespeare in a time limit (10 minutes) |
| `forget_bias.py` | why the LSTM's forget-gate bias starts at 0: validation curves from 0, 1 and PyTorch's init |
| `torch_peer.py` | the PyTorch peer alone, every path it has probed |
| `ab.py` | the working tree's training step (`--sample`: sampling) against a git revision's, in turn (prints only) |

`python bench/ab.py --against REV` is for changes smaller than the machine's drift: both versions run in one
process, in turn, and the middle half of the turns' own speed-ups, printed beside the result, is the noise a
change must clear.

`make bench` installs the `bench` extra (PyTorch, CPU build), runs them all, then this report. Machines like
these drift between phases and share their cores, so compare ratios measured in one run, and read each table's
share of the CPUs that other processes took while it ran ("busy" above 10%). The runs before the results were
committed, and everything tried that did not help, are in [HISTORY.md](HISTORY.md).

## Targets on every machine kind met

"""


def bench_readme(entries: list[dict]) -> str:
    lines = [*targets_table(entries), ""]
    for kind, measured in by_kind(entries).items():
        lines += [f"## {machine_name(kind, measured)}", ""]
        groups = {}
        for e in measured:
            groups.setdefault(section(e["benchmark"]), []).append(e)
        for name, (title, render) in SECTIONS.items():
            if name not in groups:
                continue
            if render is None:  # quality: every run in one table
                lines += [f"### {title}", "", *quality(groups[name])]
                continue
            e = groups[name][-1]
            lines += [f"### {title}", "", provenance(e), "", *render(e)]
    return INTRO + "\n".join(lines).rstrip() + "\n"


def readme_with_headline(readme: str, entries: list[dict]) -> str:
    """The README with its headline table made afresh between the markers."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README.md has lost its report markers {BEGIN} and {END}")
    head, rest = readme.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + BEGIN + "\n" + "\n".join(targets_table(entries)) + "\n" + END + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a document is out of date; write nothing")
    args = parser.parse_args()
    entries = load()
    made = {BENCH_README: bench_readme(entries), README: readme_with_headline(README.read_text(), entries)}
    stale = [path for path, text in made.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python bench/report.py")
        sys.exit(1 if stale else 0)
    for path in stale:
        path.write_text(made[path])
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
