"""Checkpoints: one `.npz` holding parameters, optimiser state, vocabulary, carried state, the torch engine's RNG
state and a JSON document.

Arrays keep their PyTorch-style names (`weight_ih_l0`, ..., `optim.m.<name>`); the vocabulary is an int32
code-point array and the metadata is a JSON document stored as uint8 bytes, so nothing needs pickle.  Files are
written atomically: a crash at any moment leaves the previous file intact.

A checkpoint is also a file anyone can hand us, so loading trusts nothing in it and reads no more than the model
needs.  The zip's central directory is read through a byte budget (zipfile would read as large a directory as the
file claims); the metadata, bounded in size, is parsed and checked field by field against store.schema; from it
follows every member the file may hold, with its dtype and shape (MEMBERS below), and each member's declared
header and sizes are checked against those before a byte of its data is read.  Unknown members are refused,
members that are not needed are not inflated (the optimiser's, the carried and the RNG state only for --resume), and the
arrays that are read are checked as they arrive: no parameter or state may be non-finite or beyond the magnitude
at which the model's arithmetic overflows (ModelConfig.safe_magnitude).  Every refusal is one line naming the
file and the member or field.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.core.cells import STATE_NAMES
from charrnn.core.model import Model, ModelConfig, param_shapes
from charrnn.core.optim import OPTIMIZERS
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.store.files import open_regular, short, write_atomically
from charrnn.store.memory import check_fits
from charrnn.store.schema import META, RESUME_FIELDS, Invalid

FORMAT = "charrnn-checkpoint"
VERSION = 1
MAX_META = 1 << 20  # bytes of metadata: schema.MAX_HISTORY rows of at most 200 bytes, and a few paths.
# Parsing hostile JSON this size costs at most ~27 MB of Python objects (measured: 25x for '[[],[],...')
MAX_DIRECTORY = 1 << 20  # bytes of the zip's directory and end records: room for some 10,000 members
MAX_HEADER = 4096  # bytes of a member's .npy header (numpy writes 128)
CHUNK = 1 << 20  # bytes read into an array at a time, each checked as it arrives
MAX_RNG = 1 << 16  # bytes of an engine's generator state (torch's CPU generator: 5,056)
ENGINE_RNGS = ("rng.torch",)  # an engine's generator state, as bytes: charrnn.engines.torch's RNG_KEY
DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, NotImplementedError,
          RuntimeError, OverflowError)  # what zipfile and numpy's header parser raise on broken bytes


@dataclass
class Checkpoint:
    """What a checkpoint holds, loaded and validated."""

    model: Model
    vocab: Vocab
    meta: dict  # format, versions, model/train config, progress, rng, history, corpus ... (store.schema.META)
    optim: dict[str, np.ndarray] = field(default_factory=dict)  # optim.* arrays, read for --resume only
    state: tuple[np.ndarray, ...] = ()  # the training streams' carried hidden state, (L, B, H) each, ditto
    rng: dict[str, np.ndarray] = field(default_factory=dict)  # rng.* arrays: an engine's generator state, ditto
    resumable: bool = False  # it holds everything --resume needs (metadata and optimiser state)


def save(path, model: Model, vocab: Vocab, meta: dict, optim: dict | None = None, state=(),
         rng: dict | None = None) -> None:
    """Write atomically: temp file in the same directory, flush + fsync, os.replace, fsync the directory.
    The metadata is checked against the schema first: a checkpoint that load would refuse is never written.
    rng: arrays named rng.<engine> (the torch engine's generator state: bytes, never a pickle)."""
    meta = {"format": FORMAT, "version": VERSION, "charrnn_version": __version__, **meta,
            "model": model.cfg.to_dict()}
    try:
        META.check(meta)
    except Invalid as e:
        raise CharrnnError(f"cannot save {short(path)}: metadata field {e}") from None
    arrays = dict(model.params)
    arrays.update(optim or {})
    arrays.update({f"state.{n}": s for n, s in zip(STATE_NAMES[model.cfg.cell], state, strict=False)})
    arrays.update(rng or {})
    arrays["vocab"] = vocab.code_points
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    atomic_savez(path, arrays)


def atomic_savez(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, atomically (files.write_atomically): through an open file, so no `.npz` is appended to the name."""
    write_atomically(path, lambda f: np.savez(f, **arrays))


def remove_stale_temp_files(directory) -> None:
    """Delete temp files a killed save left behind (`.latest.npz.*.tmp`); the real files are never touched."""
    for tmp in Path(directory).glob(".*.npz.*.tmp"):
        tmp.unlink(missing_ok=True)


# -- reading: a byte budget, the members and their headers ------------------------------------------------------

class Budget:
    """A file that refuses reads past a budget: zipfile reads a central directory as large as the end record
    says, so the directory is read through one before anything is known about the file."""

    def __init__(self, f, budget: int):
        self.f, self.left = f, budget
        self.size = os.fstat(f.fileno()).st_size

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.f.tell() if n is None or n < 0 else n
        if n > self.left:
            raise OverBudget
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def seekable(self) -> bool:
        return True


class OverBudget(Exception):
    """A read the budget did not allow."""


@dataclass
class Member:
    """An array member as its zip entry and .npy header declare it: nothing of its data read yet."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # where its data starts in the member: the .npy header's length


def _entries(zf: zipfile.ZipFile, where: str) -> dict[str, zipfile.ZipInfo]:
    """name -> entry of every member (np.savez names them `<name>.npy`); duplicates, encrypted members and
    compression np.savez does not write are refused."""
    entries = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy") or info.filename[:-4] in entries:
            raise CharrnnError(f"{where} is not a charrnn checkpoint (member {shown_name(info.filename)} "
                               f"{'appears twice' if info.filename[:-4] in entries else 'is not an array'})")
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CharrnnError(f"{where}: member {shown_name(info.filename)} is encrypted or compressed in a way "
                               f"np.savez never writes")
        entries[info.filename[:-4]] = info
    return entries


def shown_name(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:57] + "...")


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Member:
    """A member's declared dtype and shape from its .npy header, checked against its entry's sizes: the data
    after the header must be exactly shape x itemsize bytes, and a compressed member no larger than that."""
    with zf.open(info) as m:
        version = np.lib.format.read_magic(m)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(m, max_header_size=MAX_HEADER)
        header = m.tell()
    name = shown_name(info.filename[:-4])
    if dtype.hasobject:
        raise CharrnnError(f"{where} contains pickled objects (member {name}); refusing to load it "
                           f"(allow_pickle=False)")
    if fortran and len(shape) > 1:
        raise CharrnnError(f"{where}: member {name} is stored in Fortran order, which charrnn never writes")
    if any(d < 0 for d in shape):  # numpy's parser lets them through
        raise CharrnnError(f"{where}: member {name} declares a negative dimension {list(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    slack = nbytes // 100 + 1024  # deflate's worst case grows incompressible data by a fraction of a percent
    if info.file_size != header + nbytes or info.compress_size > info.file_size + slack:
        raise CharrnnError(f"{where}: member {name} declares {dtype}{list(shape)} ({nbytes:,} bytes) but its "
                           f"entry holds {info.file_size - header:,} bytes")
    return Member(info, shape, dtype, header)


def _read_array(zf: zipfile.ZipFile, member: Member, check=None) -> np.ndarray:
    """A member's data, read chunk by chunk into its own array (never a second copy); check(chunk) sees each
    chunk as it arrives.  zipfile verifies the CRC-32 on reading the last byte."""
    out = np.empty(member.shape, member.dtype)
    flat = out.reshape(-1)
    view = memoryview(flat).cast("B")
    step = max(1, CHUNK // member.dtype.itemsize)
    with zf.open(member.info) as m:
        m.read(member.offset)  # the header, checked already
        for at in range(0, flat.size, step):
            part = flat[at : at + step]
            got = m.readinto(view[at * member.dtype.itemsize : (at + part.size) * member.dtype.itemsize])
            if got != part.nbytes:
                raise EOFError("member ends early")
            if check is not None:
                check(part)
        if m.read(1):
            raise zipfile.BadZipFile("member runs past its declared size")
    return out


class Reader:
    """An open checkpoint: its entries, and headers read on demand.  Use as a context manager."""

    def __init__(self, path: Path):
        self.path, self.where = path, short(path)
        self.f = open_regular(path, "checkpoint")
        try:
            head = self.f.read(6)
            if not head:
                raise CharrnnError(f"checkpoint {self.where} is empty")
            if head == b"\x93NUMPY":
                raise CharrnnError(f"{self.where} is not a charrnn checkpoint (a bare .npy array, not an .npz)")
            if not head.startswith(b"PK"):
                raise CharrnnError(f"{self.where} is not a charrnn checkpoint (not an .npz file)")
            self.f.seek(0)
            budget = Budget(self.f, MAX_DIRECTORY)
            try:
                self.zf = zipfile.ZipFile(budget)
            except OverBudget:
                raise CharrnnError(f"{self.where}: its zip directory is larger than a checkpoint's can be "
                                   f"({MAX_DIRECTORY:,} bytes at most)") from None
            budget.left = math.inf  # members: bounded by their checked entries from here on
            self.entries = _entries(self.zf, self.where)
        except CharrnnError:
            self.f.close()
            raise
        except DAMAGE as e:
            self.f.close()
            raise CharrnnError(f"{self.where} is damaged or truncated ({type(e).__name__}: {short(e)})") from None

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.zf.close()
        self.f.close()

    def header(self, name: str) -> Member:
        return self.guarded(_header, self.zf, self.entries[name], self.where)

    def array(self, member: Member, check=None) -> np.ndarray:
        return self.guarded(_read_array, self.zf, member, check)

    def guarded(self, f, *args):
        """f(*args), with whatever broken bytes make zipfile or numpy raise turned into one line."""
        try:
            return f(*args)
        except CharrnnError:
            raise
        except DAMAGE as e:
            raise CharrnnError(f"{self.where} is damaged ({type(e).__name__}: {short(e)})") from None

    def meta(self) -> dict:
        """The metadata document, bounded in size and checked against the schema."""
        if "meta" not in self.entries:
            raise CharrnnError(f"{self.where} is not a charrnn checkpoint (no metadata)")
        member = self.header("meta")
        if member.dtype != np.uint8 or len(member.shape) != 1 or member.shape[0] > MAX_META:
            raise CharrnnError(f"{self.where} is not a charrnn checkpoint (metadata is not JSON bytes of at most "
                               f"{MAX_META:,})")
        try:
            meta = json.loads(self.array(member).tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON, or a 5,000-digit integer
            raise CharrnnError(f"{self.where} has damaged metadata ({type(e).__name__}: {short(e)})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CharrnnError(f"{self.where} is not a charrnn checkpoint (its metadata names no charrnn format)")
        if meta.get("version") != VERSION:
            raise CharrnnError(f"{self.where} has checkpoint format version {short(meta.get('version'))}; this "
                               f"charrnn reads version {VERSION}")
        try:
            META.check(meta)
        except Invalid as e:
            raise CharrnnError(f"{self.where}: metadata field {e}") from None
        return meta


# -- what a checkpoint holds: its members, from its metadata ----------------------------------------------------

def members(cfg: ModelConfig, meta: dict, present) -> dict[str, tuple[str, tuple[int, ...], np.dtype]]:
    """name -> (group, shape, dtype) of every array but the metadata that a checkpoint of this model and metadata
    may hold.  Groups: "model" (the vocabulary and parameters: always there, always read), "optim" and "state"
    (the optimiser's and the carried state: each all there or none, read for --resume), "rng" (an engine's
    generator state: uint8 bytes of any length up to MAX_RNG, shape None here, read for --resume).  The
    optimiser's arrays follow train.optimizer, the carried state train.batch_size (B, the training streams) where
    `present` (the names the file holds) has any."""
    dtype = np.dtype(cfg.dtype)
    params = param_shapes(cfg)
    table = {"vocab": ("model", (cfg.vocab_size,), np.dtype(np.int32))}
    table.update({name: ("model", shape, dtype) for name, shape in params.items()})
    train = meta.get("train") or {}
    optimizer = OPTIMIZERS.get(train.get("optimizer"))
    if optimizer is not None:  # as Optimizer.state_dict names them
        table.update({f"optim.{slot}.{name}": ("optim", shape, dtype) for slot in optimizer.slots
                      for name, shape in params.items()})
        table["optim.t"] = ("optim", (), np.dtype(np.int64))
    if "batch_size" in train and any(name.startswith("state.") for name in present):
        shape = (cfg.layers, train["batch_size"], cfg.hidden)
        table.update({f"state.{n}": ("state", shape, dtype) for n in STATE_NAMES[cfg.cell]})
    table.update({name: ("rng", None, np.dtype(np.uint8)) for name in ENGINE_RNGS})
    return table


def label(name: str, table: dict) -> str:
    """A member as a message names it: the vocabulary, parameter 'weight_hh_l0', 'optim.m.decoder.bias'."""
    if name == "vocab":
        return "the vocabulary"
    return f"parameter {shown_name(name)}" if table[name][0] == "model" else shown_name(name)


def values_check(what: str, where: str, bound: float = math.inf, nonnegative: bool = False):
    """A check for the chunks of an array as they are read: every value finite, at most bound in absolute value
    and (nonnegative) not below 0; else one line saying how many values of the chunk that showed it are not."""

    def check(chunk: np.ndarray) -> None:
        if chunk.dtype.kind != "f":
            return
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(chunk) <= bound)  # NaN compares false
            negative = int((chunk < 0).sum()) if nonnegative else 0
        if bad.any() or negative:
            nonfinite = int((~np.isfinite(chunk)).sum())
            huge = int(bad.sum()) - nonfinite
            found = [f"{nonfinite:,} non-finite value(s)" if nonfinite else "",
                     f"{huge:,} value(s) beyond ±{bound:.3g}" if huge else "",
                     f"{negative:,} negative value(s) in a sum of squares" if negative else ""]
            raise CharrnnError(f"{where}: {what} has {' and '.join(f for f in found if f)} (in a block of "
                               f"{chunk.size:,}); training never writes that, so the file is damaged")

    return check


def load(path, resume: bool = False) -> Checkpoint:
    """Load and validate (see the module docstring).  The optimiser's state and the carried state are read only
    with resume, which also requires them (and the run's record in the metadata) to be there."""
    path = Path(path)
    with Reader(path) as r:
        where = r.where
        meta = r.meta()
        try:
            cfg = ModelConfig(**meta["model"])
        except CharrnnError as e:
            raise CharrnnError(f"{where}: {e}") from None
        if 4 * cfg.layers + 2 > len(r.entries):  # before param_shapes walks a billion layers
            raise CharrnnError(f"{where} holds {len(r.entries)} arrays, too few for a {cfg.layers:,}-layer model")
        table = members(cfg, meta, r.entries)
        unknown = sorted(set(r.entries) - set(table) - {"meta"})
        if unknown:
            raise CharrnnError(f"{where} has unexpected entries: {', '.join(map(shown_name, unknown[:5]))}")
        missing = [name for name, (group, _, _) in table.items() if group == "model" and name not in r.entries]
        if missing:
            raise CharrnnError(f"{where} is missing {label(missing[0], table)}")
        held: dict[str, dict[str, Member]] = {"model": {}, "optim": {}, "state": {}, "rng": {}}
        for name, (group, shape, dtype) in table.items():
            if name in r.entries:
                member = r.header(name)
                if shape is None and len(member.shape) == 1 and member.shape[0] <= MAX_RNG:
                    shape = member.shape  # bytes of an engine's generator state
                if member.shape != shape or member.dtype != dtype:
                    expected = f"{dtype}{list(shape)}" if shape is not None else f"at most {MAX_RNG:,} uint8 bytes"
                    raise CharrnnError(f"{where}: {label(name, table)} is {member.dtype}{list(member.shape)}, "
                                       f"expected {expected}")
                held[group][name] = member
        for group, what in (("optim", "optimiser"), ("state", "carried")):
            lacking = [n for n, (g, _, _) in table.items() if g == group and n not in held[group]]
            if held[group] and lacking:
                raise CharrnnError(f"{where} holds part of its {what} state: {shown_name(lacking[0])} is missing")
        resumable = bool(held["optim"]) and all(k in meta for k in RESUME_FIELDS)
        if resume and not resumable:
            raise CharrnnError(f"{where} has no training progress to resume from (it lacks the optimiser's state "
                               f"or the run's record)")
        reading = [*held["model"].values(), *(m for g in ("optim", "state", "rng") if resume
                                              for m in held[g].values())]
        check_fits(sum(math.prod(m.shape) * m.dtype.itemsize for m in reading), f"loading {where}")

        try:
            vocab = Vocab.from_code_points(r.array(held["model"].pop("vocab")))
        except CharrnnError as e:
            raise CharrnnError(f"{where}: {e}") from None
        bound = cfg.safe_magnitude  # no forward pass overflows below it
        params = {name: r.array(m, values_check(f"parameter {name!r}", where, bound))
                  for name, m in held["model"].items()}
        optim, state, rng = {}, (), {}
        if resume:
            squares = OPTIMIZERS[meta["train"]["optimizer"]].squares
            optim = {name: r.array(m, values_check(f"optimiser state {name!r}", where,
                                                   nonnegative=name.split(".")[1] in squares))
                     for name, m in held["optim"].items()}
            if optim["optim.t"] < 0:
                raise CharrnnError(f"{where}: optimiser state 'optim.t' counts {int(optim['optim.t'])} updates")
            state = tuple(r.array(held["state"][f"state.{n}"], values_check(f"carried state 'state.{n}'", where,
                                                                             bound))
                          for n in STATE_NAMES[cfg.cell] if held["state"])
            rng = {name: r.array(m) for name, m in held["rng"].items()}
    return Checkpoint(Model(cfg, params), vocab, meta, optim, state, rng, resumable)


def read_meta(path) -> dict:
    """A checkpoint's validated metadata alone, without reading its arrays (whose run a file belongs to)."""
    with Reader(Path(path)) as r:
        return r.meta()


def member_names(path) -> set[str] | None:
    """The names of the arrays an .npz holds, from its directory alone, or None where it is not a readable one:
    a file's kind (a checkpoint holds `meta` and `vocab`) without trusting anything else in it."""
    try:
        with Reader(Path(path)) as r:
            return set(r.entries)
    except CharrnnError:
        return None
