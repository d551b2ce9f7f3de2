"""The benchmark tables cannot drift: bench/README.md and the README's headline table are what bench/report.py
makes of the committed results, every result says which machine kind measured it, and a re-run replaces only its
own machine kind's figures."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str):
    """A script of bench/ as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report, record = bench_module("report"), bench_module("record")
ZEN3 = {"cpu": "AMD EPYC", "family": "25", "model": "1", "isa": "AVX2", "cpus": 2, "numpy": "2.4.6",
        "python": "3.11.7", "blas": {"name": "scipy-openblas", "version": "0.3.31", "core": "Haswell", "threads": 2}}
XEON = {**ZEN3, "cpu": "Intel(R) Xeon(R) Processor", "family": "6", "model": "207", "isa": "AVX-512",
        "blas": {**ZEN3["blas"], "core": "SkylakeX"}}


def train_speed(lstm_2x256_ratio: float) -> dict:
    row = {"cell": "lstm", "layers": 2, "hidden": 256, "chars_per_s": 27_000.0, "torch_chars_per_s": 25_000.0,
           "ratio": lstm_2x256_ratio, "mfu": 0.75, "roofline_gflops": 160.0}
    return {"batch": 64, "seq_len": 64, "steps": 15, "rounds": 2, "rows": [row]}


def test_bench_readme_is_what_the_report_makes_of_the_committed_results():
    made = report.bench_readme(report.load())
    assert (BENCH / "README.md").read_text() == made, "bench/README.md is stale: run python bench/report.py"


def test_readme_headline_is_what_the_report_makes_of_the_committed_results():
    readme = report.README.read_text()
    assert readme == report.readme_with_headline(readme, report.load()), \
        "README.md's headline table is stale: run python bench/report.py"


def test_every_committed_result_names_its_machine_kind_command_and_date():
    saved = sorted((BENCH / "results").glob("*.json"))
    assert saved, "bench/results/ holds no results"
    for entry in report.load(carried=[]):
        machine = entry["machine"]
        assert machine["cpu"] and machine["isa"] and machine["blas"]["core"] and machine["numpy"], entry["benchmark"]
        assert entry["kind"] == record.kind(machine)
        assert entry["command"].startswith("python bench/") and entry["date"][:4].isdigit()


def test_this_machine_is_described_by_cpu_isa_and_kernels():
    machine = record.machine()
    assert machine["cpu"] and machine["isa"] and machine["cpus"] >= 1
    assert machine["cpu"] in record.kind(machine) and machine["isa"] in record.kind(machine)


def test_two_machine_kinds_get_a_column_of_targets_and_a_section_each(tmp_path):
    record.save("train_speed", train_speed(1.05), tmp_path, ZEN3, "python bench/train_speed.py", "2026-12-03")
    record.save("train_speed", train_speed(0.80), tmp_path, XEON, "python bench/train_speed.py", "2026-12-04")
    entries = report.load(tmp_path, carried=[])
    made = report.bench_readme(entries)

    zen3, xeon = record.kind(ZEN3), record.kind(XEON)
    assert zen3 != xeon
    assert f"## {zen3}, 2 CPUs" in made and f"## {xeon}, 2 CPUs" in made
    header = next(line for line in made.splitlines() if line.startswith("| figure | target |"))
    assert zen3 in header and xeon in header
    lstm = next(line for line in made.splitlines() if line.startswith("| Training LSTM 2×256"))
    assert "**1.05×** ✓" in lstm and "0.80× ✗" in lstm  # each kind judged against the target on its own
    assert "2026-12-03" in header and "2026-12-04" in header


def test_a_rerun_replaces_its_own_machine_kinds_entry_and_no_other(tmp_path):
    first = record.save("train_speed", train_speed(1.05), tmp_path, ZEN3, "python bench/train_speed.py")
    other = record.save("train_speed", train_speed(0.80), tmp_path, XEON, "python bench/train_speed.py")
    sampling = record.save("sample_speed", {"chars": 5000, "rows": []}, tmp_path, ZEN3, "python bench/sample_speed.py")
    untouched = {path: path.read_bytes() for path in (other, sampling)}

    again = record.save("train_speed", train_speed(1.10), tmp_path, ZEN3, "python bench/train_speed.py --rounds 3")

    assert again == first
    assert sorted(tmp_path.iterdir()) == sorted([first, other, sampling])  # no temporary file left behind
    assert all(path.read_bytes() == data for path, data in untouched.items())
    (entry,) = [e for e in report.load(tmp_path, carried=[]) if e["kind"] == record.kind(ZEN3)
                and e["benchmark"] == "train_speed"]
    assert entry["result"]["rows"][0]["ratio"] == 1.10 and entry["command"].endswith("--rounds 3")


def test_a_benchmark_without_a_table_is_refused_not_dropped(tmp_path):
    record.save("new_idea", {"rows": []}, tmp_path, ZEN3, "python bench/new_idea.py")
    with pytest.raises(ValueError, match="new_idea"):
        report.bench_readme(report.load(tmp_path, carried=[]))


def test_the_benchmarks_not_run_here_have_tables_too(tmp_path):
    """quality, forget_bias and torch_peer have no committed result yet: their tables render from what they save."""
    quality = {"preset": "default", "time_limit": "10m", "eval_every": None, "options": [], "corpus": "t.txt",
               "best_val_loss": 1.42, "best_step": 9500, "steps": 11000, "curve": []}
    curve = [{"step": 250, "train": 2.2, "val": 2.1}, {"step": 500, "train": 1.9, "val": 1.8}]
    peer = {"cell": "LSTM", "layers": 2, "hidden": 256, "chars_per_s": 26_000.0, "others_cpu": 0.01}
    torch_peer = {"torch": "2.13.0", "malloc": "tuned", "numpy_threads": 2,
                  "train": [{**peer, "step_ms": 157.0, "onednn": True}],
                  "sample": [{**peer, "path": "cells", "threads": 1}]}
    record.save("quality-default", quality, tmp_path, XEON, "python bench/quality.py", "2026-12-04")
    record.save("forget_bias", {"steps": 500, "curves": {"0": curve, "1": curve, "torch": curve}}, tmp_path, XEON,
                "python bench/forget_bias.py", "2026-12-04")
    record.save("torch_peer", torch_peer, tmp_path, XEON, "python bench/torch_peer.py", "2026-12-04")

    made = report.bench_readme(report.load(tmp_path, carried=[]))

    assert "### Quality in a time limit" in made and "**1.4200** (2.049)" in made
    assert "| 500 | 1.8000 | 1.8000 | 1.8000 |" in made
    assert "| LSTM 2×256 | 26,000 | 157.0 | on |" in made and "cells, threads 1" in made
    lines = made.splitlines()
    quality_row = next(line for line in lines if line.startswith("| Validation nats/char"))
    assert "**1.4200** ✓" in quality_row  # a run of the default preset as it is meets the target
