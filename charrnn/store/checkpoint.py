"""Checkpoints: one `.npz` holding parameters, optimiser state, vocabulary, carried state, the torch engine's RNG
state and a JSON document.

Arrays keep their PyTorch-style names (`weight_ih_l0`, ..., `optim.m.<name>`); the vocabulary is an int32
code-point array and the metadata is a JSON document stored as uint8 bytes, so nothing needs pickle.  Files are
written atomically and loaded with allow_pickle=False: a checkpoint can never run code, and a crash at any
moment leaves the previous file intact.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.core.cells import STATE_NAMES
from charrnn.core.model import Model, ModelConfig, param_shapes
from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.store.files import write_atomically

FORMAT = "charrnn-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds, loaded and validated."""

    model: Model
    vocab: Vocab
    meta: dict  # format, versions, model/train config, progress, rng, history, corpus ...
    optim: dict[str, np.ndarray] = field(default_factory=dict)  # optim.* arrays
    state: tuple[np.ndarray, ...] = ()  # the training streams' carried hidden state, (L, B, H) each
    rng: dict[str, np.ndarray] = field(default_factory=dict)  # rng.* arrays: an engine's generator state


def save(path, model: Model, vocab: Vocab, meta: dict, optim: dict | None = None, state=(),
         rng: dict | None = None) -> None:
    """Write atomically: temp file in the same directory, flush + fsync, os.replace, fsync the directory.
    rng: arrays named rng.<engine> (the torch engine's generator state: bytes, never a pickle)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "charrnn_version": __version__, **meta,
            "model": model.cfg.to_dict()}
    arrays = dict(model.params)
    arrays.update(optim or {})
    arrays.update({f"state.{n}": s for n, s in zip(STATE_NAMES[model.cfg.cell], state, strict=False)})
    arrays.update(rng or {})
    arrays["vocab"] = vocab.code_points
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    atomic_savez(path, arrays)


def atomic_savez(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez, atomically (charrnn.store.files.write_atomically): a crash at any moment leaves the previous file
    intact.  Through an open file, so no `.npz` is appended."""
    write_atomically(path, lambda f: np.savez(f, **arrays))


def remove_stale_temp_files(directory) -> None:
    """Delete temp files a killed save left behind (`.latest.npz.*.tmp`); the real files are never touched."""
    for tmp in Path(directory).glob(".*.npz.*.tmp"):
        tmp.unlink(missing_ok=True)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise CharrnnError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CharrnnError(f"checkpoint {path} is a directory")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic:
        raise CharrnnError(f"checkpoint {path} is empty")
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        raise CharrnnError(f"{path} is not a charrnn checkpoint (not an .npz file)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CharrnnError(f"{path} is not a charrnn checkpoint (a bare .npy array, not an .npz)")
        with z:
            return {k: z[k] for k in z.files}
    except CharrnnError:
        raise
    except (zipfile.BadZipFile, EOFError) as e:
        raise CharrnnError(f"{path} is damaged or truncated ({e})") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise CharrnnError(f"{path} contains pickled objects; refusing to load it (allow_pickle=False)") from None
        raise CharrnnError(f"{path} is not a charrnn checkpoint ({e})") from None
    except (OSError, zipfile.LargeZipFile) as e:
        raise CharrnnError(f"cannot read checkpoint {path}: {e}") from None
    except Exception as e:  # numpy raises a variety of errors on damaged zips
        raise CharrnnError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def _read_meta(path: Path, arrays: dict) -> dict:
    if "meta" not in arrays:
        raise CharrnnError(f"{path} is not a charrnn checkpoint (no metadata)")
    raw = arrays.pop("meta")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CharrnnError(f"{path} is not a charrnn checkpoint (metadata is not JSON bytes)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CharrnnError(f"{path} has damaged metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CharrnnError(f"{path} is not a charrnn checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CharrnnError(f"{path} has checkpoint format version {meta.get('version')}; this charrnn reads "
                           f"version {VERSION}")
    return meta


def load(path) -> Checkpoint:
    """Load and validate: format and version, every expected key, shapes and dtypes against the config."""
    path = Path(path)
    arrays = _read_arrays(path)
    meta = _read_meta(path, arrays)
    try:
        cfg = ModelConfig(**meta["model"])
    except (KeyError, TypeError) as e:
        raise CharrnnError(f"{path} has an invalid model configuration ({e})") from None
    except CharrnnError as e:
        raise CharrnnError(f"{path}: {e}") from None
    if "vocab" not in arrays:
        raise CharrnnError(f"{path} has no vocabulary")
    vocab = Vocab.from_code_points(arrays.pop("vocab"))
    if len(vocab) != cfg.vocab_size:
        raise CharrnnError(f"{path}: vocabulary has {len(vocab)} symbols, the model expects {cfg.vocab_size}")
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name not in arrays:
            raise CharrnnError(f"{path} is missing parameter {name!r}")
        p = arrays.pop(name)
        if p.shape != shape or p.dtype != np.dtype(cfg.dtype):
            raise CharrnnError(f"{path}: parameter {name!r} is {p.dtype}{list(p.shape)}, "
                               f"expected {cfg.dtype}{list(shape)}")
        params[name] = p
    state = tuple(arrays.pop(f"state.{n}") for n in STATE_NAMES[cfg.cell] if f"state.{n}" in arrays)
    for s in state:
        if s.ndim != 3 or s.shape[0] != cfg.layers or s.shape[2] != cfg.hidden or s.dtype != np.dtype(cfg.dtype):
            raise CharrnnError(f"{path}: carried state has shape {s.shape}, inconsistent with the model")
    optim = {k: arrays.pop(k) for k in list(arrays) if k.startswith("optim.")}
    rng = {k: arrays.pop(k) for k in list(arrays) if k.startswith("rng.") and arrays[k].dtype == np.uint8}
    if arrays:
        raise CharrnnError(f"{path} has unexpected entries: {', '.join(sorted(arrays)[:5])}")
    return Checkpoint(Model(cfg, params), vocab, meta, optim, state, rng)
