"""The character vocabulary: Unicode code points <-> dense indices.

A symbol is one code point, so "é", "ß" and "😀" are one symbol each (not their UTF-8 bytes).
Indices use the smallest unsigned dtype that fits, so a corpus of < 256 symbols costs one byte per character.
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import CharrnnError


def index_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer dtype that can hold indices 0 .. size-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise CharrnnError(f"vocabulary of {size} symbols is too large")


def describe_chars(chars) -> str:
    """A short, unambiguous listing of characters for error messages: 'é' (U+00E9), ..."""
    shown = [f"{ch!r} (U+{ord(ch):04X})" for ch in chars[:10]]
    more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
    return ", ".join(shown) + more


class Vocab:
    """A sorted set of characters with encode/decode between text and index arrays."""

    def __init__(self, chars):
        chars = sorted(set(chars))
        if not chars:
            raise CharrnnError("vocabulary is empty")
        lone = [ch for ch in chars if "\ud800" <= ch <= "\udfff"]
        if lone:  # half of a UTF-16 pair: no text holds one alone, and sampling one could not print it
            raise CharrnnError(f"vocabulary holds a lone surrogate U+{ord(lone[0]):04X}, a code point UTF-8 cannot "
                               f"write")
        self.chars: list[str] = chars
        self.dtype = index_dtype(len(chars))
        self.code_points = np.array([ord(c) for c in chars], dtype=np.int32)
        # A lookup table from code point to index; -1 marks characters outside the vocabulary.
        self._table = np.full(int(self.code_points.max()) + 1, -1, dtype=np.int64)
        self._table[self.code_points] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(set(text))

    @classmethod
    def from_code_points(cls, code_points: np.ndarray) -> Vocab:
        """Rebuild from the int32 array a checkpoint stores (sorted, unique, valid code points, no surrogates)."""
        cps = np.asarray(code_points)
        if cps.ndim != 1 or cps.size == 0 or not np.issubdtype(cps.dtype, np.integer):
            raise CharrnnError("vocabulary must be a non-empty 1-D integer array of code points")
        if np.any(cps < 0) or np.any(cps > 0x10FFFF) or np.any(np.diff(cps) <= 0):
            raise CharrnnError("vocabulary code points must be valid, sorted and unique")
        return cls(chr(int(c)) for c in cps)

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return len(ch) == 1 and ord(ch) < len(self._table) and self._table[ord(ch)] >= 0

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} symbols)"

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of text outside the vocabulary, in order of first appearance."""
        return [ch for ch in dict.fromkeys(text) if ch not in self]

    def encode_code_points(self, cps: np.ndarray) -> np.ndarray:
        """Map an array of code points to indices; -1 where a code point is not in the vocabulary."""
        cps = np.asarray(cps, dtype=np.int64)
        out = np.full(cps.shape, -1, dtype=np.int64)
        known = cps < len(self._table)
        out[known] = self._table[cps[known]]
        return out

    def encode(self, text: str) -> np.ndarray:
        """Text -> 1-D index array of self.dtype. Unknown characters are an error naming them and where."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        idx = self.encode_code_points(cps)
        bad = np.flatnonzero(idx < 0)
        if bad.size:
            chars = self.unknown(text)
            first = int(bad[0])
            raise CharrnnError(
                f"{len(chars)} character(s) not in the vocabulary: {describe_chars(chars)}; "
                f"first at character offset {first}"
            )
        return idx.astype(self.dtype)

    def decode(self, indices) -> str:
        """Index array (any integer dtype) -> text."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise CharrnnError(f"index out of range for a vocabulary of {len(self)} symbols")
        return self.code_points[idx].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
