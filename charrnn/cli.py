"""The command-line interface: parse, call, print.  No maths here.

Domain errors (CharrnnError) become one line on stderr and exit code 1; bad option values are click types, so
they exit 2 with a usage line.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from charrnn import __version__, checkpoint
from charrnn.cells import CELLS
from charrnn.data import read_corpus
from charrnn.errors import CharrnnError
from charrnn.model import DTYPES, ModelConfig
from charrnn.optim import OPTIMIZERS
from charrnn.presets import PRESETS
from charrnn.progress import TrainingReporter, format_bytes, print_summary
from charrnn.train import TrainConfig, Trainer

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
SHAPE_FIELDS = ("cell", "layers", "hidden", "peephole", "coupled", "dtype")  # fixed once a run has started
DATA_FIELDS = ("seq_len", "batch_size", "val_frac", "optimizer")  # fixed too: stream position, optimiser state
DEFAULTS = {**asdict(TrainConfig()), **{f.name: f.default for f in fields(ModelConfig) if f.name in MODEL_FIELDS},
            **PRESETS["default"]}


class Duration(click.ParamType):
    """A wall-clock duration: 90s, 10m, 2h, 1h30m, or plain seconds."""

    name = "duration"
    UNITS = {"h": 3600, "m": 60, "s": 1}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.fail(f"{value!r} is not a duration such as 90s, 10m, 2h or 1h30m", param, ctx)
        return sum(float(n) * self.UNITS[u] for n, u in parts)


class GroupedCommand(click.Command):
    """Prints options under headings (data, model, optimisation, ...) like char-rnn's flag list."""

    def format_options(self, ctx, formatter):
        groups: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record:
                groups.setdefault(getattr(param, "group", "Other"), []).append(record)
        groups["Other"] = groups.pop("Other", [])  # --help last
        for title, records in groups.items():
            with formatter.section(title):
                formatter.write_dl(records)


def opt(group: str, *decls, **kwargs):
    """click.option that remembers its help group."""

    def decorator(f):
        click.option(*decls, **kwargs)(f)
        f.__click_params__[-1].group = group
        return f

    return decorator


def fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="charrnn")
def main():
    """charrnn: character-level language models (RNN, LSTM, GRU) in NumPy.

    Train on any text file, sample from the model, inspect checkpoints.
    """


DATA, MODEL, OPTIM = "Data", "Model", "Optimisation"
LENGTH, BOOK = "Length (whichever comes first)", "Checkpoints and output"


@main.command(cls=GroupedCommand, context_settings=CONTEXT)
@click.argument("corpus", type=click.Path(path_type=Path))
@opt(DATA, "--seq-len", "-T", type=click.IntRange(min=1), default=DEFAULTS["seq_len"],
     help="Characters per chunk: the truncation length of backpropagation through time.")
@opt(DATA, "--batch-size", "-B", type=click.IntRange(min=1), default=DEFAULTS["batch_size"],
     help="Parallel streams the corpus is cut into.")
@opt(DATA, "--val-frac", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS["val_frac"],
     help="Fraction at the end of the corpus held out for validation.")
@opt(DATA, "--encoding", default=DEFAULTS["encoding"], help="Text encoding of the corpus.")
@opt(MODEL, "--model", "cell", type=click.Choice(list(CELLS)), default=DEFAULTS["cell"], help="Recurrent cell type.")
@opt(MODEL, "--layers", "-L", type=click.IntRange(min=1), default=DEFAULTS["layers"], help="Stacked layers.")
@opt(MODEL, "--hidden", "-H", type=click.IntRange(min=1), default=DEFAULTS["hidden"], help="Units per layer.")
@opt(MODEL, "--dropout", type=click.FloatRange(0, 1, max_open=True), default=DEFAULTS["dropout"],
     help="Dropout between layers and before the decoder.")
