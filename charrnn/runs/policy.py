"""The policy of a training run: which settings it runs with, where it starts, and whether it may start at all.

Settings are laid over each other, lowest first: the defaults of TrainConfig and ModelConfig, the `default`
preset, then the chosen preset (a new run) or the run's own configuration (--resume), then the options the user
gave.  A length (--steps, --epochs, --time-limit) given by the user replaces the preset's or the resumed run's
entirely.  A resumed run keeps its model, data layout and optimiser; a fine-tuned one (--init-from) keeps the
trained model's shape.  A new run never replaces another run's checkpoints unless --overwrite says so, and a
resumed one never replaces a checkpoint of another run either (a best.npz copied in, say).  Only one run at a time
trains into a directory: it is locked first.  Everything is decided and checked before a step is trained, and
before the corpus is read where it can be.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from charrnn.core.model import ModelConfig
from charrnn.engines import process_rank
from charrnn.errors import CharrnnError
from charrnn.runs.finetune import InitFrom
from charrnn.runs.presets import PRESETS
from charrnn.runs.record import run_id
from charrnn.runs.train import BEST, LATEST, TrainConfig, Trainer
from charrnn.runs.units import human_duration
from charrnn.store import checkpoint
from charrnn.store.corpus import Corpus, encoding_problem, read_corpus
from charrnn.store.files import check_output, check_writable_dir, existing, short
from charrnn.store.lock import RunLock

MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
SHAPE_FIELDS = ("cell", "layers", "hidden", "peephole", "coupled", "dtype")  # fixed once a run has started
DATA_FIELDS = ("seq_len", "batch_size", "val_frac", "rotate", "optimizer")  # fixed too: stream layout, optimiser
LENGTH_FIELDS = ("steps", "epochs", "time_limit")
DEFAULTS = {**asdict(TrainConfig()), **{f.name: f.default for f in fields(ModelConfig) if f.name in MODEL_FIELDS},
            **{k: v for k, v in PRESETS["default"].items() if k not in LENGTH_FIELDS}}
DEFAULT_OUT = Path("checkpoints")  # train's --out, and where the other commands look when given no CHECKPOINT
CHECKPOINT_NAMES = (BEST, LATEST)  # what train writes into --out, in the order a CHECKPOINT directory is read


@dataclass(frozen=True)
class Request:
    """What the user asked for: a corpus, an output directory, settings (by field name) and how to start."""

    corpus: Path
    out: Path = DEFAULT_OUT
    options: dict = field(default_factory=dict)  # model and training settings by field name; absent: default
    given: frozenset = frozenset()  # the options the user gave (command line or environment), not defaults
    preset: str = "default"
    preset_given: bool = False
    resume: str | None = None  # --resume's PATH, "" for OUT's latest.npz; None: not resuming
    init_from: Path | None = None
    force: bool = False  # resume although the corpus changed
    overwrite: bool = False  # replace another run's checkpoints in OUT
    cache: bool = True  # the corpus cache (charrnn.store.cache)
    engine: str = "numpy"  # what runs the steps (charrnn.engines): any run, resumed ones too, may use either
    device: str | None = None  # the torch engine's device; None: the first CUDA device, else the CPU


@dataclass
class Plan:
    """A run's settings and starting point, before its corpus is read."""

    settings: dict
    resume: checkpoint.Checkpoint | None = None
    source: Path | None = None  # the resumed checkpoint's file
    init_from: InitFrom | None = None

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: self.settings[k] for k in TRAIN_FIELDS})

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **{k: self.settings[k] for k in MODEL_FIELDS})


