"""The training loop: truncated BPTT over B parallel streams, validation, schedule, checkpoints, signals.

The hidden state is carried from chunk to chunk (gradients are cut at chunk boundaries) and reset at each epoch.
Everything a run depends on (parameters, optimiser state, stream position, carried state, RNG, history) goes into
the checkpoint, so stopping and resuming gives bit-identical parameters to training straight through.
Talks to the terminal only through a Reporter.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from charrnn import engines
from charrnn.core.model import Model, ModelConfig, init_params
from charrnn.core.optim import make_optimizer
from charrnn.core.sample import sample_text
from charrnn.engines import ProcessLost
from charrnn.errors import CharrnnError
from charrnn.fast.shards import WorkerDied
from charrnn.runs import footprint
from charrnn.runs.evaluate import VAL_STREAMS, score
from charrnn.runs.finetune import InitFrom
from charrnn.runs.record import Progress, corpus_facts, run_id, run_identity
from charrnn.runs.schedule import epoch_offset, learning_rate, planned_steps
from charrnn.runs.signals import EXIT_CODES, StopRequests
from charrnn.runs.streams import Streams
from charrnn.store import checkpoint
from charrnn.store.corpus import Corpus
from charrnn.store.lock import RunLock
from charrnn.store.memory import check_fits

LATEST, BEST = "latest.npz", "best.npz"  # the checkpoints a run keeps in its --out: its last state, its best val
# Why a run stops, in the order the processes of a run settle on when they differ: the last any of them has
STOPS = (None, "steps", "epochs", "time", "interrupted", "terminated")


@dataclass
class TrainConfig:
    """Everything about a run except the model's shape.  Plain defaults; charrnn.runs.policy lays presets over them."""

    seq_len: int = 64  # T: truncation length of backprop through time
    batch_size: int = 64  # B: parallel streams
    val_frac: float = 0.1  # last fraction of the corpus held out for validation
    val_chars: int | None = 1_000_000  # characters each validation scores, in windows spread over the held-out
    # split, the same every time (a 1 GB corpus holds out 100 million); None: the whole split
    encoding: str = "utf-8"
    optimizer: str = "adam"
    lr: float = 2e-3
    lr_schedule: str = "constant"  # constant | step | cosine
    warmup: int = 0  # steps of linear warm-up
    lr_decay: float = 0.97  # step schedule: factor applied once per epoch ...
    lr_decay_after: float = 10  # ... after this many epochs (char-rnn)
    lr_min: float = 0.1  # cosine schedule: final learning rate as a fraction of lr
    clip: float = 5.0  # gradient clipping threshold (<= 0: off)
    clip_mode: str = "norm"  # norm (global) | value (element-wise)
    weight_decay: float = 0.0
    steps: int | None = None  # stop after this many steps in total ...
    epochs: float | None = None  # ... or epochs in total ...
    time_limit: float | None = None  # ... or seconds of training in total, whichever comes first
    eval_every: int = 500
    save_every: int = 500
    sample_every: int = 0  # 0: no samples during training
    sample_length: int = 200
    log_every: int = 100  # steps between plain log lines when the output is not a terminal
    seed: int = 1337
    rotate: bool = True  # start every epoch after the first at a fresh random offset into the split

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

class Reporter:
    """Where the loop's news goes.  This one stays silent; the CLI's prints a bar, lines and tables."""

    def step(self, stats: dict) -> None:
        """After every step: step, total, epoch, loss, norm, lr, chars, val (the last), elapsed (this invocation),
        run_time (the whole run's), time_limit."""

    def scoring(self, done: int, total: int) -> None:
        """During a validation, after every chunk: characters just scored, characters to score in all."""

    def validated(self, row: dict, best: bool) -> None:
        """After every validation: its history row, and whether it is the best so far."""

    def sampled(self, step: int, text: str) -> None:
        """A sample of the model at this step (--sample-every)."""

    def close(self) -> None:
        """The loop is over."""


class Diverged(CharrnnError):
    """Loss or gradient became NaN or infinite."""


@dataclass
class Outcome:
    reason: str  # steps | epochs | time | interrupted | terminated
    exit_code: int
    summary: dict


