"""The encoded-corpus cache: a big corpus is decoded once, then memory-mapped (like char-rnn's data.t7).

Beside CORPUS sit CORPUS.charrnn-cache.npy (the index array, a plain .npy) and CORPUS.charrnn-cache.json (the
file size and modification time it was made from, the encoding, SHA-256, vocabulary, and a CRC-32 of the array
and the vocabulary).  A changed file, or another encoding, invalidates it.  Where the corpus's directory is not
writable, the cache goes to $XDG_CACHE_HOME/charrnn (default ~/.cache/charrnn) instead.

A cache is a file anyone can damage, so it is verified before use: its record must be well formed, the array's
header must give the recorded dtype and length and the file exactly that size, and one pass over the array (about
a second a gigabyte, against ten or more to decode) must give the recorded CRC-32 (with the vocabulary's) and a
largest index inside the vocabulary.  Cache trouble never stops a run: a cache that fails is rebuilt or skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from charrnn.core.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.store.files import check_output, open_regular, starts_with, write_atomically

CACHE_MIN_BYTES = 8 << 20  # smaller files decode faster than a cache is worth
SUFFIX = ".charrnn-cache"
VERSION = 3  # 2: a UTF-8 byte-order mark is not a character; 3: the record holds the array's CRC-32 and maximum
MAX_RECORD = 8 << 20  # bytes of the .json record: a vocabulary of every code point takes about 7 MB
MAX_SEPARATORS = 32  # of , : [ { in a record: it holds a dozen values, so parsing one costs about its size
BLOCK = 1 << 23  # bytes verified at a time


def cache_paths(corpus: Path) -> list[Path]:
    """Candidate cache stems, in order: beside the corpus, then the user's cache directory."""
    corpus = corpus.resolve()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"
    key = hashlib.sha1(str(corpus).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return [corpus.with_name(corpus.name + SUFFIX), home / f"{corpus.name}.{key}{SUFFIX}"]


def _fingerprint(corpus: Path, encoding: str) -> dict:
    st = corpus.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "encoding": encoding, "version": VERSION}


def _files(stem: Path) -> tuple[Path, Path]:
    """The cache's array and its record."""
    return stem.with_suffix(stem.suffix + ".npy"), stem.with_suffix(stem.suffix + ".json")


def _summary(blocks: Iterable[np.ndarray]) -> tuple[int, int]:
    """(CRC-32 of the blocks' bytes, their largest element, -1 for none), in one pass."""
    crc, top = 0, -1
    for block in blocks:
        crc = zlib.crc32(block, crc)
        if block.size:
            top = max(top, int(block.max()))
    return crc, top


def _read_record(path: Path, want: dict) -> tuple[str, Vocab, int, int] | None:
    """(sha256, vocabulary, characters, CRC-32) from a well-formed record made for this corpus and encoding, or
    None."""
    with open_regular(path, "cache record") as f:
        raw = f.read(MAX_RECORD + 1)
    if len(raw) > MAX_RECORD or sum(raw.count(c) for c in b",:[{") > MAX_SEPARATORS:
        return None
    meta = json.loads(raw)
    if not isinstance(meta, dict) or meta.get("fingerprint") != want:
        return None
    sha256, chars, crc, symbols = (meta.get(k) for k in ("sha256", "chars", "crc32", "vocabulary"))
    if not (isinstance(sha256, str) and type(chars) is int and chars >= 0 and type(crc) is int
            and isinstance(symbols, str) and symbols):
        return None
    return sha256, Vocab(symbols), chars, crc


def _verified_array(path: Path, vocab: Vocab, chars: int, crc: int) -> np.ndarray | None:
    """The cache array, memory-mapped, if its header and size are what the record says, and one pass over it
    gives the recorded CRC-32 and no index outside the vocabulary; else None.  The pass reads into one reused
    block, so it adds nothing to the process's memory."""
    with open_regular(path, "corpus cache") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        if (shape != (chars,) or fortran or dtype != vocab.dtype
                or os.fstat(f.fileno()).st_size != offset + chars * dtype.itemsize):
            return None
        block = np.empty(BLOCK // dtype.itemsize, dtype)

        def blocks():
            while n := f.readinto(memoryview(block).cast("B")) // dtype.itemsize:
                yield block[:n]

        found, top = _summary(blocks())
        if zlib.crc32(vocab.code_points, found) != crc or top >= len(vocab):
            return None
        return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=(chars,))


def load_cache(corpus: Path, encoding: str) -> tuple[str, Vocab, np.ndarray] | None:
    """(sha256, vocab, memory-mapped indices) from a valid cache, else None."""
    want = _fingerprint(corpus, encoding)
    for stem in cache_paths(corpus):
        npy, record = _files(stem)
        try:
            found = _read_record(record, want)
            if found is None:
                continue
            data = _verified_array(npy, *found[1:])
        except (OSError, ValueError, OverflowError, RecursionError, CharrnnError):  # damaged or foreign: rebuilt
            continue
        if data is not None:
            return found[0], found[1], data
    return None


def _is_npy(path: Path) -> bool:
    return starts_with(path, b"\x93NUMPY")


def _is_record(path: Path) -> bool:
    return starts_with(path, b"{")


def _write_array(path: Path, dtype: np.dtype, n: int, blocks: Iterable[np.ndarray]) -> int:
    """The blocks as an (n,) .npy of dtype at path, written atomically; returns their CRC-32."""
    crc = 0

    def write(f) -> None:
        nonlocal crc
        np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": (n,)})
        for block in blocks:
            crc = zlib.crc32(block, crc)
            f.write(block.tobytes())

    write_atomically(path, write)
    return crc


def save_cache(corpus: Path, encoding: str, sha256: str, vocab: Vocab, n: int,
               blocks: Callable[[], Iterable[np.ndarray]]) -> np.ndarray | None:
    """Stream the encoded blocks (from a fresh blocks() per attempt) into a cache file, with plain writes so
    preparing a gigabyte corpus keeps a small footprint, and return it memory-mapped; None if no cache
    location will take it.  A location whose names hold something other than a cache (a FIFO, a symbolic link,
    someone's file) is left alone."""
    for stem in cache_paths(corpus):
        npy, record = _files(stem)
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            check_output(npy, "a corpus cache", _is_npy)
            check_output(record, "a corpus cache record", _is_record)
            crc = zlib.crc32(vocab.code_points, _write_array(npy, vocab.dtype, n, blocks()))
            text = json.dumps({"fingerprint": _fingerprint(corpus, encoding), "sha256": sha256, "chars": n,
                               "crc32": crc, "vocabulary": "".join(vocab.chars)})
            write_atomically(record, lambda f, text=text: f.write(text.encode()))
            return np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, CharrnnError):
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
