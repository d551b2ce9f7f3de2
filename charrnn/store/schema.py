"""The checkpoint metadata's schema: every field its JSON document may hold, with the type, range and length.

checkpoint.load checks the whole document against META before anything reads a field, so the code past the load
indexes fields without a second look: a field the schema does not name is refused, a missing one is missing for
everyone, and each refusal is one line naming the field (`history[3].val_loss`).  To record something new in
checkpoints, add its name and kind below (optional, so older checkpoints still load); the writer must never
write what this refuses, which tests/test_schema.py holds for a real run's checkpoints.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from charrnn.core.cells import CELLS
from charrnn.core.model import DTYPES
from charrnn.core.optim import OPTIMIZERS
from charrnn.store.corpus import encoding_problem

MAX_HISTORY = 4096  # validation rows a checkpoint keeps (under 1 MB); runs.record.Progress thins them past this
MAX_TEXT = 4096  # characters in a name or a path
INT64_MAX = 2**63 - 1  # counts, steps, seeds: as train's options allow (cli.options.Count), and float arithmetic


class Invalid(Exception):
    """A value that does not fit its field: where (a dotted path) and what was wrong, for one line of message."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where} {problem}")
        self.where, self.problem = where, problem


def shown(value) -> str:
    """A value as a refusal shows it: short, and never the whole of something a hostile file made huge."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Int:
    """An integer (never a boolean, which JSON keeps apart) from lo to hi."""

    lo: int = 0
    hi: int = INT64_MAX

    def check(self, value, where: str) -> None:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise Invalid(where, f"must be an integer from {self.lo:,} to {self.hi:,}, not {shown(value)}")


@dataclass(frozen=True)
class Float:
    """A number in [lo, hi] (or open at either end); finite unless allow_nonfinite (a loss may be NaN)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    allow_nonfinite: bool = False

    def check(self, value, where: str) -> None:
        if type(value) not in (int, float):
            raise Invalid(where, f"must be a number, not {shown(value)}")
        if type(value) is float and not math.isfinite(value):  # an int is finite, however long (no float() of it)
            if self.allow_nonfinite:
                return
            raise Invalid(where, f"must be a finite number, not {shown(value)}")
        if value < self.lo or value > self.hi or (self.lo_open and value == self.lo) or (
                self.hi_open and value == self.hi):
            lo, hi = ("(" if self.lo_open else "[") + f"{self.lo:g}", f"{self.hi:g}" + (")" if self.hi_open else "]")
            raise Invalid(where, f"must be in {lo}, {hi}, not {shown(value)}")


