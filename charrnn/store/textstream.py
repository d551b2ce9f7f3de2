"""Text read as it arrives, from a file or standard input: decoded strictly, block by block, never whole."""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError

BLOCK = 1 << 20  # bytes read at a time


def text_pieces(source: Path | BinaryIO, encoding: str = "utf-8", name: str | None = None) -> Iterator[str]:
    """The text of source (a path, or an open binary stream such as standard input) in pieces of about BLOCK
    bytes.  A UTF-8 byte-order mark at the start is skipped; a decoding error names the byte where it is.
    name: what error messages call the source (default: the path)."""
    name = name or str(source)
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise CharrnnError(f"unknown encoding {encoding!r}") from None
    if not getattr(codec, "_is_text_encoding", True):  # base64, rot13, hex: not bytes -> text
        raise CharrnnError(f"{encoding!r} is not a text encoding")
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        opened = open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source)
    except OSError as e:
        raise CharrnnError(f"cannot read {name}: {e.strerror or e}") from None
    offset = 0  # bytes decoded before this block
    with opened as stream:
        while True:
            try:
                block = stream.read(BLOCK)
                done = not block
            except OSError as e:
                raise CharrnnError(f"cannot read {name}: {e.strerror or e}") from None
            if offset == 0 and codec.name == "utf-8" and block.startswith(codecs.BOM_UTF8):
                block, offset = block[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)  # not text (Windows editors)
            pending = len(decoder.getstate()[0])  # bytes of a character the last block cut in two
            try:
                text = decoder.decode(block, final=done)
            except UnicodeDecodeError as e:
                raise CharrnnError(f"{name} is not valid {encoding}: {e.reason} at byte offset "
                                   f"{offset - pending + e.start}") from None
            offset += len(block)
            if text:
                yield text
            if done:
                return
