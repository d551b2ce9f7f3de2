"""The encoded-corpus cache: a big corpus is decoded once, then memory-mapped (like char-rnn's data.t7).

Beside CORPUS sit CORPUS.charrnn-cache.npy (the index array, a plain .npy) and CORPUS.charrnn-cache.json (the
file size and modification time it was made from, the encoding, SHA-256 and vocabulary).  A changed file, or
another encoding, invalidates it.  Where the corpus's directory is not writable, the cache goes to
$XDG_CACHE_HOME/charrnn (default ~/.cache/charrnn) instead.  Cache trouble never stops a run: it is rebuilt
or skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from charrnn.core.vocab import Vocab
from charrnn.store.files import temp_beside

CACHE_MIN_BYTES = 8 << 20  # smaller files decode faster than a cache is worth
SUFFIX = ".charrnn-cache"


def cache_paths(corpus: Path) -> list[Path]:
    """Candidate cache stems, in order: beside the corpus, then the user's cache directory."""
    corpus = corpus.resolve()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"
    key = hashlib.sha1(str(corpus).encode()).hexdigest()[:16]
    return [corpus.with_name(corpus.name + SUFFIX), home / f"{corpus.name}.{key}{SUFFIX}"]


def _fingerprint(corpus: Path, encoding: str) -> dict:
    st = corpus.stat()
    # version 2: a UTF-8 file's byte-order mark is no longer a character, so version 1 caches are rebuilt
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "encoding": encoding, "version": 2}


def load_cache(corpus: Path, encoding: str) -> tuple[str, Vocab, np.ndarray] | None:
    """(sha256, vocab, memory-mapped indices) from a valid cache, else None."""
    want = _fingerprint(corpus, encoding)
    for stem in cache_paths(corpus):
        try:
            meta = json.loads(stem.with_suffix(stem.suffix + ".json").read_text())
            if meta.get("fingerprint") != want:
                continue
            vocab = Vocab.from_code_points(np.array(meta["code_points"], dtype=np.int32))
            data = np.load(stem.with_suffix(stem.suffix + ".npy"), mmap_mode="r", allow_pickle=False)
            if data.dtype == vocab.dtype and data.shape == (meta["chars"],):
                return meta["sha256"], vocab, data
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def save_cache(corpus: Path, encoding: str, sha256: str, vocab: Vocab, n: int,
               blocks: Callable[[], Iterable[np.ndarray]]) -> np.ndarray | None:
    """Stream the encoded blocks (from a fresh blocks() per attempt) into a cache file, with plain writes so
    preparing a gigabyte corpus keeps a small footprint, and return it memory-mapped; None if no cache
    location is writable."""
    for stem in cache_paths(corpus):
        npy, meta_path = stem.with_suffix(stem.suffix + ".npy"), stem.with_suffix(stem.suffix + ".json")
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = temp_beside(npy)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False, "shape": (n,)}
                np.lib.format.write_array_header_2_0(f, header)
                for block in blocks():
                    f.write(block.tobytes())
            os.replace(tmp, npy)
            meta = {"fingerprint": _fingerprint(corpus, encoding), "sha256": sha256, "chars": n,
                    "code_points": vocab.code_points.tolist()}
            meta_path.write_text(json.dumps(meta))
            return np.load(npy, mmap_mode="r", allow_pickle=False)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            continue
    return None


def scratch_array(corpus: Path, n: int, dtype) -> np.ndarray | None:
    """A writable (n,) array backed by a nameless temporary file in one of the corpus's cache locations, or None
    where none can hold it.  For a derived copy of a big corpus (charrnn eval's text without the characters a model
    lacks): its pages are the file's, which the kernel writes back and drops under memory pressure, where an
    array in memory would stay resident.  The space is reserved first (posix_fallocate), so a full disk is
    found here, not by a SIGBUS on writing a page; it is freed when the array goes."""
    nbytes = n * np.dtype(dtype).itemsize
    for stem in cache_paths(corpus):
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=stem.parent) as f:  # unlinked at once (or never named: O_TMPFILE)
                os.posix_fallocate(f.fileno(), 0, nbytes)
                return np.memmap(f, dtype=dtype, mode="r+", shape=(n,))  # the mapping outlives the file object
        except (OSError, ValueError):
            continue
    return None
