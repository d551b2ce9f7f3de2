"""The training loop: truncated BPTT over B parallel streams, validation, schedule, checkpoints, signals.

The hidden state is carried from chunk to chunk (gradients are cut at chunk boundaries) and reset at each epoch.
Everything a run depends on (parameters, optimiser state, stream position, carried state, RNG, history) goes into
the checkpoint, so stopping and resuming gives bit-identical parameters to training straight through.
Talks to the terminal only through a Reporter.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from charrnn.core.model import LN2, Model, ModelConfig
from charrnn.core.optim import clip_gradients, make_optimizer
from charrnn.core.sample import sample_text
from charrnn.errors import CharrnnError
from charrnn.fast.shards import Sharded, WorkerDied
from charrnn.runs.evaluate import VAL_STREAMS, score
from charrnn.runs.finetune import InitFrom
from charrnn.runs.streams import Streams
from charrnn.store import checkpoint
from charrnn.store.corpus import Corpus

LATEST, BEST = "latest.npz", "best.npz"  # the checkpoints a run keeps in its --out: its last state, its best val


@dataclass
class TrainConfig:
    """Everything about a run except the model's shape.  Plain defaults; charrnn.runs.policy lays presets over them."""

    seq_len: int = 64  # T: truncation length of backprop through time
    batch_size: int = 64  # B: parallel streams
    val_frac: float = 0.1  # last fraction of the corpus held out for validation
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


