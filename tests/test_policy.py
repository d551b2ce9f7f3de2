"""The policy of a run, without click: settings laid over each other, what --resume, --init-from and --overwrite
decide, which file a CHECKPOINT argument means."""

from pathlib import Path

import pytest

from charrnn.errors import CharrnnError
from charrnn.runs import policy
from charrnn.runs.policy import DEFAULTS, Request, find_checkpoint, open_run, plan, resume_path
from charrnn.runs.presets import PRESETS

TEXT = "".join(f"{i} little pigs went to market, and {i % 7} came home.\n" for i in range(80))
SMALL = {"hidden": 8, "layers": 1, "batch_size": 4, "seq_len": 8, "eval_every": 2, "save_every": 2, "steps": 3}


def ask(corpus, out, given: dict | None = None, **how) -> Request:
    """A request with `given` options set by the user (the rest at their defaults)."""
    given = dict(given or {})
    return Request(Path(corpus), Path(out), {**DEFAULTS, **given}, frozenset(given), **how)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "pigs.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture
def trained(tmp_path, corpus):
    """A run of three steps in tmp_path/run: (corpus, run directory)."""
    open_run(ask(corpus, tmp_path / "run", SMALL)).run()
    return corpus, tmp_path / "run"


def test_settings_are_defaults_then_preset_then_what_the_user_gave(corpus, tmp_path):
    settings = plan(ask(corpus, tmp_path / "a", {"lr": 0.5}, preset="char-rnn")).settings
    assert settings["lr"] == 0.5  # given
    assert settings["optimizer"] == "rmsprop" and settings["epochs"] == PRESETS["char-rnn"]["epochs"]  # preset
    assert settings["weight_decay"] == DEFAULTS["weight_decay"]  # neither sets it: the default


def test_a_length_given_replaces_the_presets_whole_length(corpus, tmp_path):
    settings = plan(ask(corpus, tmp_path / "a", {"steps": 7}, preset="char-rnn")).settings
    assert settings["steps"] == 7 and settings["epochs"] is None  # not "7 steps or 50 epochs"
    assert plan(ask(corpus, tmp_path / "b")).settings["time_limit"] == PRESETS["default"]["time_limit"]


def test_resume_keeps_the_runs_configuration_and_refuses_to_change_its_shape(trained, tmp_path):
    corpus, run = trained
    resumed = plan(ask(corpus, run, {"steps": 10, "lr": 1e-3}, resume=""))
    assert resumed.source == run / "latest.npz" and resumed.resume is not None
    assert resumed.settings["hidden"] == SMALL["hidden"] and resumed.settings["lr"] == 1e-3
    assert resumed.settings["steps"] == 10
    for change in ({"hidden": 16}, {"batch_size": 8}, {"optimizer": "sgd"}, {"encoding": "latin-1"}):
        with pytest.raises(CharrnnError, match="cannot change on resume"):
            plan(ask(corpus, run, change, resume=""))


def test_resume_refuses_a_preset_and_init_from(trained):
    corpus, run = trained
    with pytest.raises(CharrnnError, match="--preset cannot be combined with --resume"):
        plan(ask(corpus, run, resume="", preset_given=True))
    with pytest.raises(CharrnnError, match="give only one of them"):
        plan(ask(corpus, run, resume="", init_from=run))


def test_resume_path_takes_a_file_a_directorys_latest_or_outs_latest(tmp_path):
    assert resume_path("", tmp_path / "out") == tmp_path / "out" / "latest.npz"
    assert resume_path(str(tmp_path), tmp_path / "out") == tmp_path / "latest.npz"
    assert resume_path(str(tmp_path / "x.npz"), tmp_path / "out") == tmp_path / "x.npz"


def test_a_new_run_never_replaces_another_runs_checkpoints(trained, tmp_path):
    corpus, run = trained
    with pytest.raises(CharrnnError, match="holds another run's best.npz and latest.npz; continue it with --resume"):
        plan(ask(corpus, run, SMALL))
    assert plan(ask(corpus, run, SMALL, overwrite=True)).resume is None
    elsewhere = tmp_path / "elsewhere"
    open_run(ask(corpus, elsewhere, SMALL)).run()
    with pytest.raises(CharrnnError, match="holds another run's"):  # resuming one run into another's directory
        plan(ask(corpus, elsewhere, {"steps": 9}, resume=str(run)))
    assert plan(ask(corpus, run, {"steps": 9}, resume=str(run))).source == run / "latest.npz"  # its own


def test_init_from_takes_the_trained_shape_and_refuses_another(trained, tmp_path):
    corpus, run = trained
    tuned = plan(ask(corpus, tmp_path / "tuned", {"lr": 1e-3, "dropout": 0.3}, init_from=run))
    assert tuned.init_from.path == run / "best.npz"
    assert tuned.settings["hidden"] == SMALL["hidden"] and tuned.settings["layers"] == SMALL["layers"]
    assert tuned.settings["dropout"] == 0.3 and tuned.settings["lr"] == 1e-3
    with pytest.raises(CharrnnError, match="--hidden 32 differs from --init-from's 8"):
        plan(ask(corpus, tmp_path / "tuned", {"hidden": 32}, init_from=run))


def test_find_checkpoint_reads_a_directory_as_its_best_then_its_latest(trained, tmp_path, monkeypatch):
    _, run = trained
    assert find_checkpoint(run) == run / "best.npz"
    (run / "best.npz").unlink()
    assert find_checkpoint(run) == run / "latest.npz"
    assert find_checkpoint(run / "any.npz") == run / "any.npz"  # a file as named; loading explains the rest
    with pytest.raises(CharrnnError, match="a directory with no best.npz or latest.npz"):
        find_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CharrnnError, match="no CHECKPOINT given"):
        find_checkpoint(None)
    monkeypatch.setattr(policy, "DEFAULT_OUT", run)
    assert find_checkpoint(None) == run / "latest.npz"


def test_open_run_checks_the_corpus_and_the_length_of_a_resumed_run(trained):
    corpus, run = trained
    with pytest.raises(CharrnnError, match=r"already reaches --steps 3"):
        open_run(ask(corpus, run, resume=""))
    assert open_run(ask(corpus, run, {"steps": 5}, resume="")).progress.step == 3
    corpus.write_text(TEXT.replace("pigs", "pogs"))
    with pytest.raises(CharrnnError, match="differs from the corpus this checkpoint was trained on"):
        open_run(ask(corpus, run, {"steps": 5}, resume=""))
    assert open_run(ask(corpus, run, {"steps": 5}, resume="", force=True)).progress.step == 3


def test_open_run_refuses_an_unwritable_output(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CharrnnError, match="cannot write checkpoints to"):
        open_run(ask(corpus, blocker / "out", SMALL))
