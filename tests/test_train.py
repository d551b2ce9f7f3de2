"""The training loop: learning, exact resume, determinism, schedules, divergence, signals and kills."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn.core.model import ModelConfig
from charrnn.errors import CharrnnError
from charrnn.runs.evaluate import VAL_STREAMS
from charrnn.runs.schedule import epoch_offset, learning_rate
from charrnn.runs.train import Diverged, TrainConfig, Trainer, validation_loss
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

TEXT = "".join(f"line {i}: the quick brown fox {'jumps' if i % 3 else 'naps'} over the lazy dog.\n" for i in range(60))
TIMING = ("elapsed", "chars_per_s")  # wall-clock fields, the only ones allowed to differ between identical runs


def make_trainer(out, steps, resume=False, text=TEXT, model=None, **options):
    corpus = corpus_from_text(text, "fox.txt")
    cfg = TrainConfig(**{**dict(seq_len=16, batch_size=4, val_frac=0.1, eval_every=5, save_every=5, steps=steps,
                                seed=7), **options})
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **(model or dict(hidden=16, layers=2, dropout=0.1)))
    ck = checkpoint.load(Path(out) / "latest.npz", resume=True) if resume else None
    return Trainer(corpus, model_cfg, cfg, out, resume=ck)


def arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def strip_timing(meta):
    meta = dict(meta)
    meta["history"] = [{k: v for k, v in h.items() if k not in TIMING} for h in meta["history"]]
    meta["progress"] = {k: v for k, v in meta["progress"].items() if k not in TIMING}
    return meta


def test_training_reduces_loss_and_writes_checkpoints(tmp_path):
    outcome = make_trainer(tmp_path, 60, model=dict(hidden=32, layers=1), lr=1e-2).run()
    assert outcome.reason == "steps" and outcome.exit_code == 0
    ck = checkpoint.load(tmp_path / "latest.npz")
    history = ck.meta["history"]
    assert [h["step"] for h in history] == list(range(5, 61, 5))
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1.0
    assert ck.meta["best_val_loss"] == min(h["val_loss"] for h in history)
    best = checkpoint.load(tmp_path / "best.npz")
    assert best.meta["progress"]["step"] == ck.meta["best_step"]
    assert ck.meta["corpus"]["name"] == "fox.txt" and len(ck.meta["corpus"]["sha256"]) == 64


def test_validation_uses_the_same_streams_whatever_the_training_batch(tmp_path):
    """The recorded validation loss is the last model scored in VAL_STREAMS streams (fewer if the split is short),
    so runs with different batch sizes compare directly, and `charrnn eval` gives the same figure."""
    make_trainer(tmp_path, 10, batch_size=4).run()
    ck = checkpoint.load(tmp_path / "latest.npz")
    _, val = corpus_from_text(TEXT, "fox.txt").split(0.1)
    recorded = ck.meta["history"][-1]["val_loss"]
    assert recorded == pytest.approx(validation_loss(ck.model, val, VAL_STREAMS, 16), rel=1e-6)
    assert recorded != pytest.approx(validation_loss(ck.model, val, 4, 16), rel=1e-6)


def test_resume_is_bit_identical_to_training_straight_through(tmp_path):
    """Dropout (RNG), an epoch boundary (state reset) and Adam state all have to survive the stop."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    trainer = make_trainer(straight, 30, batch_size=8)
    chunks = trainer.streams.chunks
    assert 15 < chunks < 30, "the run must cross an epoch boundary after the resume point"
    trainer.run()
    make_trainer(split, 15, batch_size=8).run()
    resumed = make_trainer(split, 30, resume=True, batch_size=8)
    assert resumed.progress.step == 15
    resumed.run()
    a, b = arrays(straight / "latest.npz"), arrays(split / "latest.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    history = checkpoint.load(split / "latest.npz").meta["history"]
    steps = [h["step"] for h in history]
    assert steps == sorted(steps) and steps[0] == 5 and steps[-1] == 30  # history continues across the resume


def test_resume_refuses_a_corpus_encoded_with_another_vocabulary(tmp_path):
    make_trainer(tmp_path, 5).run()
    with pytest.raises(CharrnnError, match="the checkpoint's vocabulary"):
        make_trainer(tmp_path, 10, resume=True, text=TEXT.replace("z", "Z"))  # same size, other characters


def test_same_seed_same_checkpoint(tmp_path):
    make_trainer(tmp_path / "a", 12).run()
    make_trainer(tmp_path / "b", 12).run()
    a, b = checkpoint.load(tmp_path / "a/latest.npz"), checkpoint.load(tmp_path / "b/latest.npz")
    for x, y in zip(arrays(tmp_path / "a/latest.npz").values(), arrays(tmp_path / "b/latest.npz").values(),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    assert strip_timing(a.meta) == strip_timing(b.meta)
    make_trainer(tmp_path / "c", 12, seed=8).run()
    assert not np.array_equal(arrays(tmp_path / "a/latest.npz")["weight_hh_l0"],
                              arrays(tmp_path / "c/latest.npz")["weight_hh_l0"])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_cell_trains(tmp_path, cell):
    outcome = make_trainer(tmp_path, 20, model=dict(cell=cell, hidden=24, layers=1)).run()
    history = checkpoint.load(tmp_path / "latest.npz").meta["history"]
    assert outcome.exit_code == 0 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_epochs_limit_and_state_reset(tmp_path):
    trainer = make_trainer(tmp_path, None, epochs=1)
    outcome = trainer.run()
    assert outcome.reason == "epochs" and trainer.progress.step == trainer.streams.chunks
    assert trainer.progress.chunk == 0 and all(not s.any() for s in trainer.engine.state)  # reset at the epoch boundary


def test_epoch_offsets_are_fresh_per_epoch_and_fixed_by_the_seed():
    cfg, n = TrainConfig(seed=3), 10_000
    offsets = [epoch_offset(cfg, e, n) for e in range(6)]
    assert offsets[0] == 0  # the first epoch is char-rnn's layout
    assert all(0 <= r < n for r in offsets) and len(set(offsets[1:])) == 5
    assert offsets == [epoch_offset(TrainConfig(seed=3), e, n) for e in range(6)]
    assert offsets[1:] != [epoch_offset(TrainConfig(seed=4), e, n) for e in range(1, 6)]
    assert [epoch_offset(TrainConfig(seed=3, rotate=False), e, n) for e in range(6)] == [0] * 6


@pytest.mark.parametrize("rotate", [True, False])
def test_second_epoch_sees_new_chunks_only_when_rotating(tmp_path, rotate):
    trainer = make_trainer(tmp_path, None, epochs=2, rotate=rotate)
    seen, batch = [], trainer.streams.batch

    def recording_batch(*args, **kwargs):
        seen.append(batch(*args, **kwargs))
        return seen[-1]

    trainer.streams.batch = recording_batch
    trainer.run()
    chunks = trainer.streams.chunks
    assert len(seen) == 2 * chunks
    same = [np.array_equal(seen[j][0], seen[chunks + j][0]) for j in range(chunks)]
    assert not any(same) if rotate else all(same)


def test_learning_rate_schedules():
    cfg = TrainConfig(lr=1.0, warmup=10, lr_schedule="cosine", lr_min=0.1)
    assert learning_rate(cfg, 0, 0, 110) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0, 110) == pytest.approx(1.0)
    assert learning_rate(cfg, 60, 0, 110) == pytest.approx(0.55)
    assert learning_rate(cfg, 110, 0, 110) == pytest.approx(0.1)
    step = TrainConfig(lr=1.0, lr_schedule="step", lr_decay=0.5, lr_decay_after=2)
    assert [learning_rate(step, 0, e, None) for e in (0.5, 2.9, 3.0, 4.5)] == [1.0, 1.0, 0.5, 0.25]
    assert learning_rate(TrainConfig(lr=0.3), 1000, 7, None) == 0.3
    timed = TrainConfig(lr=1.0, lr_schedule="cosine", lr_min=0.0, time_limit=600)
    assert [learning_rate(timed, 500, 0, None, f) for f in (0.0, 0.5, 1.0, 1.7)] == pytest.approx([1, 0.5, 0, 0])
    assert learning_rate(TrainConfig(lr=1e308, warmup=200), 198, 0, None) == pytest.approx(0.995e308)  # finite


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    make_trainer(tmp_path, 5, optimizer="sgd", clip=0.0, lr=1e-3).run()
    before = (tmp_path / "latest.npz").read_bytes()
    trainer = make_trainer(tmp_path, 20, resume=True, optimizer="sgd", clip=0.0, lr=1e38)
    with pytest.raises(Diverged, match=r"diverged at step \d+: the (loss|gradient norm) is (nan|inf).*--lr"):
        trainer.run()
    assert (tmp_path / "latest.npz").read_bytes() == before
    assert checkpoint.load(tmp_path / "latest.npz").meta["progress"]["step"] == 5


def charrnn_command():
    return [sys.executable, "-m", "charrnn"]


def start_training(tmp_path, *extra, sharded=False):
    """charrnn train in its own session (process group); sharded: B 32 over the cores, in worker processes where
    there is more than one core, else B 4 in one process."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 20)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"} if sharded else {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*charrnn_command(), "train", str(corpus), "--out", str(tmp_path / "ck"), "-B", "32" if sharded else "4",
         "-T", "16", "-H", "32", "--steps", "100000", "--save-every", "1", "--eval-every", "1000", "--log-every",
         "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, start_new_session=True,
    )


def wait_for_step(proc, minimum):
    """Read log lines until one reports a step >= minimum."""
    for line in proc.stdout:
        if line.startswith("step ") and "/" in line and int(line.split()[1].split("/")[0]) >= minimum:
            return
    raise AssertionError(f"training ended early: {proc.stderr.read()}")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("to_group", [False, True], ids=["to-process", "to-group-sharded"])
def test_signal_saves_and_exits_cleanly(tmp_path, sig, code, to_group):
    """Also as a terminal's Ctrl-C does it, to the whole process group of a sharded run: the worker processes
    leave the signal to the trainer, which saves, and none of them outlives it."""
    proc = start_training(tmp_path, "--save-every", "100000", sharded=to_group)
    wait_for_step(proc, 3)
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "saved" in err and "--resume" in err
    ck = checkpoint.load(tmp_path / "ck" / "latest.npz")
    assert ck.meta["progress"]["step"] >= 3
    assert_group_ends(proc.pid)


def assert_gone(probe, what, seconds=5.0):
    """probe() (os.kill or os.killpg with signal 0) raises ProcessLookupError within a few seconds: what it
    probes, a process or a whole group, is gone."""
    for _ in range(int(seconds / 0.1)):
        try:
            probe()
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} outlived it")


def assert_group_ends(pgid):
    """Every process of the group (the trainer and its workers) is gone within a few seconds."""
    assert_gone(lambda: os.killpg(pgid, 0), "a process of the run")


def test_workers_end_when_the_trainer_is_killed(tmp_path):
    """kill -9 gives the trainer no chance to stop its workers: they see their pipe close and leave."""
    proc = start_training(tmp_path, sharded=True)
    wait_for_step(proc, 2)
    proc.kill()
    proc.communicate(timeout=60)
    assert_group_ends(proc.pid)


def test_sigkill_never_leaves_an_unloadable_checkpoint(tmp_path):
    """latest.npz is rewritten every step; kill -9 at several moments, it must always load."""
    latest = tmp_path / "ck" / "latest.npz"
    for delay in (0.0, 0.013, 0.031, 0.057):
        proc = start_training(tmp_path, *(["--resume"] if latest.exists() else []))
        wait_for_step(proc, 2)
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
        ck = checkpoint.load(latest)
        assert ck.meta["progress"]["step"] >= 1 and math.isfinite(ck.meta["progress"]["elapsed"])


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_validation_stops_it_and_saves(tmp_path, sig, code):
    """Validation of a big held-out split (--val-chars all: here some 20 s of scoring) is cut short by a
    signal: the run saves its last step and exits, with no validation row for the step it was cut at."""
    corpus = tmp_path / "big.txt"
    corpus.write_text(TEXT * 300)  # 1.4 MB, 0.7 MB of it held out
    proc = subprocess.Popen(
        [*charrnn_command(), "train", str(corpus), "--out", str(tmp_path / "ck"), "-B", "4", "-T", "16", "-H", "256",
         "--steps", "1000", "--eval-every", "2", "--val-frac", "0.5", "--val-chars", "all", "--log-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, text=True,
        start_new_session=True)
    wait_for_step(proc, 2)  # the log line comes before the step's validation
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)  # the whole validation would take longer
    assert proc.returncode == code, err
    assert "Traceback" not in err and "saved" in err
    ck = checkpoint.load(tmp_path / "ck" / "latest.npz")
    assert ck.meta["progress"]["step"] == 2 and ck.meta["history"] == []


def test_validation_scores_fixed_windows_spread_over_the_split(tmp_path):
    """--val-chars: the same windows every time, one at the start of each of VAL_STREAMS streams, so a curve
    compares across a run; the whole split when it is shorter."""
    make_trainer(tmp_path, 4, val_frac=0.5, val_chars=640, eval_every=2).run()
    ck = checkpoint.load(tmp_path / "latest.npz")
    _, val = corpus_from_text(TEXT, "fox.txt").split(0.5)
    recorded = ck.meta["history"][-1]["val_loss"]
    assert recorded == pytest.approx(validation_loss(ck.model, val, VAL_STREAMS, 16, limit=640), rel=1e-6)
    assert recorded != pytest.approx(validation_loss(ck.model, val, VAL_STREAMS, 16), rel=1e-6)
    assert validation_loss(ck.model, val, VAL_STREAMS, 16, limit=10**9) == validation_loss(ck.model, val,
                                                                                              VAL_STREAMS, 16)
