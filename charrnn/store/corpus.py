"""Reading a corpus into one index array, splitting it, and cutting it into B parallel streams.

The file is read in blocks (never as one Python string), twice: a first pass finds the vocabulary and the
SHA-256, a second encodes straight into a preallocated index array of the smallest dtype that fits.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from charrnn.core.vocab import Vocab, describe_chars
from charrnn.errors import CharrnnError
from charrnn.store.cache import CACHE_MIN_BYTES, load_cache, save_cache
from charrnn.store.files import open_regular, short

BLOCK = 1 << 23  # bytes read at a time
MAX_CODE_POINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)  # code points of UTF-16's pairs: no text holds one alone, UTF-8 cannot write one


@dataclass
class Corpus:
    """A text file as an index array, with what a checkpoint records about it."""

    name: str
    size: int  # bytes on disk
    sha256: str
    vocab: Vocab
    data: np.ndarray | Remapped  # (n,) indices into vocab

    def split(self, val_frac: float) -> tuple[np.ndarray | Remapped, np.ndarray | Remapped]:
        """(train, val): validation is the last val_frac of the text, contiguous (like nanoGPT, torch-rnn)."""
        if not 0.0 <= val_frac < 1.0:
            raise CharrnnError(f"val_frac must be in [0, 1), got {val_frac}")
        n_val = int(round(len(self.data) * val_frac))
        return self.data[: len(self.data) - n_val], self.data[len(self.data) - n_val :]

    def reindexed(self, vocab: Vocab, path=None) -> Corpus:
        """The same text as indices into vocab, which must hold every character of self.vocab (a resumed run's
        vocabulary, or one a fine-tuning run extended), read through a table (Remapped): nothing is copied."""
        if vocab == self.vocab:
            return self
        unknown = [ch for ch in self.vocab.chars if ch not in vocab]
        if unknown:
            raise CharrnnError(f"{short(path or self.name)} has {len(unknown)} character(s) outside the vocabulary: "
                               f"{describe_chars(unknown)}")
        table = vocab.encode_code_points(self.vocab.code_points).astype(vocab.dtype)
        return replace(self, vocab=vocab, data=Remapped(self.data, table))


class Remapped:
    """An index array read through a lookup table: element i is table[base[i]], computed when it is read.

    A corpus re-encoded for another vocabulary (a resumed or fine-tuning run's, or a model's in `charrnn eval`)
    stays as it is, memory-mapped when cached, instead of becoming a copy of one to eight bytes a character.
    It offers what the readers of corpus data use: len, slices (views), index arrays (read through the table)."""

    def __init__(self, base: np.ndarray, table: np.ndarray):
        self.base, self.table = base, table

    @property
    def dtype(self) -> np.dtype:
        return self.table.dtype

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Remapped(self.base[key], self.table)
        return self.table[self.base[key]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.table[np.asarray(self.base)]
        return out if dtype is None else out.astype(dtype)


def encoding_problem(name: str) -> str | None:
    """Why `name` is not a codec that decodes bytes into text, or None when it is one (train's and eval's
    --encoding, and a checkpoint's record of it)."""
    shown = repr(name) if len(name) <= 40 else repr(name[:37] + "...")
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return f"unknown encoding {shown}"
    if not getattr(info, "_is_text_encoding", True):  # base64, rot13, hex: bytes -> bytes, or text -> text
        return f"{shown} is not a text encoding: it does not turn bytes into text"
    return None


def _code_point_blocks(path: Path, encoding: str, hasher=None, label: str = "corpus",
                       progress=None) -> Iterator[np.ndarray]:
    """Yield the file's code points block by block; every decoding error is one line with its byte offset.  A
    UTF-8 file's leading byte-order mark (Windows editors write one) is not text and is skipped, as Python's
    utf-8-sig does; UTF-16 and UTF-32 decoders consume theirs (and refuse a file without one)."""
    problem = encoding_problem(encoding)
    if problem:
        raise CharrnnError(problem)
    codec = codecs.lookup(encoding)
    decoder = codec.incrementaldecoder(errors="strict")
    ascii_ok = codec.name in ("utf-8", "ascii", "latin-1", "iso8859-1", "cp1252")
    offset = 0
    with open_regular(path, label) as f:
        try:
            if codec.name == "utf-8":
                head = f.read(len(codecs.BOM_UTF8))
                if head == codecs.BOM_UTF8:
                    offset = len(head)
                    if hasher is not None:
                        hasher.update(head)
                else:
                    f.seek(0)
            while True:
                block = f.read(BLOCK)
                final = not block
                if hasher is not None:
                    hasher.update(block)
                if progress is not None:
                    progress(len(block))
                raw = np.frombuffer(block, np.uint8)
                pending = len(decoder.getstate()[0])
                if ascii_ok and not final and pending == 0 and (raw.size == 0 or raw.max() < 0x80):
                    yield raw  # ASCII fast path: bytes are code points
                else:
                    try:
                        text = decoder.decode(block, final=final)
                    except UnicodeError as e:  # UTF-16 without a byte-order mark raises the base class
                        at = offset - pending + (e.start if isinstance(e, UnicodeDecodeError) else 0)
                        reason = e.reason if isinstance(e, UnicodeDecodeError) else str(e)
                        raise CharrnnError(
                            f"{short(path)} is not valid {encoding}: {reason} at byte offset {at} "
                            f"(pass --encoding if the file uses another encoding)"
                        ) from None
                    yield np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
                if final:
                    return
                offset += len(block)
        except OSError as e:
            raise CharrnnError(f"cannot read {label} {short(path)}: {e.strerror or e}") from None


def check_path(path: Path, label: str = "corpus") -> Path:
    """path, if it names a regular file that can be opened (else one line saying what it is instead)."""
    path = Path(path)
    open_regular(path, label).close()
    return path


def scan(path: Path, encoding: str, label: str = "corpus", progress=None) -> tuple[str, Vocab, int]:
    """First pass: SHA-256 of the bytes, the vocabulary, the number of characters; refuses binary files."""
    hasher = hashlib.sha256()
    seen = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
    n = 0
    for cps in _code_point_blocks(path, encoding, hasher, label, progress):
        if cps.dtype == np.uint8:  # ASCII block: a 128-bin histogram is cheaper than a scatter
            counts = np.bincount(cps, minlength=128)
            seen[: counts.size] |= counts > 0
            nul = counts[0] > 0
        else:
            seen[cps] = True
            nul = cps.size and cps.min() == 0
            lone = np.flatnonzero((cps >= SURROGATES[0]) & (cps <= SURROGATES[1]))
            if lone.size:  # unicode_escape and its kin decode "\\ud800" to one
                raise CharrnnError(f"{short(path)} decodes ({encoding}) to a lone surrogate U+{int(cps[lone[0]]):04X} "
                                   f"at character offset {n + int(lone[0])}: a code point no text can hold, so no "
                                   f"model can learn or write it")
        if nul:
            raise CharrnnError(f"{short(path)} looks binary: it contains NUL bytes (not a text file)")
        n += cps.size
    if n == 0:
        raise CharrnnError(f"{label} {short(path)} is empty")
    return hasher.hexdigest(), Vocab.from_code_points(np.flatnonzero(seen).astype(np.int32)), n


def encoded_blocks(path: Path, encoding: str, vocab: Vocab, progress=None) -> Iterator[np.ndarray]:
    """Second pass: the file's indices block by block (ASCII blocks through a 128-entry lookup table)."""
    ascii_table = np.maximum(vocab.encode_code_points(np.arange(128)), 0).astype(vocab.dtype)
    for cps in _code_point_blocks(path, encoding, progress=progress):
        yield ascii_table[cps] if cps.dtype == np.uint8 else vocab.encode_code_points(cps).astype(vocab.dtype)


def join_blocks(blocks: Iterable[np.ndarray], out: np.ndarray) -> np.ndarray:
    """The blocks, as many elements as out has in all, written one by one into out: np.concatenate would hold them
    all and the result at once."""
    at = 0
    for block in blocks:
        out[at : at + block.size] = block
        at += block.size
    return out


def read_corpus(path, encoding: str = "utf-8", vocab: Vocab | None = None, label: str = "corpus",
                cache: bool = True, progress: Callable[[int, int], None] | None = None) -> Corpus:
    """Read and encode a text file, streaming it in blocks.  Files of CACHE_MIN_BYTES or more keep their
    encoded indices in a cache file (see charrnn.store.cache) that later runs memory-map instead of decoding again.
    With a given vocab (resume), characters outside it are an error.  progress(bytes just read, bytes to read in
    all) after every block of either pass over the file (a cached corpus reads none)."""
    path = check_path(path, label)
    size = path.stat().st_size
    use_cache = cache and size >= CACHE_MIN_BYTES
    read_bytes = None if progress is None else lambda n: progress(n, 2 * size)
    hit = load_cache(path, encoding) if use_cache else None
    if hit is not None:
        sha256, found, data = hit
    else:
        sha256, found, n = scan(path, encoding, label, read_bytes)

        def blocks():
            return encoded_blocks(path, encoding, found, read_bytes)

        data = save_cache(path, encoding, sha256, found, n, blocks) if use_cache else None
        if data is None:  # no cache: encode into memory
            data = join_blocks(blocks(), np.empty(n, found.dtype))
    read = Corpus(name=path.name, size=path.stat().st_size, sha256=sha256, vocab=found, data=data)
    return read if vocab is None else read.reindexed(vocab, path)


def corpus_from_text(text: str, name: str = "<text>") -> Corpus:
    """An in-memory corpus (tests, small experiments)."""
    if not text:
        raise CharrnnError("corpus is empty")
    vocab = Vocab.from_text(text)
    raw = text.encode("utf-8")
    return Corpus(name, len(raw), hashlib.sha256(raw).hexdigest(), vocab, vocab.encode(text))
