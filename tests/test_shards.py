"""Data parallelism: shards compute what the whole batch computes; errors, float-error handling, dead workers and
BLAS threads are dealt with across the worker processes; the trainer's sharded run is deterministic and resumes
exactly."""

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import arrays, assert_gone, make_trainer, strip_timing

from charrnn.core.model import Model, ModelConfig
from charrnn.errors import CharrnnError
from charrnn.fast import blas, gemm, machine, shards, tuning
from charrnn.fast.shards import Sharded, WorkerDied, shard_bounds, shard_count
from charrnn.store import checkpoint

V, N, T = 11, 7, 6


@pytest.fixture(autouse=True)
def fast_on(monkeypatch):
    """Sharding is what these tests test: on, whatever CHARRNN_FAST says (CI's second pass sets it to 0)."""
    monkeypatch.delenv(machine.SWITCH, raising=False)


def least_streams(monkeypatch, streams: int | None = 1):
    """This machine's verdict, but a shard needs this many streams (None: never shard); by default, shard even
    tiny batches."""
    real = machine.verdict()
    tuned = {**real.tuned, "min streams": tuning.choice(streams, "a test")}
    monkeypatch.setattr(machine, "verdict", lambda: dataclasses.replace(real, tuned=tuned))


@pytest.fixture
def any_batch(monkeypatch):
    least_streams(monkeypatch)


def make_model(cell, dropout=0.0, layers=2):
    cfg = ModelConfig(vocab_size=V, cell=cell, layers=layers, hidden=5, dropout=dropout, dtype="float64")
    return Model.create(cfg, np.random.default_rng(3))


def chunk(model):
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, V, (N, T)), rng.integers(0, V, (N, T))
    state = tuple(rng.standard_normal(s.shape) for s in model.initial_state(N))  # a carried, non-zero state
    return x, y, state


def test_shard_count_gives_each_core_at_least_the_streams_the_verdict_says(monkeypatch):
    least_streams(monkeypatch, 16)
    assert shard_count(32, 2) == 2 and shard_count(64, 8) == 4 and shard_count(200, 2) == 2
    assert shard_count(31, 2) == 1 and shard_count(16, 2) == 1  # too few streams for two shards
    assert shard_count(64, None) == 1 and shard_count(64, 1) == 1  # cores unknown, or one
    least_streams(monkeypatch, 8)
    assert shard_count(16, 2) == 2 and shard_count(15, 2) == 1 and shard_count(64, 4) == 4
    least_streams(monkeypatch, None)  # BLAS's threads beat shards of any size here
    assert shard_count(64, 2) == 1 and shard_count(1024, 8) == 1


def test_no_fork_no_shards(monkeypatch):
    monkeypatch.setattr(shards.sys, "platform", "darwin")
    assert shard_count(64, 2) == 1