def validation_loss(model, data: np.ndarray, batch_size: int, seq_len: int, limit: int | None = None,
                    **scoring) -> float:
    """Mean loss in nats/char over the split (or limit characters of it, see charrnn.runs.evaluate.score), with
    carried state, no dropout (as `charrnn eval`).  model: what score takes, a Model or an engine.  scoring:
    score's progress and stop."""
    total, count = score(model, data, batch_size, seq_len, limit=limit, **scoring)
    return total / count if count else float("nan")


class Latch:
    """A question asked until it says yes once, then yes for good: asked of every process together (see
    Trainer.validate), it must not be asked again once the answer is in."""

    def __init__(self, ask):
        self.ask, self.set = ask, False

    def __call__(self) -> bool:
        self.set = self.set or self.ask()
        return self.set


class Interval:
    """The training between two validations: its mean loss, characters, and seconds spent training (the time
    of validations and samples is left out: call resume() after them)."""

    def __init__(self):
        self.loss, self.steps, self.chars, self.seconds = 0.0, 0, 0, 0.0
        self.mark = time.monotonic()

    def add(self, loss: float, chars: int) -> None:
        now = time.monotonic()
        self.loss, self.steps, self.chars = self.loss + loss, self.steps + 1, self.chars + chars
        self.seconds, self.mark = self.seconds + now - self.mark, now

    def resume(self) -> None:
        self.mark = time.monotonic()

    @property
    def mean_loss(self) -> float:
        return self.loss / self.steps

    @property
    def speed(self) -> float | None:
        return self.chars / self.seconds if self.seconds else None


