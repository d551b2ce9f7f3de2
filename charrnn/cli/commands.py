"""The command-line interface: parse, call, print.  No maths here.

Domain errors (CharrnnError) become one line on stderr and exit code 1; bad option values are click types, so
they exit 2 with a usage line.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console
from tqdm import tqdm

from charrnn import __version__
from charrnn.cli.options import Duration, Escaped, FiniteFloatRange, GroupedCommand, opt
from charrnn.cli.progress import TrainingReporter, format_bytes, human_duration, print_summary
from charrnn.cli.views import evaluation, inspection, started_from
from charrnn.core.cells import CELLS
from charrnn.core.model import DTYPES, ModelConfig
from charrnn.core.optim import OPTIMIZERS
from charrnn.core.sample import stream
from charrnn.errors import CharrnnError
from charrnn.fast.gemm import describe_path
from charrnn.runs.evaluate import VAL_STREAMS, evaluate_file
from charrnn.runs.finetune import InitFrom
from charrnn.runs.inspect import describe
from charrnn.runs.presets import PRESETS
from charrnn.runs.train import BEST, LATEST, TrainConfig, Trainer
from charrnn.store import checkpoint
from charrnn.store.corpus import read_corpus
from charrnn.store.export import export, torch_module_text

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}
MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
SHAPE_FIELDS = ("cell", "layers", "hidden", "peephole", "coupled", "dtype")  # fixed once a run has started
DATA_FIELDS = ("seq_len", "batch_size", "val_frac", "rotate", "optimizer")  # fixed too: stream layout, optimiser
LENGTH_FIELDS = ("steps", "epochs", "time_limit")
DEFAULT_OUT = Path("checkpoints")  # train's --out, and where sample looks when given no CHECKPOINT
CHECKPOINT_NAMES = (BEST, LATEST)  # what train writes into --out, in the order a CHECKPOINT directory is read
DEFAULTS = {**asdict(TrainConfig()), **{f.name: f.default for f in fields(ModelConfig) if f.name in MODEL_FIELDS},
            **{k: v for k, v in PRESETS["default"].items() if k not in LENGTH_FIELDS}}


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
@opt(DATA, "--val-frac", type=FiniteFloatRange(0, 1, max_open=True), default=DEFAULTS["val_frac"],
     help="Fraction at the end of the corpus held out for validation.")
@opt(DATA, "--rotate/--no-rotate", default=DEFAULTS["rotate"],
     help="Start each epoch after the first at a fresh random offset into the training split, so the chunks "
          "differ from epoch to epoch.")
@opt(DATA, "--encoding", default=DEFAULTS["encoding"], help="Text encoding of the corpus.")
@opt(DATA, "--cache/--no-cache", default=True,
     help="Keep a big corpus's encoded indices in CORPUS.charrnn-cache.npy and memory-map them next time.")
@opt(MODEL, "--model", "cell", type=click.Choice(list(CELLS)), default=DEFAULTS["cell"], help="Recurrent cell type.")
@opt(MODEL, "--layers", "-L", type=click.IntRange(min=1), default=DEFAULTS["layers"], help="Stacked layers.")
@opt(MODEL, "--hidden", "-H", type=click.IntRange(min=1), default=DEFAULTS["hidden"], help="Units per layer.")
@opt(MODEL, "--dropout", type=FiniteFloatRange(0, 1, max_open=True), default=DEFAULTS["dropout"],
     help="Dropout between layers and before the decoder.")
@opt(MODEL, "--peephole/--no-peephole", default=DEFAULTS["peephole"], help="LSTM peephole connections.")
@opt(MODEL, "--coupled/--no-coupled", default=DEFAULTS["coupled"], help="LSTM coupled input-forget gates (f = 1 - i).")
@opt(MODEL, "--dtype", type=click.Choice(DTYPES), default=DEFAULTS["dtype"], help="Floating-point type.")
@opt(OPTIM, "--optimizer", type=click.Choice(list(OPTIMIZERS)), default=DEFAULTS["optimizer"], help="Optimiser.")
@opt(OPTIM, "--lr", type=FiniteFloatRange(min=0, min_open=True), default=DEFAULTS["lr"], help="Learning rate.")
@opt(OPTIM, "--lr-schedule", type=click.Choice(["constant", "step", "cosine"]), default=DEFAULTS["lr_schedule"],
     help="constant; step: x--lr-decay per epoch after --lr-decay-after epochs; cosine: down to --lr-min x lr "
          "over --steps or --epochs, else over --time-limit.")
@opt(OPTIM, "--warmup", type=click.IntRange(min=0), default=DEFAULTS["warmup"], help="Steps of linear warm-up.")
@opt(OPTIM, "--lr-decay", type=FiniteFloatRange(0, 1, min_open=True), default=DEFAULTS["lr_decay"],
     help="Step schedule: factor per epoch.")
@opt(OPTIM, "--lr-decay-after", type=FiniteFloatRange(min=0), default=DEFAULTS["lr_decay_after"],
     help="Step schedule: epochs before decay starts.")
@opt(OPTIM, "--lr-min", type=FiniteFloatRange(0, 1), default=DEFAULTS["lr_min"],
     help="Cosine schedule: final learning rate as a fraction of --lr.")
@opt(OPTIM, "--clip", type=FiniteFloatRange(min=0), default=DEFAULTS["clip"],
     help="Gradient clipping threshold; 0 turns it off.")
@opt(OPTIM, "--clip-mode", type=click.Choice(["norm", "value"]), default=DEFAULTS["clip_mode"],
     help="norm: rescale by the global norm; value: clamp each element (char-rnn).")
@opt(OPTIM, "--weight-decay", type=FiniteFloatRange(min=0), default=DEFAULTS["weight_decay"],
     help="Weight decay of the weight matrices (decoupled with adamw).")
@opt(LENGTH, "--steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in total.")
@opt(LENGTH, "--epochs", type=FiniteFloatRange(min=0, min_open=True), default=None,
     help="Stop after this many passes over the training split in total.")
@opt(LENGTH, "--time-limit", type=Duration(), default=None,
     help="Stop after this much training time in total (a resumed run counts its earlier time): 90s, 10m, 2h.")
@opt(BOOK, "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
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
@opt(BOOK, "--seed", type=click.IntRange(min=0), default=DEFAULTS["seed"],
     help="Random seed: same seed, corpus and options, same run.")
@opt(BOOK, "--preset", type=click.Choice(list(PRESETS)), default="default",
     help="Named configuration; explicit options override it.")
@opt(BOOK, "--resume", is_flag=False, flag_value="", default=None, metavar="[PATH]",
     help="Continue a run from PATH, a checkpoint or a directory's latest.npz (default OUT/latest.npz).")
@opt(BOOK, "--init-from", type=click.Path(path_type=Path), default=None, metavar="CHECKPOINT",
     help="Start a new run from a trained model (a checkpoint, or a directory's best.npz) to fine-tune it on "
          "CORPUS: its shape and weights, a fresh optimiser; characters it lacks extend its vocabulary.")
@opt(BOOK, "--force", is_flag=True, help="Resume even if the corpus changed since the checkpoint.")
@opt(BOOK, "--overwrite", is_flag=True,
     help="Replace the checkpoints of another run in OUT (else a new run refuses to start there).")
@opt(BOOK, "--quiet", "-q", is_flag=True, help="Print only errors and the final summary.")
@click.pass_context
def train(ctx, corpus, out, preset, resume, init_from, force, overwrite, quiet, cache, **options):
    """Train a model on the text file CORPUS."""
    explicit = {k for k in options if ctx.get_parameter_source(k) in (ParameterSource.COMMANDLINE,
                                                                        ParameterSource.ENVIRONMENT)}
    console = Console(highlight=False)
    try:
        ck = start = None
        if resume is not None:
            if init_from is not None:
                raise CharrnnError("--init-from starts a new run and --resume continues one; give only one of them")
            if ctx.get_parameter_source("preset") == ParameterSource.COMMANDLINE:
                raise CharrnnError("--preset cannot be combined with --resume: a resumed run keeps its configuration")
            source = resume_path(resume, out)
            ck = checkpoint.load(source)
            settings = resolve_resume(ck, options, explicit)
        else:
            settings = {**DEFAULTS, **without_length(PRESETS[preset], explicit), **{k: options[k] for k in explicit}}
            if init_from is not None:
                start = InitFrom(*load_checkpoint(init_from))
                settings = resolve_init_from(start.checkpoint, settings, explicit)
        if not overwrite:
            refuse_other_run(out, None if ck is None else source)
        model_settings = {k: settings[k] for k in MODEL_FIELDS}
        train_cfg = TrainConfig(**{k: settings[k] for k in TRAIN_FIELDS})
        data = read_corpus(corpus, train_cfg.encoding, vocab=ck.vocab if ck else None, cache=cache)
        if ck and data.sha256 != ck.meta["corpus"]["sha256"] and not force:
            raise CharrnnError(f"{corpus} differs from the corpus this checkpoint was trained on "
                               f"(SHA-256 {data.sha256[:12]}... vs {ck.meta['corpus']['sha256'][:12]}...); "
                               f"pass --force to resume anyway")
        if start:
            data = data.reindexed(start.vocab_for(data.vocab))
        model_cfg = ModelConfig(vocab_size=len(data.vocab), **model_settings)
        trainer = Trainer(data, model_cfg, train_cfg, out, TrainingReporter(quiet, train_cfg.log_every, console),
                          resume=ck, init_from=start)
        if ck and (reason := trainer.done()):
            raise CharrnnError(already_done(trainer, reason, source))
        check_writable(out)
        trainer.reporter.start(banner(data, trainer, model_cfg, train_cfg, preset if not ck else "resumed"))
        outcome = trainer.run()
    except KeyboardInterrupt:
        click.echo("charrnn: interrupted before the run could save; existing checkpoints are untouched", err=True)
        sys.exit(130)
    except CharrnnError as e:
        raise fail(e) from None
    print_summary(console, outcome.summary)
    if outcome.reason in ("interrupted", "terminated"):
        click.echo(f"charrnn: {outcome.reason}; saved {outcome.summary['latest']} "
                   f"(resume with --resume)", err=True)
    sys.exit(outcome.exit_code)


def refuse_other_run(out: Path, source: Path | None) -> None:
    """Nothing is lost: a new run (or one resumed from elsewhere) would replace the checkpoints of the run that
    OUT holds, so it stops first, saying how to go on."""
    if source is not None and source.resolve().parent == out.resolve():
        return  # continuing OUT's own run
    held = [name for name in CHECKPOINT_NAMES if (out / name).is_file()]
    if held:
        raise CharrnnError(f"{out} holds another run's {' and '.join(held)}; continue it with --resume, replace it "
                           f"with --overwrite, or train into another directory with --out")


def resume_path(resume: str, out: Path) -> Path:
    """--resume's file: PATH as named; a directory's latest.npz (the run's last state, where best.npz may be
    older); with no PATH, OUT's latest.npz."""
    path = Path(resume or out)
    return path / LATEST if not resume or path.is_dir() else path