def learning_rate(cfg: TrainConfig, step: int, epoch: float, total_steps: int | None,
                  time_fraction: float | None = None) -> float:
    """The learning rate for update number step + 1 (linear warm-up, then the schedule).  The cosine runs over
    total_steps, or, for a run limited only by time, over the fraction of --time-limit used so far."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":  # char-rnn: lr *= decay at the end of every epoch after lr_decay_after
        return cfg.lr * cfg.lr_decay ** max(0, math.floor(epoch) - math.floor(cfg.lr_decay_after))
    if cfg.lr_schedule == "cosine":
        if total_steps is not None:
            progress = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
        else:
            progress = min(1.0, time_fraction or 0.0)
        return cfg.lr * (cfg.lr_min + (1 - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise CharrnnError(f"unknown learning-rate schedule {cfg.lr_schedule!r}")


class Reporter:
    """Where the loop's news goes.  This one stays silent; the CLI's prints bars, lines and tables."""

    def start(self, info: dict) -> None: ...
    def update(self, stats: dict) -> None: ...
    def log(self, line: str) -> None: ...
    def close(self) -> None: ...


class Diverged(CharrnnError):
    """Loss or gradient became NaN or infinite."""


@dataclass
class Outcome:
    reason: str  # steps | epochs | time | interrupted | terminated
    exit_code: int
    summary: dict


def validate(model: Model | Sharded, data: np.ndarray, batch_size: int, seq_len: int) -> float:
    """Mean loss in nats/char over the whole split, with carried state, no dropout (as `charrnn eval`)."""
    total, count = score(model, data, batch_size, seq_len)
    return total / count if count else float("nan")


def epoch_offset(cfg: TrainConfig, epoch: int, n: int) -> int:
    """Where epoch `epoch`'s streams start in a split of n characters.  Epoch 0 starts at 0 as in char-rnn; later
    ones at an offset drawn from (seed, epoch) alone, so resuming needs no extra state.  Without rotation every
    epoch repeats the same B x T chunks in the same order, and a small corpus is memorised sooner."""
    if not cfg.rotate or epoch == 0:
        return 0
    return int(np.random.default_rng([cfg.seed, epoch]).integers(n))


class Trainer:
    """One run of training: fresh, resumed from a checkpoint, or a new run from a trained model's weights
    (init_from; the corpus's vocabulary is then InitFrom.vocab_for's)."""

    def __init__(self, corpus: Corpus, model_cfg: ModelConfig, cfg: TrainConfig, out_dir,
                 reporter: Reporter | None = None, resume: checkpoint.Checkpoint | None = None,
                 init_from: InitFrom | None = None):
        self.corpus, self.cfg, self.out = corpus, cfg, Path(out_dir)
        self.reporter = reporter or Reporter()
        self.train_data, self.val_data = corpus.split(cfg.val_frac)
        self.streams = Streams(self.train_data, cfg.batch_size, cfg.seq_len, "training")
        self.total_steps = cfg.steps or (math.ceil(cfg.epochs * self.streams.chunks) if cfg.epochs else None)
        if cfg.lr_schedule == "cosine" and self.total_steps is None and cfg.time_limit is None:
            raise CharrnnError("the cosine schedule needs a length: give --steps, --epochs or --time-limit")
        self._started = None  # monotonic start of this invocation, while it trains
        self._offset = None  # (epoch, its stream offset)
        if resume is None:
            self.rng = np.random.default_rng(cfg.seed)
            if init_from is None:
                self.model = Model.create(model_cfg, self.rng)
            else:
                self.model = Model(model_cfg, init_from.params_for(model_cfg, corpus.vocab, self.rng))
            self.init_from = init_from.provenance() if init_from else None
            self.optim = make_optimizer(cfg.optimizer, self.model.params, cfg.weight_decay)
            self.state = self.model.initial_state(cfg.batch_size)
            self.step = self.epoch = self.chunk = self.chars_seen = 0
            self.elapsed, self.history, self.best_val, self.best_step = 0.0, [], None, None
        else:
            self._restore(resume)
        self.sharded = Sharded(self.model)  # loss_and_grads and evaluate over the cores (charrnn.fast.shards)

    def _restore(self, ck: checkpoint.Checkpoint) -> None:
        meta, progress = ck.meta, ck.meta.get("progress")
        if progress is None or "rng" not in meta:
            raise CharrnnError("checkpoint has no training progress to resume from")
        if ck.vocab != self.corpus.vocab:
            raise CharrnnError("the corpus is not encoded with the checkpoint's vocabulary (Corpus.reindexed)")
        self.model = ck.model
        self.optim = make_optimizer(self.cfg.optimizer, self.model.params, self.cfg.weight_decay)
        self.optim.load_state_dict(ck.optim)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = meta["rng"]
        self.state = ck.state if ck.state else self.model.initial_state(self.cfg.batch_size)
        if self.state[0].shape[1] != self.cfg.batch_size:
            raise CharrnnError("the checkpoint's carried state does not match --batch-size")
        self.step, self.epoch, self.chunk = progress["step"], progress["epoch"], progress["chunk"]
        self.chars_seen, self.elapsed = progress["chars_seen"], progress["elapsed"]
        if self.chunk >= self.streams.chunks:
            raise CharrnnError("the checkpoint's stream position is past the end of this corpus's epoch")
        self.history = meta.get("history", [])
        self.init_from = meta.get("init_from")
        self.best_val, self.best_step = meta.get("best_val_loss"), meta.get("best_step")

    # -- checkpoints -------------------------------------------------------------------------------------------

    def metadata(self) -> dict:
        cfg = self.cfg
        return {
            "train": asdict(cfg),
            "progress": {"step": self.step, "epoch": self.epoch, "chunk": self.chunk,
                         "epoch_progress": self.epoch_progress, "chars_seen": self.chars_seen,
                         "elapsed": self.run_time},
            "schedule": {"name": cfg.lr_schedule, "lr": self.lr, "total_steps": self.total_steps},
            "rng": self.rng.bit_generator.state,
            "history": self.history,
            "init_from": self.init_from,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "corpus": {"name": self.corpus.name, "size": self.corpus.size, "sha256": self.corpus.sha256,
                       "chars": len(self.corpus.data), "train_chars": len(self.train_data),
                       "val_chars": len(self.val_data)},
        }

    def save(self, name: str) -> Path:
        path = self.out / name
        checkpoint.save(path, self.model, self.corpus.vocab, self.metadata(), self.optim.state_dict(), self.state)
        return path

    # -- the loop -----------------------------------------------------------------------------------------------

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.chunk / self.streams.chunks

    @property
    def offset(self) -> int:
        """Where this epoch's streams start (epoch_offset), worked out once per epoch."""
        if self._offset is None or self._offset[0] != self.epoch:
            self._offset = (self.epoch, epoch_offset(self.cfg, self.epoch, len(self.train_data)))
        return self._offset[1]

    @property
    def lr(self) -> float:
        fraction = None
        if self.cfg.time_limit:
            fraction = self.run_time / self.cfg.time_limit
        return learning_rate(self.cfg, self.step, self.epoch_progress, self.total_steps, fraction)

    @property
    def run_time(self) -> float:
        """Wall time this run has trained, evaluation included, over all its invocations (resumes add up)."""
        return self.elapsed + (time.monotonic() - self._started if self._started is not None else 0.0)

    def done(self) -> str | None:
        """Why the run has reached its length (steps, epochs, time), or None while it has not."""
        cfg = self.cfg
        if cfg.steps is not None and self.step >= cfg.steps:
            return "steps"
        if cfg.epochs is not None and self.epoch_progress >= cfg.epochs:
            return "epochs"
        if cfg.time_limit is not None and self.run_time >= cfg.time_limit:
            return "time"
        return None

    def train_step(self) -> tuple[float, float]:
        """One chunk: forward, backward, clip, update, advance the streams.  Returns (loss, pre-clip norm)."""
        x, y = self.streams.batch(self.chunk, offset=self.offset)
        lr = self.lr
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are caught just below
            loss, grads, state = self.sharded.loss_and_grads(x, y, self.state, self.rng)
            norm = clip_gradients(grads, self.cfg.clip, self.cfg.clip_mode)
        if not math.isfinite(loss) or not math.isfinite(norm):
            what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {norm}"
            last = self.out / LATEST
            kept = f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint was written"
            raise Diverged(f"training diverged at step {self.step + 1}: {what}; {kept}; "
                           f"try a lower --lr (now {lr:g}) or a smaller --clip")
        self.optim.step(self.model.params, grads, lr)
        self.state = state
        self.step += 1
        self.chunk += 1
        self.chars_seen += x.size
        if self.chunk == self.streams.chunks:  # epoch boundary: streams start over, state resets
            self.epoch, self.chunk = self.epoch + 1, 0
            self.state = self.model.initial_state(self.cfg.batch_size)
        return loss, norm

    def evaluate(self, train_loss: float, chars: int, seconds: float) -> float | None:
        """Close an interval of training (mean train loss, characters and seconds it took): validate, record
        history, write best.npz on improvement, report."""
        chars_per_s = chars / seconds if seconds else None
        val = None
        if len(self.val_data) >= 2:
            val = validate(self.sharded, self.val_data, VAL_STREAMS, self.cfg.seq_len)
        self.history.append({"step": self.step, "epoch": round(self.epoch_progress, 4), "train_loss": train_loss,
                             "val_loss": val, "chars_per_s": chars_per_s, "elapsed": round(self.run_time, 3)})
        if val is not None and math.isfinite(val) and (self.best_val is None or val < self.best_val):
            self.best_val, self.best_step = val, self.step
            self.save(BEST)
        self._report_eval(val, train_loss, chars_per_s)
        return val

    def run(self) -> Outcome:
        cfg, rep = self.cfg, self.reporter
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_stale_temp_files(self.out)
        caught = []

        def on_signal(signum, frame):
            if caught:  # a second signal: stop now
                raise KeyboardInterrupt
            caught.append(signum)

        handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        started = last_tick = self._started = time.monotonic()
        interval_loss, interval_steps, interval_chars = 0.0, 0, 0
        interval_time, val = 0.0, None
        start_step = self.step
        try:
            with self.sharded.owning_cores(cfg.batch_size):  # BLAS single-threaded while sharded
                while (reason := self.done()) is None:
                    if caught:
                        reason = "interrupted" if caught[0] == signal.SIGINT else "terminated"
                        break
                    loss, norm = self.train_step()
                    now = time.monotonic()
                    interval_time += now - last_tick
                    last_tick = now
                    interval_loss, interval_steps = interval_loss + loss, interval_steps + 1
                    interval_chars += cfg.batch_size * cfg.seq_len
                    rep.update({"step": self.step, "total": self.total_steps, "epoch": self.epoch_progress,
                                "loss": loss, "norm": norm, "lr": self.lr, "chars": cfg.batch_size * cfg.seq_len,
                                "val": val, "elapsed": now - started, "time_limit": cfg.time_limit})
                    if self.step % cfg.eval_every == 0:
                        val = self.evaluate(interval_loss / interval_steps, interval_chars, interval_time)
                        interval_loss, interval_steps, interval_chars, interval_time = 0.0, 0, 0, 0.0
                        last_tick = time.monotonic()  # validation time is not training time
                    if self.step % cfg.save_every == 0:
                        self.save(LATEST)
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        rep.log(self._sample())
                        last_tick = time.monotonic()
                if interval_steps:  # a final evaluation so history and best.npz are up to date
                    val = self.evaluate(interval_loss / interval_steps, interval_chars, interval_time)
                path = self.save(LATEST)
        except WorkerDied as e:  # the failed step changed nothing: keep every finished one
            path = self.save(LATEST)
            raise WorkerDied(f"{e}; {path} holds step {self.step}, and --resume continues from it") from None
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.elapsed, self._started = self.run_time, None
            self.sharded.close()
            rep.close()
        exit_code = {"interrupted": 130, "terminated": 143}.get(reason, 0)
        return Outcome(reason, exit_code, {
            "reason": reason, "steps": self.step, "steps_this_run": self.step - start_step,
            "epochs": self.epoch_progress, "time": time.monotonic() - started, "elapsed_total": self.elapsed,
            "best_val_loss": self.best_val, "best_step": self.best_step, "last_val_loss": val,
            "latest": str(path), "best": str(self.out / BEST) if self.best_val is not None else None,
        })

    def _report_eval(self, val, train_loss, speed) -> None:
        parts = [f"step {self.step}", f"epoch {self.epoch_progress:.2f}", f"train {train_loss:.4f}"]
        if val is not None:
            parts.append(f"val {val:.4f} nats/char = {val / LN2:.3f} bits/char")
            if self.best_step == self.step:
                parts.append("best")
        if speed:
            parts.append(f"{speed:,.0f} chars/s")
        self.reporter.log(" | ".join(parts))

    def _sample(self) -> str:
        # its own RNG, so samples never change the training run's random stream
        rng = np.random.default_rng([self.cfg.seed, self.step])
        text = sample_text(self.model, self.corpus.vocab, self.cfg.sample_length, rng, temperature=0.8)
        return f"--- sample at step {self.step} ---\n{text}\n---"