class Trainer:
    """One run of training: fresh, resumed from a checkpoint (loaded with resume=True), or a new run from a
    trained model's weights (init_from; the corpus's vocabulary is then InitFrom.vocab_for's), on an engine
    (charrnn.engines: numpy, or torch on `device`).  lock: the output directory's (store.lock), which run()
    releases when it returns."""

    def __init__(self, corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, out_dir,
                 reporter: Reporter | None = None, resume: checkpoint.Checkpoint | None = None,
                 init_from: InitFrom | None = None, lock: RunLock | None = None, engine: str = "numpy",
                 device: str | None = None):
        self.corpus, self.cfg, self.out, self.lock = corpus, cfg, Path(out_dir), lock
        self.reporter = reporter or Reporter()
        self.saved: dict[str, int] = {}  # checkpoint name -> the step its last completed save holds
        self.train_data, self.val_data = corpus.split(cfg.val_frac)
        self.streams = Streams(self.train_data, cfg.batch_size, cfg.seq_len, "training")
        self.total_steps = planned_steps(cfg, self.streams.chunks)
        if cfg.lr_schedule == "cosine" and self.total_steps is None and cfg.time_limit is None:
            raise CharrnnError("the cosine schedule needs a length: give --steps, --epochs or --time-limit")
        check_fits(footprint.training(model_cfg, cfg.batch_size, cfg.seq_len, cfg.optimizer),
                   f"training {model_cfg.cell.upper()} {model_cfg.layers}x{model_cfg.hidden} at --batch-size "
                   f"{cfg.batch_size} and --seq-len {cfg.seq_len}")
        if resume is None:
            self.rng = np.random.default_rng(cfg.seed)
            params = (init_from.params_for(model_cfg, corpus.vocab, self.rng) if init_from
                      else init_params(model_cfg, self.rng))
            model = Model(model_cfg, params)
            optim = make_optimizer(cfg.optimizer, model.params, cfg.weight_decay)
            state = model.initial_state(cfg.batch_size)
            self.progress = Progress(self.streams.chunks)
            self.init_from = init_from.provenance() if init_from else None
            self.run_id = run_identity(model_cfg.to_dict(), cfg.seed, corpus.sha256, self.init_from)
        else:
            model, optim, state = self._restore(resume)
        self.engine = engines.create(engine, model, optim, state, self.rng, cfg, resume, device)
        self._offset = None  # (epoch, its stream offset)

    def _restore(self, ck: checkpoint.Checkpoint):
        """The resumed run's model, optimiser and carried state; its RNG and progress set on self."""
        if not (ck.resumable and ck.optim):  # a file that holds it all, read with resume=True
            raise CharrnnError("checkpoint has no training progress to resume from (load it with resume=True)")
        if ck.vocab != self.corpus.vocab:
            raise CharrnnError("the corpus is not encoded with the checkpoint's vocabulary (Corpus.reindexed)")
        optim = make_optimizer(self.cfg.optimizer, ck.model.params, self.cfg.weight_decay)
        optim.load_state_dict(ck.optim)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = ck.meta["rng"]
        state = ck.state if ck.state else ck.model.initial_state(self.cfg.batch_size)
        if state[0].shape[1] != self.cfg.batch_size:
            raise CharrnnError("the checkpoint's carried state does not match --batch-size")
        self.progress = Progress.from_meta(ck.meta, self.streams.chunks)
        self.init_from = ck.meta.get("init_from")
        self.run_id = run_id(ck.meta)
        return ck.model, optim, state

    @property
    def model(self) -> Model:
        """The model as it is now (the torch engine copies its parameters off its device)."""
        return self.engine.model

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Train until the run's length or a signal, validating, saving and sampling as configured."""
        cfg, progress = self.cfg, self.progress
        if self.engine.leads:
            self.out.mkdir(parents=True, exist_ok=True)
            checkpoint.remove_stale_temp_files(self.out)
        first_step, val = progress.step, None
        progress.start_clock()
        interval = Interval()
        try:
            with StopRequests() as stop, self.engine.running():
                while True:
                    reason, lr = self.decide(stop)
                    if reason is not None:
                        break
                    loss, norm = self.train_step(lr)
                    interval.add(loss, cfg.batch_size * cfg.seq_len)
                    self.reporter.step({"step": progress.step, "total": self.total_steps,
                                        "epoch": progress.epoch_progress, "loss": loss, "norm": norm, "lr": lr,
                                        "chars": cfg.batch_size * cfg.seq_len, "val": val,
                                        "elapsed": time.monotonic() - progress.started, "run_time": progress.run_time,
                                        "time_limit": cfg.time_limit})
                    if progress.step % cfg.eval_every == 0:
                        val, interval = self.validate(interval, stop), Interval()
                    if progress.step % cfg.save_every == 0:
                        self.save(LATEST)
                    if cfg.sample_every and progress.step % cfg.sample_every == 0:
                        self.reporter.sampled(progress.step, self.sample(stop))
                        interval.resume()
                if interval.steps and reason not in EXIT_CODES:  # a last validation: history and best.npz current
                    val = self.validate(interval, stop)
                latest = self.save(LATEST)
        except WorkerDied as e:  # the failed step changed nothing: keep every finished one
            latest = self.save(LATEST)
            raise WorkerDied(f"{e}; {latest} holds step {progress.step}, and --resume continues from it") from None
        except ProcessLost as e:  # the lost process's streams went with it: the last checkpoint is the last state
            raise ProcessLost(f"{e}; {self.kept()}") from None
        finally:
            time_here = time.monotonic() - progress.started
            progress.stop_clock()
            self.reporter.close()
            if self.lock is not None:
                self.lock.release()
        return Outcome(reason, EXIT_CODES.get(reason, 0), {
            "reason": reason, "steps": progress.step, "steps_this_run": progress.step - first_step,
            "epochs": progress.epoch_progress, "time": time_here, "elapsed_total": progress.elapsed,
            "best_val_loss": progress.best_val, "best_step": progress.best_step, "last_val_loss": val,
            "latest": str(latest), "best": str(self.out / BEST) if progress.best_val is not None else None,
        })

    def done(self) -> str | None:
        """Why the run has reached its length (steps, epochs, time), or None while it has not."""
        cfg, progress = self.cfg, self.progress
        if cfg.steps is not None and progress.step >= cfg.steps:
            return "steps"
        if cfg.epochs is not None and progress.epoch_progress >= cfg.epochs:
            return "epochs"
        if cfg.time_limit is not None and progress.run_time >= cfg.time_limit:
            return "time"
        return None

    def decide(self, stop: StopRequests) -> tuple[str | None, float]:
        """Why the run stops here (None: it goes on) and the next step's learning rate, the same in every process
        of a run (the engine's agree): a signal to any stops them all, and the clock is the first one's."""
        code, lr = self.engine.agree(STOPS.index(self.done() or stop.reason), self.lr)
        return STOPS[code], lr

    def train_step(self, lr: float) -> tuple[float, float]:
        """One chunk: forward, backward, clip, update, advance the streams.  Returns (loss, pre-clip norm)."""
        x, y = self.streams.batch(self.progress.chunk, offset=self.offset)
        loss, norm = self.engine.gradients(x, y)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise self.diverged(loss, norm, lr)
        self.engine.update(lr)
        if self.progress.advance(x.size):  # epoch boundary: streams start over, state resets
            self.engine.reset_state()
        return loss, norm

    def validate(self, interval: Interval, stop: StopRequests) -> float | None:
        """Close an interval of training: score the validation windows, record the history row, write best.npz
        on improvement, report.  Returns the validation loss: None without a validation split, or when a stop
        request cut the scoring short (then nothing is recorded)."""
        progress = self.progress
        val = None
        if len(self.val_data) >= 2:
            signalled = Latch(lambda: self.engine.agree(STOPS.index(stop.reason), 0.0)[0] != 0)  # all processes
            val = validation_loss(self.engine, self.val_data, VAL_STREAMS, self.cfg.seq_len, self.cfg.val_chars,
                                  progress=self.reporter.scoring, stop=signalled)
            if signalled.set:
                return None
        row = {"step": progress.step, "epoch": round(progress.epoch_progress, 4), "train_loss": interval.mean_loss,
               "val_loss": val, "chars_per_s": interval.speed, "elapsed": round(progress.run_time, 3)}
        best = progress.record(row)
        if best:
            self.save(BEST)
        self.reporter.validated(row, best)
        return val

    def sample(self, stop: StopRequests | None = None) -> str:
        """A sample of the model as it is, from an RNG of its own, so samples never change the run; cut short by
        a stop request."""
        rng = np.random.default_rng([self.cfg.seed, self.progress.step])
        return sample_text(self.model, self.corpus.vocab, self.cfg.sample_length, rng, temperature=0.8,
                           stop=None if stop is None else lambda: stop.reason is not None)

    def save(self, name: str) -> Path:
        """Write the run's checkpoint `name` into its --out, atomically.  Every process of a run calls it; the
        first one writes."""
        path = self.out / name
        optim, state, rng = self.engine.saved()
        if not self.engine.leads:
            return path
        meta = {
            "train": asdict(self.cfg),
            **self.progress.meta(),
            "schedule": {"name": self.cfg.lr_schedule, "lr": self.lr, "total_steps": self.total_steps},
            "rng": self.rng.bit_generator.state,
            "init_from": self.init_from,
            "corpus": corpus_facts(self.corpus, len(self.train_data), len(self.val_data)),
            "engine": self.engine.describe(),
            "run": self.run_id,
        }
        checkpoint.save(path, self.model, self.corpus.vocab, meta, optim, state, rng)
        self.saved[name] = self.progress.step
        return path

    def diverged(self, loss: float, norm: float, lr: float) -> Diverged:
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
        return Diverged(f"training diverged at step {self.progress.step + 1}: {what}; {self.kept()}; "
                        f"try a lower --lr (now {lr:g}) or a smaller --clip")

    def kept(self) -> str:
        """What a run that stops on an error leaves: its last checkpoint, untouched."""
        last = self.out / LATEST
        return f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint was written"

    @property
    def lr(self) -> float:
        """The learning rate of the next update."""
        fraction = self.progress.run_time / self.cfg.time_limit if self.cfg.time_limit else None
        return learning_rate(self.cfg, self.progress.step, self.progress.epoch_progress, self.total_steps, fraction)

    @property
    def offset(self) -> int:
        """Where this epoch's streams start (epoch_offset), worked out once per epoch."""
        epoch = self.progress.epoch
        if self._offset is None or self._offset[0] != epoch:
            self._offset = (epoch, epoch_offset(self.cfg, epoch, len(self.train_data)))
        return self._offset[1]