def resolve_resume(ck: checkpoint.Checkpoint, options: dict, explicit: set) -> dict:
    """A resumed run keeps its configuration; only options that do not change the model or data may change."""
    settings = {**DEFAULTS, **without_length(ck.meta.get("train", {}), explicit), **ck.meta["model"]}
    for name in (*SHAPE_FIELDS, *DATA_FIELDS, "encoding"):
        if name in explicit and options[name] != settings[name]:
            raise CharrnnError(f"{flag(name)} {options[name]} differs from the checkpoint's {settings[name]}; "
                               f"the model, data layout and optimiser cannot change on resume")
    settings.update({k: options[k] for k in explicit})
    return settings


def without_length(settings: dict, explicit: set) -> dict:
    """A preset's or a resumed run's settings, less its length when the user gives one: the length given
    replaces it entirely (whichever comes first applies among the lengths given, not to a leftover one)."""
    if not explicit & set(LENGTH_FIELDS):
        return settings
    return {k: v for k, v in settings.items() if k not in LENGTH_FIELDS}


def resolve_init_from(ck: checkpoint.Checkpoint, settings: dict, explicit: set) -> dict:
    """A new run from a trained model: the model (its shape, and its dropout unless given) is the checkpoint's;
    the training is the new run's own settings."""
    model = {k: v for k, v in asdict(ck.model.cfg).items() if k in MODEL_FIELDS}
    for name in SHAPE_FIELDS:
        if name in explicit and settings[name] != model[name]:
            raise CharrnnError(f"{flag(name)} {settings[name]} differs from --init-from's {model[name]}; a "
                               f"fine-tuned model keeps the shape it was trained with")
    return {**settings, **{k: v for k, v in model.items() if k not in explicit}}