@dataclass(frozen=True)
class Text:
    """A string of at most max_len characters that UTF-8 can write (no lone surrogates), one of choices or
    matching pattern where given."""

    max_len: int = MAX_TEXT
    choices: tuple[str, ...] | None = None
    pattern: str | None = None

    def check(self, value, where: str) -> None:
        if not isinstance(value, str):
            raise Invalid(where, f"must be a string, not {shown(value)}")
        if self.choices is not None and value not in self.choices:
            raise Invalid(where, f"must be one of {', '.join(self.choices)}, not {shown(value)}")
        if len(value) > self.max_len:
            raise Invalid(where, f"must be at most {self.max_len:,} characters long, not {len(value):,}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(where, f"is not of the right form ({shown(value)})")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise Invalid(where, "holds a lone surrogate, which no text can print")


@dataclass(frozen=True)
class Codec(Text):
    """The name of a codec that decodes bytes into text (not base64, rot13 and the like)."""

    def check(self, value, where: str) -> None:
        super().check(value, where)
        problem = encoding_problem(value)
        if problem:
            raise Invalid(where, f"is not usable here: {problem}")


@dataclass(frozen=True)
class Bool:
    def check(self, value, where: str) -> None:
        if not isinstance(value, bool):
            raise Invalid(where, f"must be true or false, not {shown(value)}")


@dataclass(frozen=True)
class Exactly:
    value: object

    def check(self, value, where: str) -> None:
        if type(value) is not type(self.value) or value != self.value:
            raise Invalid(where, f"must be {shown(self.value)}, not {shown(value)}")


@dataclass(frozen=True)
class Maybe:
    """A value of `kind`, or null."""

    kind: object

    def check(self, value, where: str) -> None:
        if value is not None:
            self.kind.check(value, where)


@dataclass(frozen=True)
class ListOf:
    item: object
    max_len: int

    def check(self, value, where: str) -> None:
        if not isinstance(value, list):
            raise Invalid(where, f"must be a list, not {shown(value)}")
        if len(value) > self.max_len:
            raise Invalid(where, f"must hold at most {self.max_len:,} entries, not {len(value):,}")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


@dataclass(frozen=True)
class Record:
    """A JSON object with exactly these fields, less any of `optional` it lacks."""

    fields: dict
    optional: frozenset = field(default_factory=frozenset)

    def check(self, value, where: str = "") -> None:
        if not isinstance(value, dict):
            raise Invalid(where or "the metadata", f"must be an object, not {shown(value)}")
        prefix = f"{where}." if where else ""
        unknown = [k for k in value if k not in self.fields]
        if unknown:
            raise Invalid(where or "the metadata", f"has a field charrnn does not know: {shown(unknown[0])}")
        for name, kind in self.fields.items():
            if name in value:
                kind.check(value[name], prefix + name)
            elif name not in self.optional:
                raise Invalid(prefix + name, "is missing")


def as_text(text: str) -> str:
    """text as the metadata keeps it: a file name's bytes that are not UTF-8 (Python's surrogate escapes) become
    U+FFFD, which every terminal and JSON reader can take."""
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the name's own bytes back
    except UnicodeEncodeError:  # a surrogate that is no escape
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def one_of(names) -> Text:
    return Text(64, tuple(names))


MODEL = Record({  # ModelConfig's fields (core.model): the network's shape
    "vocab_size": Int(1, 0x110000),  # at most one symbol per Unicode code point
    "cell": one_of(CELLS), "hidden": Int(1), "layers": Int(1), "dropout": Float(0, 1, hi_open=True),
    "peephole": Bool(), "coupled": Bool(), "dtype": one_of(DTYPES),
})
TRAIN_FIELDS = {  # TrainConfig's fields (runs.train), with the ranges of train's options
    "seq_len": Int(1), "batch_size": Int(1), "val_frac": Float(0, 1, hi_open=True), "encoding": Codec(64),
    "optimizer": one_of(OPTIMIZERS), "lr": Float(0, lo_open=True),
    "lr_schedule": one_of(("constant", "step", "cosine")), "warmup": Int(0), "lr_decay": Float(0, 1, lo_open=True),
    "lr_decay_after": Float(0), "lr_min": Float(0, 1), "clip": Float(0), "clip_mode": one_of(("norm", "value")),
    "weight_decay": Float(0), "steps": Maybe(Int(1)), "epochs": Maybe(Float(0, lo_open=True)),
    "time_limit": Maybe(Float(0, lo_open=True)), "eval_every": Int(1), "save_every": Int(1),
    "sample_every": Int(0), "sample_length": Int(1), "log_every": Int(1), "seed": Int(0), "rotate": Bool(),
    "val_chars": Maybe(Int(1)),
}
TRAIN = Record(TRAIN_FIELDS, frozenset(TRAIN_FIELDS))  # each may be absent (older runs): the default applies
LOSS = Maybe(Float(allow_nonfinite=True))  # what validation measured; inspect shows a non-finite one as none
PROGRESS = Record({"step": Int(0), "epoch": Int(0), "chunk": Int(0), "epoch_progress": Float(0), "chars_seen": Int(0),
                   "elapsed": Float(0)})
HISTORY_ROW = Record({"step": Int(0), "epoch": Float(0), "train_loss": LOSS, "val_loss": LOSS,
                      "chars_per_s": Maybe(Float(0)), "elapsed": Float(0)})
RNG = Record({"bit_generator": Exactly("PCG64"),  # np.random.Generator.bit_generator.state
              "state": Record({"state": Int(0, 2**128 - 1), "inc": Int(0, 2**128 - 1)}),
              "has_uint32": Int(0, 1), "uinteger": Int(0, 2**32 - 1)})
CORPUS = Record({"name": Text(), "size": Int(0), "sha256": Text(64, pattern="[0-9a-f]{64}"), "chars": Int(0),
                 "train_chars": Int(0), "val_chars": Int(0)})
INIT_FROM = Record({"path": Text(), "step": Maybe(Int(0)), "corpus": Maybe(Text()), "vocab_size": Int(1)})
ENGINE = Record({"name": one_of(("numpy", "torch")), "device": Text(64), "processes": Int(1)})  # its last steps'
SCHEDULE = Record({"name": one_of(("constant", "step", "cosine")), "lr": Float(0), "total_steps": Maybe(Int(0))})

# The whole document.  format, version, charrnn_version and model are in every checkpoint; the rest only in those
# a training run wrote (a checkpoint saved from PyTorch weights has none of them).
META_FIELDS = {
    "format": Exactly("charrnn-checkpoint"), "version": Int(0), "charrnn_version": Text(64), "model": MODEL,
    "train": TRAIN, "progress": PROGRESS, "history": ListOf(HISTORY_ROW, MAX_HISTORY),
    "best_val_loss": Maybe(Float()), "best_step": Maybe(Int(0)), "schedule": SCHEDULE, "rng": RNG,
    "init_from": Maybe(INIT_FROM), "corpus": CORPUS,
    "run": Text(32, pattern="[0-9a-f]{32}"),  # which run wrote it (runs.record.run_id); a resumed run keeps it
    "engine": ENGINE,
}
META = Record(META_FIELDS, frozenset(META_FIELDS) - {"format", "version", "charrnn_version", "model"})
RESUME_FIELDS = ("train", "progress", "rng", "corpus")  # what --resume needs besides the optimiser's arrays
