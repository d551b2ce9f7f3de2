"""What the commands show while they work: training's banner, bar (plain log lines off a terminal) and summary,
and a bar for any long phase (reading a corpus, validating, scoring a file).

Rich output is printed before and after the bar, never during it; lines during training go through tqdm.write.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

from charrnn.cli.views import engine_text, loss_text, started_from
from charrnn.fast.gemm import describe_path
from charrnn.runs.train import Reporter, Trainer
from charrnn.runs.units import finite, human_duration
from charrnn.store.memory import format_bytes


class TrainingReporter(Reporter):
    """A bar when stdout and stderr are terminals, else a plain line every log_every steps; quiet: nothing."""

    def __init__(self, quiet: bool = False, log_every: int = 100, console: Console | None = None):
        self.quiet = quiet
        self.log_every = log_every
        self.console = console or Console(highlight=False)
        self.interactive = sys.stdout.isatty() and sys.stderr.isatty()
        self.bar = self.scoring_bar = None
        self.by_time = False  # the bar counts seconds of a --time-limit, not steps
        self.loss_ema, self.updates = 0.0, 0
        self.speed = self.step_time = None
        self._last_elapsed = 0.0

    def start(self, info: dict) -> None:
        if self.quiet:
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan")
        table.add_column()
        for key, value in info.items():
            table.add_row(key, Text(str(value)))  # file names are text, never markup
        self.console.print(table)

    def step(self, s: dict) -> None:
        self.loss_ema, self.updates = 0.98 * self.loss_ema + 0.02 * s["loss"], self.updates + 1
        self.smoothed = self.loss_ema / (1 - 0.98**self.updates)  # bias-corrected moving average
        dt = s["elapsed"] - self._last_elapsed
        self._last_elapsed = s["elapsed"]
        if dt > 0:  # average the step time, not the rate: a mean of rates overweights the fast steps
            self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
            self.speed = s["chars"] / self.step_time
        if self.quiet:
            return
        fields = {"loss": f"{self.smoothed:.3f}", "val": "-" if s["val"] is None else f"{s['val']:.3f}",
                  "|g|": f"{s['norm']:.2f}", "chars/s": f"{self.speed or 0:,.0f}"}
        if self.interactive:
            if self.bar is None:
                self.bar = self._bar(s)
            if self.by_time:
                self.bar.set_postfix({"step": f"{s['step']:,}", **fields}, refresh=False)
                self.bar.update(min(s["run_time"], s["time_limit"]) - self.bar.n)
            else:
                self.bar.set_postfix(fields, refresh=False)
                self.bar.update(1)
        elif s["step"] % self.log_every == 0:
            total = f"/{s['total']}" if s["total"] else ""
            line = (f"step {s['step']}{total} | epoch {s['epoch']:.2f} | loss {self.smoothed:.4f} | "
                    f"val {fields['val']} | |g| {fields['|g|']} | lr {s['lr']:.3g} | {fields['chars/s']} chars/s | "
                    f"{human_duration(s['elapsed'])}")
            print(line, flush=True)

    def _bar(self, s: dict) -> tqdm:
        """Steps against --steps or --epochs; seconds against --time-limit where that is the only length; steps
        with no end (a run until Ctrl-C)."""
        self.by_time = s["total"] is None and s["time_limit"] is not None
        if self.by_time:
            return tqdm(total=s["time_limit"], initial=s["run_time"], file=sys.stderr, dynamic_ncols=True, leave=False,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [ETA {remaining}{postfix}]")
        return tqdm(total=s["total"], initial=s["step"] - 1, unit="step", file=sys.stderr, dynamic_ncols=True,
                    leave=False)

    def scoring(self, done: int, total: int) -> None:
        if self.quiet or not self.interactive:
            return
        if self.scoring_bar is None:
            self.scoring_bar = tqdm(total=total, desc="validation", unit="char", unit_scale=True, leave=False,
                                    file=sys.stderr, dynamic_ncols=True, position=1)
        self.scoring_bar.update(done)

    def validated(self, row: dict, best: bool) -> None:
        self._close_scoring()
        parts = [f"step {row['step']}", f"epoch {row['epoch']:.2f}", f"train {row['train_loss']:.4f}"]
        if row["val_loss"] is not None:
            parts.append(f"val {loss_text(row['val_loss'])}")
            if best:
                parts.append("best")
        if row["chars_per_s"]:
            parts.append(f"{row['chars_per_s']:,.0f} chars/s")
        self.log(" | ".join(parts))

    def sampled(self, step: int, text: str) -> None:
        self.log(f"--- sample at step {step} ---\n{text}\n---")

    def log(self, line: str) -> None:
        """A line above the bar (or a plain line where there is none)."""
        if self.quiet:
            return
        if self.bar is not None:
            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def _close_scoring(self) -> None:
        if self.scoring_bar is not None:
            self.scoring_bar.close()
            self.scoring_bar = None

    def close(self) -> None:
        self._close_scoring()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_summary(console: Console, summary: dict) -> None:
    """The closing table: why it stopped, how far it got, the best validation loss, where the files are."""
    table = Table(title="charrnn train: done" if summary["reason"] in ("steps", "epochs", "time")
                  else f"charrnn train: {summary['reason']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("stopped by", {"steps": "--steps reached", "epochs": "--epochs reached",
                                 "time": "--time-limit reached", "interrupted": "Ctrl-C (SIGINT)",
                                 "terminated": "SIGTERM"}[summary["reason"]])
    table.add_row("steps", f"{summary['steps']:,} ({summary['steps_this_run']:,} in this run)")
    table.add_row("epochs", f"{summary['epochs']:.2f}")
    total = human_duration(summary["elapsed_total"])
    table.add_row("time", f"{human_duration(summary['time'])} (total training {total})")
    if finite(summary["best_val_loss"]) is not None:
        table.add_row("best val loss", loss_text(summary["best_val_loss"], summary["best_step"]))
    table.add_row("latest", Text(summary["latest"]))
    if summary["best"]:
        table.add_row("best", Text(summary["best"]))
    console.print(table)


def banner(trainer: Trainer, start: str) -> dict:
    """The facts of a run, shown before its first step: corpus, split, model, training, length, where it stands,
    what runs it, how it started (a preset's name or "resumed"), where it writes."""
    data, m, cfg, progress = trainer.corpus, trainer.model.cfg, trainer.cfg, trainer.progress
    options = [o for o, on in (("peephole", m.peephole), ("coupled", m.coupled)) if on]
    length = [f"{cfg.steps:,} steps" if cfg.steps else "", f"{cfg.epochs:g} epochs" if cfg.epochs else "",
              f"{cfg.time_limit:g} s" if cfg.time_limit else ""]
    return {
        "corpus": f"{data.name}: {format_bytes(data.size)}, {len(data.data):,} characters, "
                  f"vocabulary {len(data.vocab)}",
        "split": f"{len(trainer.train_data):,} train / {len(trainer.val_data):,} validation characters",
        "model": f"{m.cell.upper()} {m.layers}x{m.hidden}, dropout {m.dropout:g}, {m.dtype}"
                 + (f", {', '.join(options)}" if options else "") + f" — {trainer.model.num_params():,} parameters",
        "training": f"B={cfg.batch_size} T={cfg.seq_len}, {cfg.optimizer} lr {cfg.lr:g} ({cfg.lr_schedule}), "
                    f"clip {cfg.clip:g} ({cfg.clip_mode}), seed {cfg.seed}",
        "length": ", ".join(x for x in length if x) or "until Ctrl-C",
        "position": f"step {progress.step:,}, epoch {progress.epoch_progress:.2f}",
        "engine": engine_text(trainer.engine.describe()),
        **({"runs on": describe_path(cfg.batch_size, m.dtype)} if trainer.engine.name == "numpy" else {}),
        "preset": start,
        **({"init from": started_from(trainer.init_from, len(data.vocab))} if trainer.init_from else {}),
        "output": str(trainer.out),
    }


@contextlib.contextmanager
def phase_bar(what: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A bar for a long phase (reading a corpus, scoring a file), fed by a callback(done just now, total): on a
    terminal only, and only once the phase has lasted half a second, so a short one leaves no trace."""
    bar = tqdm(disable=None, desc=what, unit=unit, unit_scale=True, leave=False, delay=0.5, file=sys.stderr,
               dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done)

    try:
        yield update
    finally:
        bar.close()
