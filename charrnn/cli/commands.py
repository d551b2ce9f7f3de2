"""The command-line interface: parse, call, print.  No maths here.

Domain errors (CharrnnError) become one line on stderr and exit code 1; bad option values are click types, so
they exit 2 with a usage line.  Ctrl-C and SIGTERM arrive as runs.signals.Stopped, which the entry point
(charrnn/__main__.py) turns into one line and exit 130 or 143; train says what its checkpoint holds first.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from pathlib import Path

import click
import numpy as np
from click.core import ParameterSource
from rich.console import Console

from charrnn import __version__
from charrnn.cli.options import (
    Count,
    CountOrAll,
    Device,
    Duration,
    Encoding,
    Escaped,
    FiniteFloatRange,
    GroupedCommand,
    opt,
)
from charrnn.cli.progress import TrainingReporter, banner, phase_bar, print_summary
from charrnn.cli.views import evaluation, inspection
from charrnn.core.beam import beam_search
from charrnn.core.cells import CELLS
from charrnn.core.model import DTYPES
from charrnn.core.optim import OPTIMIZERS
from charrnn.core.sample import PRIME_CHUNK, stream
from charrnn.engines import ENGINES, INSTALL, process_rank
from charrnn.engines.torch import require
from charrnn.engines.torch.launch import launch, launched
from charrnn.errors import CharrnnError
from charrnn.runs import footprint
from charrnn.runs.evaluate import VAL_STREAMS, evaluate_file
from charrnn.runs.inspect import describe
from charrnn.runs.policy import DEFAULT_OUT, DEFAULTS, Request, find_checkpoint, open_run
from charrnn.runs.presets import PRESETS
from charrnn.runs.signals import Stopped
from charrnn.runs.train import LATEST
from charrnn.store import checkpoint
from charrnn.store.export import export, torch_module_text
from charrnn.store.memory import check_fits
from charrnn.store.textstream import text_pieces

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 110}
# On the group only: a command's variables are then CHARRNN_<COMMAND>_<OPTION> (set on a command, the prefix
# would replace the command's name instead of extending it)
GROUP_CONTEXT = {**CONTEXT, "auto_envvar_prefix": "CHARRNN"}
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)  # an option the user set, not a default


def fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


class Commands(click.Group):
    """charrnn's commands: where memory runs out in spite of the checks made before allocating (a ulimit they
    cannot see), that too is one line, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MemoryError:
            raise click.ClickException("out of memory: NumPy could not allocate an array; try a smaller model, "
                                       "batch or sample count") from None


@click.group(cls=Commands, context_settings=GROUP_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="charrnn")
def main():
    """charrnn: character-level language models (RNN, LSTM, GRU) in NumPy.

    Train on any text file, sample from the model, inspect checkpoints.

    Every option can also be set by an environment variable named CHARRNN_<COMMAND>_<OPTION>, such as
    CHARRNN_TRAIN_LR=1e-3 or CHARRNN_SAMPLE_TEMP=0.8; an option on the command line wins.
    CHARRNN_FAST=0 turns off the packed kernels and the worker processes (docs/fast-path.md).
    """


DATA, MODEL, OPTIM = "Data", "Model", "Optimisation"
LENGTH, BOOK, ENGINE = "Length (whichever comes first)", "Checkpoints and output", "Engine"


@main.command(cls=GroupedCommand, context_settings=CONTEXT,
              epilog="Every option can also be set in the environment as CHARRNN_TRAIN_<OPTION>, such as "
                     "CHARRNN_TRAIN_LR=1e-3 or CHARRNN_TRAIN_OUT=runs/a; an option on the command line wins.  "
                     "CHARRNN_FAST=0 turns off the packed kernels and the worker processes (docs/fast-path.md).")
@click.argument("corpus", type=click.Path(path_type=Path))
@opt(DATA, "--seq-len", "-T", type=Count(1), default=DEFAULTS["seq_len"],
     help="Characters per chunk: the truncation length of backpropagation through time.")
@opt(DATA, "--batch-size", "-B", type=Count(1), default=DEFAULTS["batch_size"],
     help="Parallel streams the corpus is cut into.")
@opt(DATA, "--val-frac", type=FiniteFloatRange(0, 1, max_open=True), default=DEFAULTS["val_frac"],
     help="Fraction at the end of the corpus held out for validation.")
