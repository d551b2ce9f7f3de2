"""The torch engine: against the NumPy engine, across engines by checkpoint, in two processes, under SIGTERM and when
a process dies.  float64 on the CPU (and on CUDA where there is one), gloo on localhost; every test is bounded in
time.  Skipped where torch is missing: `make test-torch` installs it (the `torch` extra) and runs these."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli.commands import main
from charrnn.core.model import ModelConfig
from charrnn.core.optim import OPTIMIZERS
from charrnn.errors import CharrnnError
from charrnn.runs.train import Reporter, TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import corpus_from_text

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TEXT = "".join(f"line {i}: the quick brown fox {'jumps' if i % 3 else 'naps'} over the lazy dog.\n" for i in range(12))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CELLS, OPTIMISERS, CLIPS = ("lstm", "gru", "rnn"), list(OPTIMIZERS), {"norm": 0.1, "value": 0.01}
# Every cell with 1 and 2 layers under both clipping modes, and the optimisers taken in turn: each optimiser meets
# both clipping modes (the optimisers and the cells never touch each other's arithmetic)
RUNS = [(cell, layers, mode, OPTIMISERS[i % len(OPTIMISERS)])
        for i, (cell, layers, mode) in enumerate((c, n, m) for c in CELLS for n in (1, 2) for m in CLIPS)]
TIMEOUT = 240  # seconds a run of two processes may take, torch's import (seconds on a busy machine) included


class Norms(Reporter):
    """Remembers every step's pre-clip gradient norm."""

    def __init__(self):
        self.norms = []

    def step(self, stats):
        self.norms.append(stats["norm"])


def trainer(out, steps, engine="torch", resume=False, model=None, device=None, **options) -> Trainer:
    """A float64 run of B 4, T 8 on TEXT: an epoch is 12 steps, so 20 steps cross an epoch boundary."""
    corpus = corpus_from_text(TEXT, "fox.txt")
    cfg = TrainConfig(**{**dict(seq_len=8, batch_size=4, val_frac=0.1, eval_every=10, save_every=10, steps=steps,
                                lr=1e-2, seed=3), **options})
    model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **{**dict(hidden=8, layers=2, dtype="float64"),
                                                              **(model or {})})
    ck = checkpoint.load(Path(out) / "latest.npz", resume=True) if resume else None
    return Trainer(corpus, model_cfg, cfg, out, resume=ck, engine=engine, device=device)


def arrays(path) -> dict:
    """A checkpoint's arrays, less the torch engine's RNG (the NumPy engine has its generator's state in meta)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k not in ("meta", "rng.torch")}


def assert_close(a: Path, b: Path, tol: float = 1e-9) -> None:
    """Parameters, optimiser state and carried state agree to tol."""
    a, b = arrays(a), arrays(b)
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]), initial=0)) for k in a)
    assert worst <= tol, f"the checkpoints differ by {worst:.3g}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell, layers, clip_mode, optimizer", RUNS)
def test_the_torch_engine_trains_as_the_numpy_engine(tmp_path, device, cell, layers, clip_mode, optimizer):
    """20 steps without dropout, weight decay on (decoupled for adamw), clipping biting: the same parameters,
    optimiser state and carried state to 1e-9."""
    options = dict(optimizer=optimizer, clip=CLIPS[clip_mode], clip_mode=clip_mode, weight_decay=0.01)
    for engine in ("numpy", "torch"):
        run = trainer(tmp_path / engine, 20, engine, model=dict(cell=cell, layers=layers), device=device, **options)
        run.reporter = Norms()
        run.run()
        assert max(run.reporter.norms) > CLIPS[clip_mode]  # the clipping did something
    assert_close(tmp_path / "numpy" / "latest.npz", tmp_path / "torch" / "latest.npz")


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_run_and_resume_is_bit_identical(tmp_path, device):
    """With dropout (the engine's generator, kept in the checkpoint) and across an epoch boundary."""
    options = dict(model=dict(dropout=0.2), device=device)
    trainer(tmp_path / "a", 20, **options).run()
    trainer(tmp_path / "b", 20, **options).run()
    trainer(tmp_path / "split", 10, **options).run()
    trainer(tmp_path / "split", 20, resume=True, **options).run()
    reference = np.load(tmp_path / "a" / "latest.npz")
    for other in ("b", "split"):
        with np.load(tmp_path / other / "latest.npz") as z:
            assert z.files == reference.files
            for k in z.files:
                if k != "meta":
                    np.testing.assert_array_equal(z[k], reference[k], err_msg=k)
    reference.close()
    trainer(tmp_path / "c", 20, **options, seed=4).run()
    assert not np.array_equal(arrays(tmp_path / "a" / "latest.npz")["weight_hh_l0"],
                              arrays(tmp_path / "c" / "latest.npz")["weight_hh_l0"])


@pytest.mark.parametrize("first, then", [("numpy", "torch"), ("torch", "numpy")])
def test_a_run_resumes_on_the_other_engine(tmp_path, first, then):
    """10 steps on one engine, then --resume on the other to 20: as 20 on the first.  Through the command line."""
    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT)
    options = ["-B", "4", "-T", "8", "-H", "8", "-L", "2", "--dtype", "float64", "--dropout", "0", "--seed", "3",
               "--eval-every", "10", "--save-every", "10", "--optimizer", "adam", "--lr", "0.01"]

    def train(out, steps, engine, *more):
        result = CliRunner().invoke(main, ["train", str(corpus), "--out", str(out), "--steps", str(steps),
                                           "--engine", engine, *options, *more])
        assert result.exit_code == 0, result.output

    train(tmp_path / "straight", 20, first)
    train(tmp_path / "moved", 10, first)
    train(tmp_path / "moved", 20, then, "--resume")
    assert checkpoint.load(tmp_path / "moved" / "latest.npz").meta["engine"]["name"] == then
    assert_close(tmp_path / "straight" / "latest.npz", tmp_path / "moved" / "latest.npz")


