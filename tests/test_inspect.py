"""`charrnn inspect`: the facts, their JSON, the rich view, the text plotter, and refusals of bad files."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.cli.textplot import plot
from charrnn.cli.views import escape_chars
from charrnn.core.model import Model, ModelConfig
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.runs.inspect import describe
from charrnn.runs.train import TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

TEXT = "Tab\there, a café ☕ and a line.\nAnother line, another café.\n" * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Trainer]:
    out = tmp_path_factory.mktemp("ck")
    corpus = corpus_from_text(TEXT, name="cafe.txt")
    cfg = TrainConfig(seq_len=8, batch_size=4, steps=30, eval_every=10, save_every=30, lr=1e-2, seed=3,
                      lr_schedule="cosine", warmup=5)
    trainer = Trainer(corpus, ModelConfig(vocab_size=len(corpus.vocab), cell="gru", hidden=12, layers=2), cfg, out)
    trainer.run()
    return out / "latest.npz", trainer


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_facts_come_from_the_checkpoint(trained):
    path, trainer = trained
    facts = describe(path)
    assert (facts["format"], facts["format_version"], facts["charrnn_version"]) == ("charrnn-checkpoint", 1, "0.1.0")
    m = facts["model"]
    assert (m["cell"], m["layers"], m["hidden"], m["dtype"], m["peephole"]) == ("gru", 2, 12, "float32", False)
    assert m["total_parameters"] == trainer.model.num_params() == sum(p["count"] for p in m["parameters"])
    assert {p["name"]: tuple(p["shape"]) for p in m["parameters"]} == {
        n: a.shape for n, a in trainer.model.params.items()}
    assert facts["vocabulary"] == {"size": len(trainer.corpus.vocab), "chars": "".join(trainer.corpus.vocab.chars)}
    t = facts["training"]
    assert (t["steps"], t["chars_seen"], t["batch_size"], t["seq_len"], t["resumable"]) == (30, 30 * 32, 4, 8, True)
    assert t["rotate"] is True
    assert t["chars_per_s"] == pytest.approx(t["chars_seen"] / t["elapsed_s"])
    best, last = facts["validation"]["best"], facts["validation"]["last"]
    assert best["nats_per_char"] == trainer.progress.best_val and best["step"] == trainer.progress.best_step
    assert best["bits_per_char"] == pytest.approx(trainer.progress.best_val / math.log(2))
    assert last["step"] == 30 and last["nats_per_char"] == trainer.progress.history[-1]["val_loss"]
    assert [h["step"] for h in facts["history"]] == [10, 20, 30]
    assert facts["schedule"]["name"] == "cosine" and facts["schedule"]["warmup"] == 5
    assert facts["optimizer"]["optimizer"] == "adam"
    assert facts["corpus"]["name"] == "cafe.txt" and facts["corpus"]["sha256"] == trainer.corpus.sha256


def test_json_output_is_the_facts(trained):
    path, _ = trained
    result = run("inspect", "--json", path)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == describe(path)


def test_rich_output_shows_everything_at_a_glance(trained):
    path, trainer = trained
    result = run("inspect", path)
    assert result.exit_code == 0
    out = result.stdout
    for expected in ("GRU, 2 layers × 12 hidden", "charrnn-checkpoint v1", "charrnn 0.1.0", "weight_ih_l0",
                     "decoder.bias", f"{trainer.model.num_params():,}", "bits/char", "nats/char", "adam",
                     "cosine", "cafe.txt", trainer.corpus.sha256, "loss history", "• train", "× validation",
                     "epochs rotated"):
        assert expected in out, expected
    vocab_line = next(line for line in out.splitlines() if line.startswith("vocabulary"))
    assert "\\n" in vocab_line and "\\t" in vocab_line and "␣" in vocab_line and "☕" in vocab_line
    plot_rows = [line for line in out.splitlines() if "┤" in line or "│" in line[:8]]
    assert sum(line.count("•") for line in plot_rows) > 10  # a curve, not a dot


def test_a_bare_checkpoint_without_training_metadata(tmp_path):
    """e.g. weights brought back from PyTorch and saved with checkpoint.save(..., meta={})."""
    model = Model.create(ModelConfig(vocab_size=3, cell="rnn", hidden=4, layers=1), np.random.default_rng(0))
    checkpoint.save(tmp_path / "bare.npz", model, Vocab("abc"), {})
    facts = describe(tmp_path / "bare.npz")
    assert facts["validation"] == {"best": None, "last": None, "val_frac": None}
    assert facts["training"]["steps"] is None and facts["history"] == [] and not facts["training"]["resumable"]
    result = run("inspect", tmp_path / "bare.npz")
    assert result.exit_code == 0 and "no loss history recorded" in result.stdout and "none recorded" in result.stdout


def test_a_fine_tuned_checkpoint_shows_where_it_started(tmp_path):
    model = Model.create(ModelConfig(vocab_size=3, cell="rnn", hidden=4, layers=1), np.random.default_rng(0))
    origin = {"path": "old/best.npz", "step": 1200, "corpus": "plays.txt", "vocab_size": 2}
    checkpoint.save(tmp_path / "tuned.npz", model, Vocab("abc"), {"init_from": origin})
    result = run("inspect", tmp_path / "tuned.npz")
    assert result.exit_code == 0, result.output
    rows = [line.rstrip() for line in result.stdout.splitlines() if line.startswith("init from")]
    assert rows == ["init from   old/best.npz (step 1,200 on plays.txt), vocabulary 2 + 1 new"], rows


@pytest.mark.parametrize("origin, field", [
    ({"path": "old/best.npz", "step": "soon", "corpus": None, "vocab_size": 2}, "init_from.step must be an integer"),
    ("not a record", "init_from must be an object"),
])
def test_a_foreign_record_of_where_it_started_is_refused_naming_the_field(tmp_path, origin, field):
    """checkpoint.save refuses to write it, so the file is made by hand, as a hostile one would be."""
    model = Model.create(ModelConfig(vocab_size=3, cell="rnn", hidden=4, layers=1), np.random.default_rng(0))
    path = tmp_path / "tuned.npz"
    checkpoint.save(path, model, Vocab("abc"), {})
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {**json.loads(arrays["meta"].tobytes()), "init_from": origin}
    np.savez(path, **{**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and result.stdout == "" and field in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_finite_numbers_become_null(tmp_path):
    model = Model.create(ModelConfig(vocab_size=3, cell="rnn", hidden=4, layers=1), np.random.default_rng(0))
    row = {"step": 1, "epoch": 0.5, "train_loss": float("nan"), "val_loss": None, "chars_per_s": None, "elapsed": 1}
    checkpoint.save(tmp_path / "nan.npz", model, Vocab("abc"), {"history": [row]})
    result = run("inspect", "--json", tmp_path / "nan.npz")
    assert json.loads(result.stdout)["history"] == [{**row, "train_loss": None}]
    assert "NaN" not in result.stdout


def bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    header_only = tmp_path / "header.npz"
    header_only.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, vocab=np.array([object()]))
    return {"damaged or truncated": truncated, "damaged": header_only, "not a charrnn checkpoint": foreign,
            "pickled": pickled, "does not exist": tmp_path / "nope.npz"}


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_bad_files_get_one_clear_line(trained, tmp_path, as_json):
    path, _ = trained
    for message, bad in bad_files(tmp_path, path).items():
        result = run("inspect", *as_json, bad)
        assert result.exit_code != 0 and result.stdout == "", bad
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, (bad, result.stderr)
        with pytest.raises(CharrnnError):
            describe(bad)
    empty = run("inspect", *as_json, tmp_path)  # a directory holding no best.npz or latest.npz
    assert empty.exit_code == 1 and empty.stdout == "" and "no best.npz or latest.npz" in empty.stderr


def test_a_directory_shows_its_best_checkpoint(trained):
    path, _ = trained
    got = json.loads(run("inspect", "--json", path.parent).stdout)
    assert got["path"] == str(path.parent / "best.npz")
    assert got["model"] == json.loads(run("inspect", "--json", path).stdout)["model"]


# -- helpers --------------------------------------------------------------------------------------------------------


def test_escape_chars_makes_invisible_characters_visible():
    assert escape_chars("a b\n\t\r\\") == "a␣b\\n\\t\\r\\\\"
    assert escape_chars("\u200b\u00a0\x07␣é😀") == "\\u200b\\xa0\\x07\\u2423é😀"


def test_plot_draws_both_curves_where_they_belong():
    train = [(s, 4 - s / 100) for s in range(0, 301, 10)]  # 4 -> 1
    val = [(100, 3.5), (300, 2.5)]
    lines = plot({"train": train, "val": val}, width=31, height=7, x_label="step")
    grid = [line.split("┤" if "┤" in line else "│", 1)[1] for line in lines[:7]]
    assert grid[0][0] == "•" and grid[-1][-1] == "•"  # falls from top-left to bottom-right
    assert grid[1][10] == "×" and grid[3][30] == "×"  # (100, 3.5) and (300, 2.5)
    assert not any("×" in row[:10] for row in grid)  # validation starts at step 100
    assert lines[0].startswith("4 ┤") and lines[6].startswith("1 ┤")
    assert lines[8].split()[:2] == ["0", "300"] and lines[8].endswith("step")
    assert "• train" in lines[9] and "× val" in lines[9]


def test_plot_edge_cases():
    assert plot({}) == [] and plot({"a": [(1, None), (2, float("nan"))]}) == []
    single = plot({"a": [(5, 2.0)]}, width=11, height=3)
    assert sum(line.count("•") for line in single[:3]) == 1  # one point is one marker, not a line
    flat = plot({"a": [(0, 1.0), (10, 1.0)]}, width=11, height=5)
    assert flat[2].count("•") == 11  # a flat line sits in the middle