@opt(DATA, "--val-chars", type=CountOrAll(), default=DEFAULTS["val_chars"],
     help="Characters each validation during training scores: windows spread evenly over the held-out split, "
          "the same every time; 'all' for the whole split (charrnn eval always scores a whole file).")
@opt(DATA, "--rotate/--no-rotate", default=DEFAULTS["rotate"],
     help="Start each epoch after the first at a fresh random offset into the training split, so the chunks "
          "differ from epoch to epoch.")
@opt(DATA, "--encoding", type=Encoding(), default=DEFAULTS["encoding"], help="Text encoding of the corpus.")
@opt(DATA, "--cache/--no-cache", default=True,
     help="Keep a big corpus's encoded indices in CORPUS.charrnn-cache.npy and memory-map them next time.")
@opt(MODEL, "--model", "cell", type=click.Choice(list(CELLS)), default=DEFAULTS["cell"], help="Recurrent cell type.")
@opt(MODEL, "--layers", "-L", type=Count(1), default=DEFAULTS["layers"], help="Stacked layers.")
@opt(MODEL, "--hidden", "-H", type=Count(1), default=DEFAULTS["hidden"], help="Units per layer.")
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
@opt(OPTIM, "--warmup", type=Count(0), default=DEFAULTS["warmup"], help="Steps of linear warm-up.")
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
@opt(LENGTH, "--steps", type=Count(1), default=None, help="Stop after this many steps in total.")
@opt(LENGTH, "--epochs", type=FiniteFloatRange(min=0, min_open=True), default=None,
     help="Stop after this many passes over the training split in total.")
@opt(LENGTH, "--time-limit", type=Duration(), default=None,
     help="Stop after this much training time in total (a resumed run counts its earlier time): 90s, 10m, 2h.")
@opt(BOOK, "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_OUT,
     help="Directory for latest.npz and best.npz.")
@opt(BOOK, "--eval-every", type=Count(1), default=DEFAULTS["eval_every"],
     help="Steps between validation runs.")
@opt(BOOK, "--save-every", type=Count(1), default=DEFAULTS["save_every"],
     help="Steps between writes of latest.npz.")
@opt(BOOK, "--sample-every", type=Count(0), default=DEFAULTS["sample_every"],
     help="Steps between samples printed during training; 0: none.")
@opt(BOOK, "--sample-length", type=Count(1), default=DEFAULTS["sample_length"],
     help="Characters per sample printed during training.")
@opt(BOOK, "--log-every", type=Count(1), default=DEFAULTS["log_every"],
     help="Steps between log lines when the output is not a terminal.")
