"""`charrnn train` through click's CliRunner and the installed entry point: runs, presets, resume and every
bad input — one clear line on stderr, a non-zero exit, no traceback, no damaged file."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.store import checkpoint

TEXT = "".join(f"{i} green bottles, hanging on the wall; and if one green bottle should accidentally fall...\n"
               for i in range(40))
SMALL = ["-B", "4", "-T", "16", "-H", "16", "-L", "1", "--eval-every", "5", "--save-every", "5"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "bottles.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def assert_one_line_error(result, code, fragment):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(fragment in line for line in lines), result.stderr
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def test_train_writes_checkpoints_logs_and_summary(tmp_path, corpus):
    result = train(corpus, "--out", tmp_path / "ck", "--steps", "10", "--log-every", "5", *SMALL)
    assert result.exit_code == 0, result.output
    assert "step 5/10 | epoch" in result.stdout and "step 10/10" in result.stdout  # plain lines, no bar
    assert "val " in result.stdout and "bits/char" in result.stdout
    assert "--steps reached" in result.stdout and "best val loss" in result.stdout
    assert (tmp_path / "ck" / "latest.npz").exists() and (tmp_path / "ck" / "best.npz").exists()
    ck = checkpoint.load(tmp_path / "ck" / "latest.npz")
    assert ck.meta["progress"]["step"] == 10 and ck.model.cfg.hidden == 16


def test_file_names_print_as_they_are_never_as_rich_markup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths, which fit the table
    corpus = Path("notes[b].txt")  # "[b]" would be rich's bold tag, shown as "notes.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = Path("runs[red]")
    result = train(corpus, "--out", out, "--steps", "5", *SMALL)
    assert result.exit_code == 0, result.output
    banner = result.stdout[: result.stdout.index("step 5")]
    assert "notes[b].txt:" in banner and f"output    {out}" in banner
    summary = result.stdout[result.stdout.index("charrnn train: done"):]
    assert str(out / "latest.npz") in summary and str(out / "best.npz") in summary


def test_quiet_prints_only_the_summary(tmp_path, corpus):
    result = train(corpus, "--out", tmp_path / "ck", "--steps", "10", "--quiet", "--log-every", "1", *SMALL)
    assert result.exit_code == 0
    assert "step 1/10" not in result.stdout and "corpus" not in result.stdout and "--steps reached" in result.stdout


def test_resume_continues_history_and_refuses_shape_changes(tmp_path, corpus):
    out = tmp_path / "ck"
    assert train(corpus, "--out", out, "--steps", "10", *SMALL).exit_code == 0
    result = train(corpus, "--out", out, "--steps", "20", "--lr", "1e-3", "--resume")
    assert result.exit_code == 0, result.output
    ck = checkpoint.load(out / "latest.npz")
    assert [h["step"] for h in ck.meta["history"]] == [5, 10, 15, 20]
    assert ck.meta["train"]["lr"] == 1e-3 and ck.meta["train"]["batch_size"] == 4  # kept from the checkpoint
    before = (out / "latest.npz").read_bytes()
    assert_one_line_error(train(corpus, "--out", out, "--steps", "30", "--hidden", "32", "--resume"), 1,
                          "--hidden 32 differs from the checkpoint's 16")
    assert_one_line_error(train(corpus, "--out", out, "--preset", "char-rnn", "--resume"), 1, "--preset")
    other = tmp_path / "other.txt"
    other.write_text(TEXT.replace("wall", "hall"))
    assert_one_line_error(train(other, "--out", out, "--steps", "30", "--resume"), 1, "--force")
    assert (out / "latest.npz").read_bytes() == before
    assert train(other, "--out", out, "--steps", "25", "--resume", "--force").exit_code == 0


def test_a_length_given_on_resume_replaces_the_runs_and_one_already_reached_is_refused(tmp_path, corpus):
    out = tmp_path / "ck"
    assert train(corpus, "--out", out, "--steps", "10", *SMALL).exit_code == 0
    before = (out / "latest.npz").read_bytes()
    assert_one_line_error(train(corpus, "--out", out, "--steps", "8", "--resume"), 1,
                          "is at step 10 (epoch 0.20, 0:00 of training), which already reaches --steps 8: lengths "
                          "count the whole run")
    assert_one_line_error(train(corpus, "--out", tmp_path / "new", "--steps", "8", "--resume", out), 1, "already")
    assert (out / "latest.npz").read_bytes() == before and not (tmp_path / "new").exists()  # nothing written
    result = train(corpus, "--out", out, "--epochs", "0.4", "--resume")  # the run's --steps 10 no longer applies
    assert result.exit_code == 0, result.output
    ck = checkpoint.load(out / "latest.npz")
    assert ck.meta["progress"]["step"] == 21 and (ck.meta["train"]["steps"], ck.meta["train"]["epochs"]) == (None, 0.4)


def test_resume_from_a_directory_takes_its_latest(tmp_path, corpus):
    out = tmp_path / "ck"
    assert train(corpus, "--out", out, "--steps", "10", *SMALL).exit_code == 0
    (out / "best.npz").write_bytes(b"not what a resumed run wants")  # best.npz may be older than latest.npz
    result = train(corpus, "--out", tmp_path / "next", "--steps", "15", "--resume", out)
    assert result.exit_code == 0, result.output
    assert [h["step"] for h in checkpoint.load(tmp_path / "next" / "latest.npz").meta["history"]] == [5, 10, 15]


def test_a_new_run_never_replaces_another_runs_checkpoints(tmp_path, corpus):
    out = tmp_path / "ck"
    assert train(corpus, "--out", out, "--steps", "10", *SMALL).exit_code == 0
    held = {name: (out / name).read_bytes() for name in ("latest.npz", "best.npz")}
    assert_one_line_error(train(corpus, "--out", out, "--steps", "5", *SMALL), 1,
                          "holds another run's best.npz and latest.npz; continue it with --resume")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out, elsewhere)
    assert_one_line_error(train(corpus, "--out", out, "--steps", "15", "--resume", elsewhere), 1, "--overwrite")
    assert {name: (out / name).read_bytes() for name in held} == held
    assert train(corpus, "--out", out, "--steps", "15", "--resume", out / "latest.npz").exit_code == 0  # its own
    assert train(corpus, "--out", out, "--steps", "5", *SMALL, "--overwrite").exit_code == 0
    assert checkpoint.load(out / "latest.npz").meta["progress"]["step"] == 5


def test_init_from_fine_tunes_a_trained_model_on_another_corpus(tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths, which fit the banner
    old = Path("old")
    assert train(corpus, "--out", old, "--steps", "10", *SMALL).exit_code == 0
    other = tmp_path / "songs.txt"
    other.write_text(TEXT.replace("green", "GREEN ☘"), encoding="utf-8")  # 7 characters the model never saw
    result = train(other, "--out", tmp_path / "new", "--init-from", old, "--steps", "5", "--dropout", "0",
                   "-B", "4", "-T", "16", "--eval-every", "5")
    assert result.exit_code == 0, result.output
    assert f"init from  {old / 'best.npz'} (step 10 on bottles.txt), vocabulary" in result.stdout
    ck = checkpoint.load(tmp_path / "new" / "latest.npz")
    trained = checkpoint.load(old / "best.npz")
    assert ck.vocab.chars == sorted(set(trained.vocab.chars) | set("GREN☘"))
    assert (ck.model.cfg.hidden, ck.model.cfg.layers, ck.model.cfg.dropout) == (16, 1, 0.0)  # shape kept
    assert ck.meta["progress"]["step"] == 5 and ck.meta["init_from"]["step"] == 10
    assert "init from" in CliRunner().invoke(main, ["inspect", str(tmp_path / "new")]).stdout
    for args, fragment in (
        (["--hidden", "32"], "--hidden 32 differs from --init-from's 16"),
        (["--model", "gru"], "--model gru differs from --init-from's lstm"),
        (["--resume", old / "latest.npz"], "--init-from starts a new run and --resume continues one"),
    ):
        assert_one_line_error(train(other, "--out", tmp_path / "x", "--init-from", old, "--steps", "5", *args), 1,
                              fragment)
    assert_one_line_error(train(other, "--out", tmp_path / "x", "--init-from", tmp_path / "none.npz"), 1,
                          "does not exist")
    assert not (tmp_path / "x").exists()


def test_presets_and_explicit_overrides(tmp_path, corpus):
    result = train(corpus, "--out", tmp_path / "ck", "--preset", "min-char-rnn", "--hidden", "24", "--steps", "3")
    assert result.exit_code == 0, result.output
    ck = checkpoint.load(tmp_path / "ck" / "latest.npz")
    assert (ck.model.cfg.cell, ck.model.cfg.layers, ck.model.cfg.hidden) == ("rnn", 1, 24)
    t = ck.meta["train"]
    assert (t["seq_len"], t["batch_size"], t["optimizer"], t["lr"], t["clip_mode"]) == (25, 1, "adagrad", 0.1, "value")


def test_environment_variables_set_options_and_the_command_line_wins(tmp_path, corpus):
    env = {"CHARRNN_TRAIN_HIDDEN": "24", "CHARRNN_TRAIN_LR": "0.01", "CHARRNN_TRAIN_PRESET": "min-char-rnn"}
    result = CliRunner(env=env).invoke(main, ["train", str(corpus), "--out", str(tmp_path / "ck"), "--steps", "2",
                                              "--lr", "0.02"])
    assert result.exit_code == 0, result.output
    ck = checkpoint.load(tmp_path / "ck" / "latest.npz")
    assert (ck.model.cfg.cell, ck.model.cfg.hidden) == ("rnn", 24)  # the preset's cell, the variable's size
    assert ck.meta["train"]["lr"] == 0.02  # given on the command line
    bad = CliRunner(env={"CHARRNN_TRAIN_HIDDEN": "-3"}).invoke(main, ["train", str(corpus), "--out", str(tmp_path)])
    assert_one_line_error(bad, 2, "-3 is not in the range 1<=x<2^63")
    assert "CHARRNN_TRAIN_LR" in CliRunner().invoke(main, ["--help"]).output
    assert "CHARRNN_TRAIN_LR" in CliRunner().invoke(main, ["train", "--help"]).output


def test_help_groups_options_and_shows_defaults():
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    for heading in ("Data:", "Model:", "Optimisation:", "Length (whichever comes first):", "Checkpoints and output:"):
        assert heading in result.output
    assert "Units per layer. [default: 256; 1<=x<2^63]" in " ".join(result.output.split())  # wrapping aside


def write_bytes(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: write_bytes(d, "empty.txt", b""), "is empty"),
    (lambda d: write_bytes(d, "binary.bin", b"\x7fELF\x00\x01\x02" * 100), "binary"),
    (lambda d: write_bytes(d, "latin1.txt", "caf\u00e9 ".encode("latin-1") * 500), "byte offset 3"),
    (lambda d: d, "is a directory"),
    (lambda d: write_bytes(d, "short.txt", b"too short"), "too short for one chunk"),
])
def test_bad_corpora(tmp_path, make, fragment):
    assert_one_line_error(train(make(tmp_path), "--out", tmp_path / "ck", "--steps", "2"), 1, fragment)
    assert not (tmp_path / "ck" / "latest.npz").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "-1"], "--lr"),
    (["--dropout", "1.5"], "--dropout"),
    (["--model", "transformer"], "--model"),
    (["--time-limit", "soon"], "not a duration"),
    (["--batch-size", "0"], "--batch-size"),
    (["--clip-mode", "sometimes"], "--clip-mode"),
    (["--clip", "-1"], "--clip"),
    (["--clip", "nan"], "not a finite number"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "not a finite number"),
    (["--lr-min", "nan"], "not a finite number"),
    (["--weight-decay", "inf"], "not a finite number"),
    (["--dropout", "nan"], "not a finite number"),
    (["--epochs", "inf"], "not a finite number"),
    (["--seed", "-1"], "--seed"),
    (["--time-limit", "0s"], "no time at all"),
    (["--time-limit", "9" * 400 + "s"], "longer than any run can be"),  # a float's infinity
    (["--warmup", "1" + "0" * 400], "--warmup"),  # overflowed the learning rate's arithmetic
    (["--steps", str(2**63)], "1<=x<2^63"),
])
def test_bad_option_values_exit_2(tmp_path, corpus, args, fragment):
    out = tmp_path / "ck"  # a value let through would train one step there, and fail the test quickly
    assert_one_line_error(train(corpus, "--out", out, "--steps", "1", *SMALL, *args), 2, fragment)
    assert not out.exists()


def test_cosine_needs_a_length(tmp_path, corpus):
    result = train(corpus, "--out", tmp_path, "--preset", "min-char-rnn", "--lr-schedule", "cosine")
    assert_one_line_error(result, 1, "--steps, --epochs or --time-limit")


def test_default_preset_trains_ten_minutes_unless_told_otherwise(tmp_path, corpus):
    assert train(corpus, "--out", tmp_path / "a", "--steps", "3", *SMALL).exit_code == 0
    assert checkpoint.load(tmp_path / "a" / "latest.npz").meta["train"]["time_limit"] is None  # --steps replaced it
    assert train(corpus, "--out", tmp_path / "b", "--time-limit", "1s", *SMALL).exit_code == 0
    meta = checkpoint.load(tmp_path / "b" / "latest.npz").meta
    assert meta["train"]["time_limit"] == 1.0 and meta["train"]["lr_schedule"] == "cosine"
    assert meta["progress"]["elapsed"] >= 1.0
    assert train(corpus, "--out", tmp_path / "b", "--time-limit", "2s", "--resume").exit_code == 0
    assert 2.0 <= checkpoint.load(tmp_path / "b" / "latest.npz").meta["progress"]["elapsed"] < 10  # a total


def test_damaged_and_foreign_checkpoints_on_resume(tmp_path, corpus):
    out = tmp_path / "ck"
    assert train(corpus, "--out", out, "--steps", "5", *SMALL).exit_code == 0
    latest = out / "latest.npz"
    latest.write_bytes(latest.read_bytes()[:500])
    assert_one_line_error(train(corpus, "--out", out, "--resume"), 1, "damaged")
    assert len(latest.read_bytes()) == 500  # left alone
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    assert_one_line_error(train(corpus, "--out", out, "--resume", foreign), 1, "not a charrnn checkpoint")
    assert_one_line_error(train(corpus, "--out", tmp_path / "none", "--resume"), 1, "does not exist")


def test_unwritable_output_directory(tmp_path, corpus):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_one_line_error(train(corpus, "--out", blocker / "ck", "--steps", "2", *SMALL), 1,
                          "cannot write checkpoints")


def test_installed_entry_point_and_module(tmp_path, corpus):
    exe = Path(sys.executable).parent / "charrnn"
    result = subprocess.run([str(exe), "train", str(corpus), "--out", str(tmp_path / "ck"), "--steps", "3", *SMALL],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--steps reached" in result.stdout
    version = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "charrnn" in version.stdout
    bad = subprocess.run([str(exe), "train", str(tmp_path / "nope.txt")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
