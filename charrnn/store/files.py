"""Atomic writes: a temporary file written in full, then renamed over the real name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError


def umask() -> int:
    """The process's file-creation mask.  POSIX can only read it by setting it, so it is set and put back."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temporary file in path's directory, for os.replace onto path afterwards.  It gets the
    permissions that opening path anew would give (0666 less the umask): mkstemp makes its files 0600, so a
    checkpoint or cache written through one was readable by its owner alone.  Raises OSError."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())
    except OSError:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def write_atomically(path, write: Callable[[BinaryIO], None]) -> None:
    """write(f) into a temp file in the target directory, flush + fsync, os.replace onto path, fsync the
    directory: a crash at any moment leaves the previous file intact, and a failure leaves no temp file."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CharrnnError(f"cannot write {path}: directory {path.parent} does not exist")
    try:
        fd, tmp = temp_beside(path)
    except OSError as e:
        raise CharrnnError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CharrnnError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename itself is done
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check_writable_dir(path: Path, what: str = "files") -> None:
    """Make the directory if need be and prove a file can be created in it, or raise a one-line CharrnnError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CharrnnError(f"cannot write {what} to {path}: {e.strerror or e}") from None