def test_a_torch_checkpoint_serves_sample_inspect_eval_and_export_unchanged(tmp_path):
    run = trainer(tmp_path / "ck", 20)
    run.run()
    path = tmp_path / "ck" / "latest.npz"
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    ck = checkpoint.load(path)
    assert ck.meta["engine"] == {"name": "torch", "device": str(run.engine.device), "processes": 1}
    runner = CliRunner()
    sampled = runner.invoke(main, ["sample", str(path), "-n", "50", "--seed", "1"])
    assert sampled.exit_code == 0 and len(sampled.stdout) == 51, sampled.output
    facts = json.loads(runner.invoke(main, ["inspect", str(path), "--json"]).stdout)
    assert facts["training"]["steps"] == 20 and facts["training"]["resumable"]
    val = tmp_path / "val.txt"  # the validation split as a file: the NumPy engine's score is the torch engine's
    val.write_text(TEXT[len(TEXT) - len(run.val_data):])
    scored = json.loads(runner.invoke(main, ["eval", str(path), str(val), "--json"]).stdout)
    assert scored["loss"] == pytest.approx(ck.meta["history"][-1]["val_loss"], rel=1e-9)
    exported = runner.invoke(main, ["export", str(path), str(tmp_path / "torch.npz")])
    assert exported.exit_code == 0, exported.output
    with np.load(tmp_path / "torch.npz") as z:
        for name, p in ck.model.params.items():
            np.testing.assert_array_equal(z[name if name.startswith("decoder") else f"rnn.{name}"], p)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_lstm_variants_and_missing_devices_are_one_line(tmp_path):
    with pytest.raises(CharrnnError, match="no peephole or coupled gates; train this model with --engine numpy"):
        trainer(tmp_path, 5, model=dict(peephole=True))
    if not torch.cuda.is_available():
        with pytest.raises(CharrnnError, match="this machine has 0 CUDA device"):
            trainer(tmp_path, 5, device="cuda")


# -- many processes: `charrnn train --procs 2`, as a user starts it ---------------------------------------------

def launch(tmp_path, out, *args) -> subprocess.Popen:
    """`charrnn train` of the TEXT corpus in two processes on the CPU (gloo), in a session of its own, so a test
    can stop it all."""
    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT)
    command = [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out), "--engine", "torch",
               "--device", "cpu", "--procs", "2", "-B", "4", "-T", "8", "-H", "8", "-L", "2", "--dtype", "float64",
               "--seed", "3", "--lr", "0.01", "--lr-schedule", "constant", "--warmup", "0", "--eval-every", "10",
               "--save-every", "5", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """Wait for a launched run (killing it all past TIMEOUT): (exit code, stdout, stderr)."""
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the run did not finish in {TIMEOUT} s:\n{err}")
    return process.returncode, out, err


def wait_for(path: Path, process: subprocess.Popen, step: int = 1) -> None:
    """Until the running run has saved path at `step` or later."""
    deadline = time.monotonic() + TIMEOUT
    while not path.exists() or checkpoint.load(path).meta["progress"]["step"] < step:
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no {path.name} of step {step} appeared:\n{process.communicate()[1]}")
        time.sleep(0.1)


def test_two_processes_train_as_one_and_sigterm_saves_a_checkpoint_one_process_resumes(tmp_path):
    """Each process its share of the streams, the dropout masks drawn for the whole batch: 20 steps and more as in
    one process, to 1e-9.  SIGTERM to the command (as a scheduler sends it) reaches both processes: they stop at
    the same step, save the carried state of every stream and exit 143; one process resumes the run."""
    run = launch(tmp_path, tmp_path / "two", "--steps", "100000", "--dropout", "0.2")
    wait_for(tmp_path / "two" / "latest.npz", run, step=20)
    run.send_signal(signal.SIGTERM)
    code, out, err = finish(run)
    assert code == 143, err
    assert out.count("SIGTERM") == 1 and "terminated; saved" in err  # the first process speaks for both
    ck = checkpoint.load(tmp_path / "two" / "latest.npz")
    step = ck.meta["progress"]["step"]
    assert step >= 20 and ck.meta["engine"]["processes"] == 2
    one = dict(model=dict(dropout=0.2), save_every=5, device="cpu")  # the CPU's generator draws the masks
    trainer(tmp_path / "one", step, **one).run()
    assert_close(tmp_path / "one" / "latest.npz", tmp_path / "two" / "latest.npz")
    trainer(tmp_path / "two", step + 3, resume=True, **one).run()
    trainer(tmp_path / "one", step + 3, resume=True, **one).run()
    assert_close(tmp_path / "one" / "latest.npz", tmp_path / "two" / "latest.npz")


def test_a_process_that_dies_stops_the_run_with_one_line_and_the_last_checkpoint_intact(tmp_path):
    run = launch(tmp_path, tmp_path / "two", "--steps", "100000", "-q")
    wait_for(tmp_path / "two" / "latest.npz", run)
    children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
    second = next(pid for pid in map(int, children)
                  if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes())
    os.kill(second, signal.SIGKILL)
    code, out, err = finish(run)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: a process of this 2-process run stopped"), err
    assert "untouched" in lines[0] and "Traceback" not in out + err
    ck = checkpoint.load(tmp_path / "two" / "latest.npz")
    assert ck.meta["progress"]["step"] % 5 == 0 and ck.meta["engine"]["processes"] == 2