def plan(req: Request) -> Plan:
    """The settings and starting point the request asks for; refuses what cannot be done."""
    given = set(req.given)
    if req.resume is not None:
        if req.init_from is not None:
            raise CharrnnError("--init-from starts a new run and --resume continues one; give only one of them")
        if req.preset_given:
            raise CharrnnError("--preset cannot be combined with --resume: a resumed run keeps its configuration")
        source = resume_path(req.resume, req.out)
        ck = checkpoint.load(source, resume=True)
        run = Plan(resumed_settings(ck, req.options, given), ck, source)
    else:
        settings = {**DEFAULTS, **without_length(PRESETS[req.preset], given), **{k: req.options[k] for k in given}}
        run = Plan(settings)
        if req.init_from is not None:
            path = find_checkpoint(req.init_from)
            run.init_from = InitFrom(path, checkpoint.load(path))
            run.settings = fine_tuned_settings(run.init_from.checkpoint, settings, given)
    refuse_other_run(req.out, run.resume, run.source, req.overwrite)
    return run


def open_run(req: Request, reading: Callable[[int, int], None] | None = None) -> Trainer:
    """The Trainer for the request: its output directory locked (a second run into it is refused, naming the
    first's pid), planned, its corpus read (and checked against a resumed run's).  A resumed run that has already
    reached its length is refused.  A refused request leaves no directory or lock file behind that it made.
    reading: the corpus's read_corpus progress.  In a run of many processes the first one (rank 0), which writes
    the checkpoints, holds the lock."""
    made = not os.path.lexists(req.out)
    leads = process_rank() == 0
    if leads:
        check_writable_dir(req.out, "checkpoints")
    lock = RunLock(req.out).acquire() if leads else None
    try:
        run = plan(req)
        cfg = run.train_config
        corpus = read_corpus(req.corpus, cfg.encoding, vocab=run.resume.vocab if run.resume else None,
                             cache=req.cache, progress=reading)
        if run.resume is not None and not req.force:
            check_same_corpus(corpus, run.resume, req.corpus)
        if run.init_from is not None:
            corpus = corpus.reindexed(run.init_from.vocab_for(corpus.vocab))
        trainer = Trainer(corpus, run.model_config(len(corpus.vocab)), cfg, req.out, resume=run.resume,
                          init_from=run.init_from, lock=lock, engine=req.engine, device=req.device)
        if run.resume is not None and (reason := trainer.done()):
            raise CharrnnError(already_done(trainer, reason, run.source))
    except BaseException:
        if lock is not None:
            lock.abandon(made)
        raise
    return trainer


def resume_path(resume: str, out: Path) -> Path:
    """--resume's file: PATH as named; a directory's latest.npz (the run's last state, where best.npz may be
    older); with no PATH, OUT's latest.npz."""
    path = Path(resume or out)
    return path / LATEST if not resume or path.is_dir() else path


def find_checkpoint(path: Path | None) -> Path:
    """The file a CHECKPOINT argument stands for: a file as named; a directory (train's --out) its best.npz, else
    its latest.npz (when no validation ran); no argument, the same in checkpoints/, where `make train` leaves them."""
    folder = DEFAULT_OUT if path is None else Path(path)
    if path is not None and not folder.is_dir():
        return folder  # checkpoint.load explains a missing or broken file
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    if path is None:
        raise CharrnnError("no CHECKPOINT given and none at checkpoints/best.npz or checkpoints/latest.npz; train "
                           "one first with `charrnn train CORPUS.txt` (or `make train`), or name a checkpoint file")
    raise CharrnnError(f"{folder} is a directory with no best.npz or latest.npz in it; name a checkpoint file")


def resumed_settings(ck: checkpoint.Checkpoint, options: dict, given: set) -> dict:
    """A resumed run keeps its configuration; only options that do not change the model or data may change."""
    settings = {**DEFAULTS, **without_length(ck.meta.get("train", {}), given), **ck.meta["model"]}
    for name in (*SHAPE_FIELDS, *DATA_FIELDS, "encoding"):
        if name in given and not same_setting(name, options[name], settings[name]):
            raise CharrnnError(f"{flag(name)} {options[name]} differs from the checkpoint's {settings[name]}; "
                               f"the model, data layout and optimiser cannot change on resume")
    return {**settings, **{k: options[k] for k in given}}


def same_setting(name: str, a, b) -> bool:
    """Whether two values of a setting are the same: encodings by the codec they name (utf8 is utf-8)."""
    if name == "encoding" and not encoding_problem(a) and not encoding_problem(b):
        return codecs.lookup(a).name == codecs.lookup(b).name
    return a == b