@opt(BOOK, "--seed", type=Count(0), default=DEFAULTS["seed"],
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
@opt(ENGINE, "--engine", type=click.Choice(ENGINES), default="numpy",
     help=f"What runs the steps: numpy, charrnn's own; torch, PyTorch, for GPUs and many processes ({INSTALL}). "
          "Checkpoints are the same: a run resumes on either.")
@opt(ENGINE, "--device", type=Device(), default=None,
     help="The torch engine's device: cpu, cuda, cuda:N or mps.  Default: the first CUDA device, else the CPU.")
@opt(ENGINE, "--procs", type=click.IntRange(min=1), default=1,
     help="Processes of a torch-engine run on this machine, each with its share of the B streams (as torchrun "
          "--nproc-per-node N, which starts runs across machines).")
@click.pass_context
def train(ctx, corpus, out, preset, resume, init_from, force, overwrite, quiet, cache, engine, device, procs,
          **options):
    """Train a model on the text file CORPUS."""
    if engine != "torch" and (device is not None or procs > 1):
        raise click.UsageError("--device and --procs are options of --engine torch")
    if procs > 1 and not launched():  # this process starts the run's processes and waits for them
        try:
            require()
        except CharrnnError as e:
            raise fail(e) from None
        sys.exit(launch(procs, sys.argv[1:]))
    request = Request(corpus, out, options, frozenset(k for k in options if ctx.get_parameter_source(k) in GIVEN),
                      preset, ctx.get_parameter_source("preset") in GIVEN, resume, init_from, force, overwrite, cache,
                      engine, device)
    console = Console(highlight=False)
    leads = process_rank() == 0  # in a run of many processes, the first one speaks for all
    trainer = None
    try:
        with phase_bar("reading corpus", "B") as reading:
            trainer = open_run(request, reading if leads else None)
        if leads:
            trainer.reporter = TrainingReporter(quiet, trainer.cfg.log_every, console)
            trainer.reporter.start(banner(trainer, "resumed" if resume is not None else preset))
        outcome = trainer.run()
        if leads:
            print_summary(console, outcome.summary)
            if outcome.reason in ("interrupted", "terminated"):
                click.echo(f"charrnn: {outcome.reason}; saved {outcome.summary['latest']} (resume with --resume)",
                           err=True)
    except Stopped as stop:  # a second signal, or one outside the loop: before it, during a save, after it
        if not leads:
            pass
        elif trainer is None:
            click.echo(f"charrnn: {stop.reason} before training began; nothing was written", err=True)
        else:
            click.echo(f"charrnn: {stop.reason}; {what_latest_holds(out)}", err=True)
        sys.exit(stop.exit_code)
    except CharrnnError as e:
        if not leads:  # the others meet the same error, or lose touch with the one that did
            sys.exit(1)
        raise fail(e) from None
    sys.exit(outcome.exit_code)


def what_latest_holds(out: Path) -> str:
    """What OUT's latest.npz holds, read from the file itself, so it is true whenever a signal came (saves are
    atomic: the file is the old one or the new one)."""
    try:
        progress = checkpoint.read_meta(out / LATEST).get("progress")
    except CharrnnError:
        progress = None
    if progress is None:
        return "no checkpoint was written"
    return f"{out / LATEST} holds step {progress['step']:,} (resume with --resume)"


# -- sample, inspect, eval, export -----------------------------------------------------------------------------

SEPARATOR = "-" * 40  # the line printed between the samples of --num-samples


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


@contextlib.contextmanager
def printing():
    """The block of a command that prints as it goes: an error is one line and exit 1, a closed pipe a quiet
    stop (stdout_gone); what was printed is flushed at the end.  (Ctrl-C and SIGTERM are the entry point's:
    charrnn.runs.signals.)"""
    try:
        yield
        sys.stdout.flush()
    except CharrnnError as e:
        raise fail(e) from None
    except BrokenPipeError:
        stdout_gone()


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
@click.option("--length", "-n", type=Count(0), default=1000,
              help="Characters to generate per sample (the prime not counted).")
@click.option("--prime", "-p", type=Escaped(allow_empty=True), default="",
              help="Text to start from: it warms up the model and is printed first; \\n is a newline, \\\\ a "
                   "backslash.")
@click.option("--seed", type=Count(0), default=None,
              help="Random seed: same seed, checkpoint and options give the same text. Default: a fresh one.")
@click.option("--top-k", type=Count(1), default=None,
              help="Draw only among the K most likely characters.")
@click.option("--top-p", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="Nucleus sampling: draw only among the most likely characters whose probabilities reach P.")
@click.option("--greedy", is_flag=True, help="Always take the most likely character (argmax); no randomness.")
@click.option("--stop-at", type=Escaped(), default=None,
              help="End a sample right after this text appears; \\n is a newline, so '\\n\\n' stops at a blank line.")
@click.option("--num-samples", "-N", type=Count(1), default=1,
              help=f"Independent samples, generated as one batch and printed in turn, separated by a line of "
                   f"{len(SEPARATOR)} dashes.")
@click.option("--prime-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Read the prime from this file (- for standard input), as it is: for primes too long for a "
                   "command line.")
@click.option("--beam", type=click.IntRange(min=1), default=None, metavar="N",
              help="Beam search over N texts at once: the likeliest continuation by total log-probability, the "
                   "same every time (N = 1 is --greedy); printed when complete.")
@click.option("--length-norm", is_flag=True,
              help="With --beam, rank texts by log-probability per character, so that a longer text ending at "
                   "--stop-at is not penalised for its length.")
def sample(checkpoint_path, temperature, length, prime, seed, top_k, top_p, greedy, stop_at, num_samples,
           prime_file, beam, length_norm):
    """Generate text from a trained checkpoint.

    CHECKPOINT defaults to checkpoints/best.npz, else checkpoints/latest.npz; a directory train wrote (--out)
    gives its best.npz, else its latest.npz.  The text, prime included, streams to stdout as it is generated;
    each sample ends with a newline.  Status goes to stderr, and only to a terminal.
    """
    if beam is None and length_norm:
        raise click.UsageError("--length-norm ranks the texts of --beam; give --beam N too")
    if beam is not None and (greedy or top_k or top_p or temperature != 1.0 or num_samples > 1 or seed is not None):
        raise click.UsageError("--beam searches the model's own probabilities for one best text; it takes no "
                               "--temp, --top-k, --top-p, --greedy, --num-samples or --seed")
    if prime_file is not None:
        if prime:
            raise click.UsageError("give the prime with --prime or with --prime-file, not both")
        prime = read_prime(prime_file)
    path, ck = load_checkpoint(checkpoint_path)
    if seed is None:
        seed = secrets.randbelow(2**32)
    if sys.stderr.isatty():
        m, step = ck.model.cfg, (ck.meta.get("progress") or {}).get("step")
        click.echo(f"charrnn: sampling from {path} ({m.cell.upper()} {m.layers}x{m.hidden}"
                   + (f", step {step:,}" if step is not None else "") + ")"
                   + (f", beam {beam}" if beam else "" if greedy else f", seed {seed}"), err=True)
    with printing():
        streams = beam or num_samples  # a beam search runs its N texts as N streams
        check_fits(footprint.sampling(ck.model.cfg, streams, min(len(prime) + 1, PRIME_CHUNK)),
                   f"{'a beam search over' if beam else 'sampling'} {streams:,} stream(s)")
        if beam is not None:
            found = beam_search(ck.model, ck.vocab, length, beam, prime, stop_at, length_norm)
            pieces = [(0, prime), (0, ck.vocab.decode(found.indices))]
        else:
            pieces = stream(ck.model, ck.vocab, length, np.random.default_rng(seed), prime=prime, stop_at=stop_at,
                            num_samples=num_samples, temperature=temperature, top_k=top_k, top_p=top_p,
                            greedy=greedy)
        write_samples(pieces)


def read_prime(source: str) -> str:
    """--prime-file's text: a file's, or standard input's for -."""
    binary = sys.stdin.buffer if source == "-" else Path(source)
    try:
        return "".join(text_pieces(binary, name="standard input" if source == "-" else source))
    except CharrnnError as e:
        raise fail(e) from None


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
@click.option("--batch-size", "-B", type=Count(1), default=None,
              help="Parallel streams the text is cut into (each starts from a zero state). "
                   f"Default: {VAL_STREAMS}, as validation during training.")
@click.option("--seq-len", "-T", type=Count(1), default=None,
              help="Characters per chunk; the state is carried across chunks. "
                   "Default: the checkpoint's training value.")
@click.option("--encoding", type=Encoding(), default="utf-8", help="Text encoding of FILE (decoded strictly).")
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
    try:
        with phase_bar("reading", "B") as reading, phase_bar("scoring", "char") as scoring:
            result = evaluate_file(ck.model, ck.vocab, text, encoding=encoding, batch_size=batch_size,
                                   seq_len=seq_len, progress=scoring, reading=reading)
    except CharrnnError as e:
        raise fail(e) from None
    result["checkpoint"] = str(checkpoint_path)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        Console(highlight=False).print(evaluation(result, str(checkpoint_path)))


@main.command("export", context_settings=CONTEXT)
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("out", metavar="OUT.npz", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace OUT even if it is not weights export wrote (never a charrnn checkpoint, a link or a "
                   "special file).")
def export_torch(checkpoint_path, out, force):
    """Write the weights as a PyTorch state_dict in a plain .npz (no metadata, no pickle).

    Keys: rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ... (torch.nn.LSTM/GRU/RNN with
    input size V) and decoder.weight, decoder.bias (torch.nn.Linear(H, V)).  Peephole and coupled LSTMs have no
    PyTorch counterpart and are refused.  CHECKPOINT may be a directory train wrote (--out): its best.npz, else
    its latest.npz.  An existing OUT is replaced only if export wrote it (or with --force).
    """
    checkpoint_path, ck = load_checkpoint(checkpoint_path)
    try:
        arrays = export(ck.model, out, force)
    except CharrnnError as e:
        raise fail(e) from None
    click.echo(f"wrote {out}: {len(arrays)} tensors, {sum(a.size for a in arrays.values()):,} parameters "
               f"({ck.model.cfg.dtype}) for {torch_module_text(ck.model.cfg)}")