@opt(MODEL, "--peephole/--no-peephole", default=DEFAULTS["peephole"], help="LSTM peephole connections.")
@opt(MODEL, "--coupled/--no-coupled", default=DEFAULTS["coupled"], help="LSTM coupled input-forget gates (f = 1 - i).")
@opt(MODEL, "--dtype", type=click.Choice(DTYPES), default=DEFAULTS["dtype"], help="Floating-point type.")
@opt(OPTIM, "--optimizer", type=click.Choice(list(OPTIMIZERS)), default=DEFAULTS["optimizer"], help="Optimiser.")
@opt(OPTIM, "--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS["lr"], help="Learning rate.")
@opt(OPTIM, "--lr-schedule", type=click.Choice(["constant", "step", "cosine"]), default=DEFAULTS["lr_schedule"],
     help="constant; step: x--lr-decay per epoch after --lr-decay-after epochs; cosine: down to --lr-min x lr.")
@opt(OPTIM, "--warmup", type=click.IntRange(min=0), default=DEFAULTS["warmup"], help="Steps of linear warm-up.")
@opt(OPTIM, "--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=DEFAULTS["lr_decay"],
     help="Step schedule: factor per epoch.")
@opt(OPTIM, "--lr-decay-after", type=click.FloatRange(min=0), default=DEFAULTS["lr_decay_after"],
     help="Step schedule: epochs before decay starts.")
@opt(OPTIM, "--lr-min", type=click.FloatRange(0, 1), default=DEFAULTS["lr_min"],
     help="Cosine schedule: final learning rate as a fraction of --lr.")
@opt(OPTIM, "--clip", type=float, default=DEFAULTS["clip"], help="Gradient clipping threshold; 0 turns it off.")
@opt(OPTIM, "--clip-mode", type=click.Choice(["norm", "value"]), default=DEFAULTS["clip_mode"],
     help="norm: rescale by the global norm; value: clamp each element (char-rnn).")
@opt(OPTIM, "--weight-decay", type=click.FloatRange(min=0), default=DEFAULTS["weight_decay"],
     help="Weight decay of the weight matrices (decoupled with adamw).")
@opt(LENGTH, "--steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in total.")
@opt(LENGTH, "--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
     help="Stop after this many passes over the training split in total.")
@opt(LENGTH, "--time-limit", type=Duration(), default=None, help="Stop after this wall time, e.g. 90s, 10m, 2h.")
@opt(BOOK, "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("checkpoints"),
     help="Directory for latest.npz and best.npz.")
@opt(BOOK, "--eval-every", type=click.IntRange(min=1), default=DEFAULTS["eval_every"],
     help="Steps between validation runs.")
@opt(BOOK, "--save-every", type=click.IntRange(min=1), default=DEFAULTS["save_every"],
     help="Steps between writes of latest.npz.")
@opt(BOOK, "--sample-every", type=click.IntRange(min=0), default=DEFAULTS["sample_every"],
     help="Steps between samples printed during training; 0: none.")
@opt(BOOK, "--sample-length", type=click.IntRange(min=1), default=DEFAULTS["sample_length"],
     help="Characters per sample printed during training.")
@opt(BOOK, "--log-every", type=click.IntRange(min=1), default=DEFAULTS["log_every"],
     help="Steps between log lines when the output is not a terminal.")
@opt(BOOK, "--seed", type=int, default=DEFAULTS["seed"], help="Random seed: same seed, corpus and options, same run.")
@opt(BOOK, "--preset", type=click.Choice(list(PRESETS)), default="default",
     help="Named configuration; explicit options override it.")
@opt(BOOK, "--resume", is_flag=False, flag_value="", default=None, metavar="[PATH]",
     help="Continue a run from PATH (default OUT/latest.npz).")
@opt(BOOK, "--force", is_flag=True, help="Resume even if the corpus changed since the checkpoint.")
@opt(BOOK, "--quiet", "-q", is_flag=True, help="Print only errors and the final summary.")
@click.pass_context
def train(ctx, corpus, out, preset, resume, force, quiet, **options):
    """Train a model on the text file CORPUS."""
    explicit = {k for k in options if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                        ParameterSource.ENVIRONMENT)}
    console = Console(highlight=False)
    try:
        ck = None
        if resume is not None:
            if ctx.get_parameter_source("preset") == ParameterSource.COMMANDLINE:
                raise CharrnnError("--preset cannot be combined with --resume: a resumed run keeps its configuration")
            ck = checkpoint.load(Path(resume) if resume else out / "latest.npz")
            settings = resolve_resume(ck, options, explicit)
        else:
            settings = {**DEFAULTS, **PRESETS[preset], **{k: options[k] for k in explicit}}
        model_settings = {k: settings[k] for k in MODEL_FIELDS}
        train_cfg = TrainConfig(**{k: settings[k] for k in TRAIN_FIELDS})
        data = read_corpus(corpus, train_cfg.encoding, vocab=ck.vocab if ck else None)
        if ck and data.sha256 != ck.meta["corpus"]["sha256"] and not force:
            raise CharrnnError(f"{corpus} differs from the corpus this checkpoint was trained on "
                               f"(SHA-256 {data.sha256[:12]}... vs {ck.meta['corpus']['sha256'][:12]}...); "
                               f"pass --force to resume anyway")
        model_cfg = ModelConfig(vocab_size=len(data.vocab), **model_settings)
        check_writable(out)
        trainer = Trainer(data, model_cfg, train_cfg, out, TrainingReporter(quiet, train_cfg.log_every, console),
                          resume=ck)
        trainer.reporter.start(banner(data, trainer, model_cfg, train_cfg, preset if not ck else "resumed"))
        outcome = trainer.run()
    except KeyboardInterrupt:
        click.echo("charrnn: interrupted twice; stopped without saving (the last checkpoint is untouched)", err=True)
        sys.exit(130)
    except CharrnnError as e:
        raise fail(e) from None
    print_summary(console, outcome.summary)
    if outcome.reason in ("interrupted", "terminated"):
        click.echo(f"charrnn: {outcome.reason}; saved {outcome.summary['latest']} "
                   f"(resume with --resume)", err=True)
    sys.exit(outcome.exit_code)


def resolve_resume(ck: checkpoint.Checkpoint, options: dict, explicit: set) -> dict:
    """A resumed run keeps its configuration; only options that do not change the model or data may change."""
    settings = {**DEFAULTS, **ck.meta.get("train", {}), **ck.meta["model"]}
    for name in (*SHAPE_FIELDS, *DATA_FIELDS, "encoding"):
        if name in explicit and options[name] != settings[name]:
            flag = "--model" if name == "cell" else "--" + name.replace("_", "-")
            raise CharrnnError(f"{flag} {options[name]} differs from the checkpoint's {settings[name]}; "
                               f"the model, data layout and optimiser cannot change on resume")
    settings.update({k: options[k] for k in explicit})
    if "time_limit" not in explicit:
        settings["time_limit"] = None  # a time limit belongs to one invocation
    return settings


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CharrnnError(f"cannot write checkpoints to {out}: {e.strerror or e}") from None


def banner(data, trainer, model_cfg: ModelConfig, cfg: TrainConfig, preset: str) -> dict:
    m = model_cfg
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
        "position": f"step {trainer.step:,}, epoch {trainer.epoch_progress:.2f}",
        "preset": preset,
        "output": str(trainer.out),
    }