def flag(name: str) -> str:
    """The train option that sets a configuration field."""
    return "--model" if name == "cell" else "--" + name.replace("_", "-")


def already_done(trainer: Trainer, reason: str, source: Path) -> str:
    """Why a resumed run would train nothing: its length is a total it has already reached."""
    cfg = trainer.cfg
    if reason == "steps":
        length = f"--steps {cfg.steps:,}"
    elif reason == "epochs":
        length = f"--epochs {cfg.epochs:g}"
    else:
        length = f"--time-limit {human_duration(cfg.time_limit)}"
    return (f"{source} is at step {trainer.step:,} (epoch {trainer.epoch_progress:.2f}, "
            f"{human_duration(trainer.run_time)} of training), which already reaches {length}: lengths count the "
            f"whole run, so give a larger one to train further")


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
        "runs on": describe_path(cfg.batch_size, m.dtype),
        "length": ", ".join(x for x in length if x) or "until Ctrl-C",
        "position": f"step {trainer.step:,}, epoch {trainer.epoch_progress:.2f}",
        "preset": preset,
        **({"init from": started_from(trainer.init_from, len(data.vocab))} if trainer.init_from else {}),
        "output": str(trainer.out),
    }


# -- sample, inspect, eval, export -----------------------------------------------------------------------------