def fine_tuned_settings(ck: checkpoint.Checkpoint, settings: dict, given: set) -> dict:
    """A new run from a trained model: the model (its shape, and its dropout unless given) is the checkpoint's;
    the training is the new run's own settings."""
    model = {k: v for k, v in asdict(ck.model.cfg).items() if k in MODEL_FIELDS}
    for name in SHAPE_FIELDS:
        if name in given and settings[name] != model[name]:
            raise CharrnnError(f"{flag(name)} {settings[name]} differs from --init-from's {model[name]}; a "
                               f"fine-tuned model keeps the shape it was trained with")
    return {**settings, **{k: v for k, v in model.items() if k not in given}}


def without_length(settings: dict, given: set) -> dict:
    """A preset's or a resumed run's settings, less its length when the user gives one: the length given
    replaces it entirely (whichever comes first applies among the lengths given, not to a leftover one)."""
    if not given & set(LENGTH_FIELDS):
        return settings
    return {k: v for k, v in settings.items() if k not in LENGTH_FIELDS}


def refuse_other_run(out: Path, resumed: checkpoint.Checkpoint | None, source: Path | None,
                     overwrite: bool = False) -> None:
    """Nothing is lost: a run writes best.npz and latest.npz into OUT, so it stops first, saying how to go on,
    where they hold anything but its own run's checkpoints: another run's, for a new run or one resumed from
    elsewhere; for a run resumed from OUT's own latest.npz, a checkpoint of another run (a best.npz copied in);
    something that is not a checkpoint at all.  --overwrite replaces them; nothing replaces a symbolic link, a
    FIFO or a device there (store.files.check_output)."""
    own = resumed is not None and source.resolve().parent == out.resolve()
    others = []
    for name in CHECKPOINT_NAMES:
        path = out / name
        check_output(path, "a checkpoint", lambda p: True, force=True)  # a regular file or nothing; whose, below
        if overwrite or existing(path) is None:
            continue
        try:
            meta = checkpoint.read_meta(path)
        except CharrnnError as e:
            raise CharrnnError(f"{e}; training into {short(out)} would replace it: --overwrite does so, or train "
                               f"into another directory with --out") from None
        if own and run_id(meta) != run_id(resumed.meta):
            raise CharrnnError(f"{short(path)} belongs to another run than the {LATEST} resumed beside it (copied "
                               f"in?); the run would replace it: move it away, or replace it with --overwrite")
        if not own:
            others.append(name)
    if others:
        raise CharrnnError(f"{short(out)} holds another run's {' and '.join(others)}; continue it with --resume, "
                           f"replace it with --overwrite, or train into another directory with --out")


def check_same_corpus(corpus: Corpus, ck: checkpoint.Checkpoint, path: Path) -> None:
    """A resumed run trains on the corpus it started on, unless --force says otherwise."""
    was = ck.meta["corpus"]["sha256"]
    if corpus.sha256 != was:
        raise CharrnnError(f"{path} differs from the corpus this checkpoint was trained on (SHA-256 "
                           f"{corpus.sha256[:12]}... vs {was[:12]}...); pass --force to resume anyway")


def already_done(trainer: Trainer, reason: str, source: Path) -> str:
    """Why a resumed run would train nothing: its length is a total it has already reached."""
    cfg, progress = trainer.cfg, trainer.progress
    if reason == "steps":
        length = f"--steps {cfg.steps:,}"
    elif reason == "epochs":
        length = f"--epochs {cfg.epochs:g}"
    else:
        length = f"--time-limit {human_duration(cfg.time_limit)}"
    return (f"{source} is at step {progress.step:,} (epoch {progress.epoch_progress:.2f}, "
            f"{human_duration(progress.run_time)} of training), which already reaches {length}: lengths count the "
            f"whole run, so give a larger one to train further")


def flag(name: str) -> str:
    """The train option that sets a configuration field."""
    return "--model" if name == "cell" else "--" + name.replace("_", "-")