def test_shard_bounds_cover_the_batch_in_order():
    assert shard_bounds(7, 3) == [slice(0, 2), slice(2, 4), slice(4, 7)]
    assert shard_bounds(32, 2) == [slice(0, 16), slice(16, 32)]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sharded_loss_grads_and_state_equal_the_whole_batch(any_batch, cell):
    """Uneven shards (2, 2, 3 streams), dropout and a carried state: float64 agrees to rounding."""
    model = make_model(cell, dropout=0.3)
    x, y, state = chunk(model)
    rng_whole, rng_sharded = np.random.default_rng(5), np.random.default_rng(5)
    loss, grads, final = model.loss_and_grads(x, y, state, rng_whole)
    s_loss, s_grads, s_final = Sharded(model, cores=3).loss_and_grads(x, y, state, rng_sharded)
    assert s_loss == pytest.approx(loss, rel=1e-12)
    assert s_grads.keys() == grads.keys()
    for name in grads:
        np.testing.assert_allclose(s_grads[name], grads[name], rtol=1e-10, atol=1e-13, err_msg=name)
    for a, b in zip(s_final, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert rng_sharded.random() == rng_whole.random()  # the masks came from the same draws


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sharded_surprisal_equals_the_whole_batch(any_batch, cell):
    """Every stream's every surprisal, in order, from uneven shards; the same sum as evaluate's."""
    model = make_model(cell)
    x, y, state = chunk(model)
    nats, final = model.surprisal(x, y, state)
    s_nats, s_final = Sharded(model, cores=3).surprisal(x, y, state)
    assert s_nats.shape == (N, T)
    np.testing.assert_allclose(s_nats, nats, rtol=1e-12)
    for a, b in zip(s_final, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert nats.sum() == pytest.approx(model.evaluate(x, y, state)[0], rel=1e-12)
    assert nats[2, 3] == pytest.approx(model.surprisal(x[2:3], y[2:3], tuple(s[:, 2:3] for s in state))[0][0, 3])


def test_sharded_evaluate_equals_the_whole_batch(any_batch):
    model = make_model("lstm")
    x, y, state = chunk(model)
    loss, count, final = model.evaluate(x, y, state)
    s_loss, s_count, s_final = Sharded(model, cores=2).evaluate(x, y, state)
    assert s_count == count == N * T and s_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(s_final[0], final[0], rtol=1e-12)


def test_one_shard_is_the_model_itself(monkeypatch):
    least_streams(monkeypatch, 16)
    model = make_model("gru")
    x, y, state = chunk(model)
    loss, grads, _ = model.loss_and_grads(x, y, state)
    s_loss, s_grads, _ = Sharded(model, cores=2).loss_and_grads(x, y, state)  # 7 < 2 x the 16 streams a shard needs
    assert s_loss == loss and all(np.array_equal(s_grads[k], grads[k]) for k in grads)


def test_an_error_in_a_worker_reaches_the_caller_and_leaves_no_stale_result(any_batch):
    model = make_model("rnn")
    x, y, state = chunk(model)
    sharded = Sharded(model, cores=2)
    expected = sharded.loss_and_grads(x, y, state)[0]
    bad = y.copy()
    bad[-1, 0] = V  # a target outside the vocabulary, in the worker's shard only
    with pytest.raises(IndexError):
        sharded.loss_and_grads(x, bad, state)
    assert sharded.loss_and_grads(x, y, state)[0] == expected
    sharded.close()


def test_an_error_here_stops_the_workers_so_no_answer_is_read_late(any_batch):
    """The first shard fails in this process while the worker computes: its answer must not be taken for the
    next call's."""
    model = make_model("lstm")
    x, y, state = chunk(model)
    sharded = Sharded(model, cores=2)
    expected = sharded.loss_and_grads(x, y, state)
    bad = y.copy()
    bad[0, 0] = V  # in this process's shard
    with pytest.raises(IndexError):
        sharded.loss_and_grads(x, bad, state)
    x2 = np.roll(x, 1, axis=1)
    other = model.loss_and_grads(x2, y, state)[0]
    assert sharded.loss_and_grads(x2, y, state)[0] == pytest.approx(other, rel=1e-12)
    assert sharded.loss_and_grads(x, y, state)[0] == pytest.approx(expected[0], rel=1e-12)
    sharded.close()


def test_a_dead_worker_is_one_clear_error_and_the_next_call_starts_afresh(any_batch):
    model = make_model("gru")
    x, y, state = chunk(model)
    sharded = Sharded(model, cores=2)
    expected = sharded.loss_and_grads(x, y, state)[0]
    (worker,) = sharded._workers
    os.kill(worker.pid, signal.SIGKILL)
    os.waitpid(worker.pid, 0)
    worker.exit_code = -signal.SIGKILL  # reaped here
    with pytest.raises(WorkerDied, match="worker process .* died"):
        sharded.loss_and_grads(x, y, state)
    assert sharded.loss_and_grads(x, y, state)[0] == expected
    sharded.close()
    assert not any(w.alive() for w in sharded._workers)


def test_a_dead_worker_keeps_every_finished_step(tmp_path, monkeypatch):
    """The trainer saves latest.npz at the last finished step and says so (one line: a CharrnnError), and the run
    resumes from it."""
    assert issubclass(WorkerDied, CharrnnError)
    trainer = make_trainer(tmp_path, 12)
    real = trainer.engine.sharded.loss_and_grads

    def dies_at_step_8(*args, **kwargs):
        if trainer.progress.step == 7:
            raise WorkerDied("a worker process of the sharded step died (exit code -9)")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer.engine.sharded, "loss_and_grads", dies_at_step_8)
    with pytest.raises(WorkerDied, match=r"died \(exit code -9\); .*latest.npz holds step 7, and --resume"):
        trainer.run()
    assert checkpoint.load(tmp_path / "latest.npz").meta["progress"]["step"] == 7
    resumed = make_trainer(tmp_path, 12, resume=True)
    resumed.run()
    assert resumed.progress.step == 12


def test_workers_run_under_the_callers_float_error_handling(any_batch, monkeypatch):
    """An infinite carried state in the worker's streams only: its GEMM makes inf - inf there, and raises or not
    as the caller's np.errstate of the moment says, not as it was when the worker was forked.  np.matmul's GEMM:
    it checks the float flags after BLAS returns, the kernels on packed weights (charrnn.fast.packed) do not."""
    monkeypatch.setattr(gemm, "packs", lambda dtype: False)  # before the fork: the worker has it too
    model = make_model("rnn")
    x, y, finite = chunk(model)
    infinite = tuple(s.copy() for s in finite)
    infinite[0][:, -1] = np.inf
    for forked_under, now in (("ignore", "raise"), ("raise", "ignore")):
        sharded = Sharded(model, cores=2)
        with np.errstate(all=forked_under):
            sharded.loss_and_grads(x, y, finite)  # forks the worker
        with np.errstate(all=now):
            if now == "raise":
                with pytest.raises(FloatingPointError):
                    sharded.loss_and_grads(x, y, infinite)
            else:
                assert np.isnan(sharded.loss_and_grads(x, y, infinite)[0])
        sharded.close()


def test_workers_stop_with_their_sharded(any_batch):
    model = make_model("rnn")
    sharded = Sharded(model, cores=3)
    sharded.evaluate(*chunk(model))
    pids = [w.pid for w in sharded._workers]
    assert len(pids) == 2
    del sharded
    for pid in pids:
        with pytest.raises(ChildProcessError):  # gone, and reaped
            os.waitpid(pid, os.WNOHANG)


def test_a_program_that_never_closes_its_sharded_still_exits(tmp_path):
    """Interpreter exit stops the workers, whatever order the exit handlers run in (multiprocessing's sends
    SIGTERM to its own processes, which a worker would ignore)."""
    code = ("import numpy as np\n"
            "from charrnn.fast import machine, shards\n"
            "from charrnn.core.model import Model, ModelConfig\n"
            "machine.verdict = lambda: machine.Verdict({}, {'min streams': {'value': 1, 'why': 'a test'}})\n"
            "m = Model.create(ModelConfig(vocab_size=5, cell='rnn', hidden=4, layers=1), np.random.default_rng(0))\n"
            "sharded = shards.Sharded(m, cores=2)\n"
            "x = np.zeros((4, 3), np.int64)\n"
            "sharded.loss_and_grads(x, x, m.initial_state(4))\n"
            "print(sharded._workers[0].pid)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    assert_gone(lambda: os.kill(pid, 0), "the worker of a program that ended")


@pytest.mark.skipif(blas.threads() is None, reason="no OpenBLAS found to control")
def test_single_threaded_blas_inside_the_block_and_as_configured_after():
    before = blas.threads()
    with blas.single_threaded():
        assert blas.threads() == 1
    assert blas.threads() == before
    with pytest.raises(KeyError), blas.single_threaded():
        raise KeyError
    assert blas.threads() == before


def test_sharded_training_is_deterministic_and_resumes_exactly(tmp_path, monkeypatch, any_batch):
    """The trainer shards a batch of 8 four ways here; two runs agree bit for bit, and so does a resumed one."""
    monkeypatch.setattr(blas, "threads", lambda: 4)
    first, second, split = tmp_path / "first", tmp_path / "second", tmp_path / "split"
    trainer = make_trainer(first, 12, batch_size=8)
    assert trainer.engine.sharded.shards(8) == 4
    trainer.run()
    make_trainer(second, 12, batch_size=8).run()
    make_trainer(split, 7, batch_size=8).run()
    make_trainer(split, 12, resume=True, batch_size=8).run()
    reference = arrays(first / "latest.npz")
    for other in (second, split):
        got = arrays(other / "latest.npz")
        assert got.keys() == reference.keys()
        assert all(np.array_equal(got[k], reference[k]) for k in reference)
        assert strip_timing(checkpoint.load(other / "latest.npz").meta)["history"][-1] == strip_timing(
            checkpoint.load(first / "latest.npz").meta)["history"][-1]


def test_sharded_training_follows_the_unsharded_run(tmp_path, monkeypatch, any_batch):
    """Only the order of float sums differs: in float64 the two runs end on the same weights to ~1e-9."""
    model = dict(hidden=16, layers=2, dropout=0.1, dtype="float64")
    make_trainer(tmp_path / "whole", 10, batch_size=8, model=model).run()
    monkeypatch.setattr(blas, "threads", lambda: 2)
    make_trainer(tmp_path / "sharded", 10, batch_size=8, model=model).run()
    whole, sharded = (arrays(Path(tmp_path) / d / "latest.npz") for d in ("whole", "sharded"))
    for k in whole:
        np.testing.assert_allclose(sharded[k], whole[k], rtol=1e-7, atol=1e-9, err_msg=k)