SEPARATOR = "-" * 40  # the line printed between the samples of --num-samples


def find_checkpoint(path: Path | None) -> Path:
    """The file a CHECKPOINT argument stands for: a file as named; a directory (train's --out) its best.npz, else
    its latest.npz (when no validation ran); no argument, the same in checkpoints/, where `make train` leaves them."""
    folder = DEFAULT_OUT if path is None else path
    if path is not None and not path.is_dir():
        return path  # checkpoint.load explains a missing or broken file
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    if path is None:
        raise CharrnnError("no CHECKPOINT given and none at checkpoints/best.npz or checkpoints/latest.npz; train "
                           "one first with `charrnn train CORPUS.txt` (or `make train`), or name a checkpoint file")
    raise CharrnnError(f"{folder} is a directory with no best.npz or latest.npz in it; name a checkpoint file")


def load_checkpoint(path: Path | None) -> tuple[Path, checkpoint.Checkpoint]:
    """find_checkpoint, then load it: (the file, the checkpoint), or a one-line error."""
    try:
        path = find_checkpoint(path)
        return path, checkpoint.load(path)
    except CharrnnError as e:
        raise fail(e) from None


def stdout_gone() -> None:
    """The reader closed the pipe (`charrnn sample | head`): point stdout at /dev/null so the final flush cannot
    fail again, and stop quietly with status 0 (nothing went wrong here)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. under CliRunner)
        pass
    sys.exit(0)


def write_samples(pieces) -> None:
    """Print (sample number, text) pieces as they come, flushing each: samples one after another, each ending in
    a newline (added if its text lacks one), separated by SEPARATOR lines."""
    current, last = 0, "\n"
    for k, piece in pieces:
        if k != current:
            click.echo(("" if last == "\n" else "\n") + SEPARATOR)
            current, last = k, "\n"
        if piece:
            click.echo(piece, nl=False)  # echo flushes, so a long sample shows its progress
            last = piece[-1]
    if last != "\n":
        click.echo()


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="[CHECKPOINT]", required=False,
                type=click.Path(path_type=Path))
@click.option("--temp", "-t", "temperature", type=FiniteFloatRange(min=0, min_open=True), default=1.0,
              help="Softmax temperature: the logits are divided by it. Below 1 is safer, above 1 wilder.")
@click.option("--length", "-n", type=click.IntRange(min=0), default=1000,
              help="Characters to generate per sample (the prime not counted).")
@click.option("--prime", "-p", type=Escaped(allow_empty=True), default="",
              help="Text to start from: it warms up the model and is printed first; \\n is a newline, \\\\ a "
                   "backslash.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Random seed: same seed, checkpoint and options give the same text. Default: a fresh one.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Draw only among the K most likely characters.")
@click.option("--top-p", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="Nucleus sampling: draw only among the most likely characters whose probabilities reach P.")
@click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax); no randomness.")
@click.option("--stop-at", type=Escaped(), default=None,
              help="End a sample right after this text appears; \\n is a newline, so '\\n\\n' stops at a blank line.")
@click.option("--num-samples", "-N", type=click.IntRange(min=1), default=1,
              help=f"Independent samples, generated as one batch and printed in turn, separated by a line of "
                   f"{len(SEPARATOR)} dashes.")
def sample(checkpoint_path, temperature, length, prime, seed, top_k, top_p, greedy, stop_at, num_samples):
    """Generate text from a trained checkpoint.

    CHECKPOINT defaults to checkpoints/best.npz, else checkpoints/latest.npz; a directory train wrote (--out)
    gives its best.npz, else its latest.npz.  The text, prime included, streams to stdout as it is generated;
    each sample ends with a newline.  Status goes to stderr, and only to a terminal.
    """
    path, ck = load_checkpoint(checkpoint_path)
    if seed is None:
        seed = secrets.randbelow(2**32)
    if sys.stderr.isatty():
        m, step = ck.model.cfg, (ck.meta.get("progress") or {}).get("step")
        click.echo(f"charrnn: sampling from {path} ({m.cell.upper()} {m.layers}x{m.hidden}"
                   + (f", step {step:,}" if step is not None else "") + ")"
                   + ("" if greedy else f", seed {seed}"), err=True)
    try:
        pieces = stream(ck.model, ck.vocab, length, np.random.default_rng(seed), prime=prime, stop_at=stop_at,
                        num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
        write_samples(pieces)
        sys.stdout.flush()
    except CharrnnError as e:
        raise fail(e) from None
    except BrokenPipeError:
        stdout_gone()
    except KeyboardInterrupt:
        sys.exit(130)


@main.command(context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON, for scripts.")
def inspect(checkpoint_path, as_json):
    """Show what a checkpoint holds: model, vocabulary, training, losses, corpus and the loss curves.

    CHECKPOINT may be a directory train wrote (--out): its best.npz, else its latest.npz."""
    try:
        facts = describe(find_checkpoint(checkpoint_path))
    except CharrnnError as e:
        raise fail(e) from None
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    console = Console(highlight=False)
    console.print(inspection(facts, console.width))


@main.command("eval", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("text", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--batch-size", "-B", type=click.IntRange(min=1), default=None,
              help="Parallel streams the text is cut into (each starts from a zero state). "
                   f"Default: {VAL_STREAMS}, as validation during training.")
@click.option("--seq-len", "-T", type=click.IntRange(min=1), default=None,
              help="Characters per chunk; the state is carried across chunks. "
                   "Default: the checkpoint's training value.")
@click.option("--encoding", default="utf-8", help="Text encoding of FILE (decoded strictly).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, for scripts.")
def evaluate(checkpoint_path, text, batch_size, seq_len, encoding, as_json):
    """Score a text file: average loss (nats/char), bits per character and perplexity.

    Characters outside the model's vocabulary are counted, reported and skipped; the rest is scored as one text.
    CHECKPOINT may be a directory train wrote (--out): its best.npz, else its latest.npz.
    """
    checkpoint_path, ck = load_checkpoint(checkpoint_path)
    trained = ck.meta.get("train") or {}
    batch_size = batch_size or VAL_STREAMS
    seq_len = seq_len or trained.get("seq_len") or 64
    bar = tqdm(disable=None, file=sys.stderr, unit="char", unit_scale=True, leave=False, desc="scoring")

    def progress(n, total):
        bar.total = total
        bar.update(n)

    try:
        result = evaluate_file(ck.model, ck.vocab, text, encoding=encoding, batch_size=batch_size, seq_len=seq_len,
                               progress=progress)
    except CharrnnError as e:
        raise fail(e) from None
    finally:
        bar.close()
    result["checkpoint"] = str(checkpoint_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(evaluation(result, str(checkpoint_path)))


@main.command("export", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT.npz", type=click.Path(dir_okay=False, path_type=Path))
def export_torch(checkpoint_path, out):
    """Write the weights as a PyTorch state_dict in a plain .npz (no metadata, no pickle).

    Keys: rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ... (torch.nn.LSTM/GRU/RNN with
    input size V) and decoder.weight, decoder.bias (torch.nn.Linear(H, V)).  Peephole and coupled LSTMs have no
    PyTorch counterpart and are refused.  CHECKPOINT may be a directory train wrote (--out): its best.npz, else
    its latest.npz.
    """
    checkpoint_path, ck = load_checkpoint(checkpoint_path)
    try:
        if out.exists() and out.resolve() == checkpoint_path.resolve():
            raise CharrnnError(f"{out} is the checkpoint itself; choose another output file")
        arrays = export(ck.model, out)
    except CharrnnError as e:
        raise fail(e) from None
    click.echo(f"wrote {out}: {len(arrays)} tensors, {sum(a.size for a in arrays.values()):,} parameters "
               f"({ck.model.cfg.dtype}) for {torch_module_text(ck.model.cfg)}")
