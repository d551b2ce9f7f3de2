"""Files as charrnn meets them: read only if regular, written only atomically, and every refusal one true line.

A path may name anything: a FIFO (opening it for reading would wait for a writer), a device that never ends, a
symbolic link to nowhere or to itself.  Reads open regular files only, and without blocking, so the checks hold
for what was opened; writes go to a temporary file beside the target, renamed over it, so a target is either the
old file or the complete new one, and the temporary file never outlives the write, whatever stops it.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError

KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device",
         stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def kind(mode: int) -> str:
    """What an st_mode says a path is, as a message says it: 'a named pipe (FIFO)', 'a regular file', ..."""
    return KINDS.get(stat.S_IFMT(mode), "a regular file" if stat.S_ISREG(mode) else "a special file")


def short(path) -> str:
    """A path as a message shows it: whole unless absurdly long (a path is the user's, not ours to bound)."""
    text = str(path)
    return text if len(text) <= 300 else f"{text[:150]}...{text[-100:]}"


def why_not(path: Path, error: OSError) -> str:
    """Why `path` could not be used, from the OSError that said so, as the end of a sentence about it: a dangling
    symbolic link is not 'missing', and neither is a loop of links."""
    if error.errno == errno.ENOENT and os.path.islink(path):
        return f"is a symbolic link to {short(os.readlink(path))}, which does not exist"
    reasons = {errno.ENOENT: "does not exist", errno.ELOOP: "is a loop of symbolic links",
               errno.ENOTDIR: "has a part that is not a directory", errno.EACCES: "cannot be read: permission denied",
               errno.ENAMETOOLONG: "is too long a name", errno.EISDIR: "is a directory"}
    return reasons.get(error.errno, f"cannot be read: {error.strerror or error}")


def open_regular(path, what: str) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (after following links); else a one-line
    CharrnnError naming what it is.  O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
    writer, and the type is read from the open descriptor, so nothing can be swapped in between."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CharrnnError(f"{what} {short(path)} {why_not(path, e)}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CharrnnError(f"{what} {short(path)} is {kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def starts_with(path: Path, prefix: bytes) -> bool:
    """Whether path is a readable regular file whose first bytes are prefix (a file's kind, by its magic)."""
    try:
        with open_regular(path, "file") as f:
            return f.read(len(prefix)) == prefix
    except (OSError, CharrnnError):
        return False


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
    """write(f) into a temporary file beside path, flush + fsync, os.replace onto path, fsync the directory.
    A crash at any moment leaves the previous file intact; any exception (Ctrl-C too) removes the temporary
    file before it propagates.  OSError becomes a one-line CharrnnError.  os.replace renames onto the name
    itself: a symbolic link there would be replaced, never written through (check_output refuses one first)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CharrnnError(f"cannot write {short(path)}: directory {short(path.parent)} does not exist")
    try:
        fd, tmp = temp_beside(path)
    except OSError as e:
        raise CharrnnError(f"cannot write {short(path)}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CharrnnError(f"cannot write {short(path)}: {e.strerror or e}") from None
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename itself is done
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def existing(path: Path) -> os.stat_result | None:
    """lstat of path (a symbolic link itself, not its target), or None where nothing is there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CharrnnError(f"{short(path)} {why_not(path, e)}") from None


def check_output(path: Path, what: str, ours: Callable[[Path], bool], force: bool = False,
                 hint: str = "pass --force to replace it") -> None:
    """Refuse, in one line, to write `what` at path unless nothing is there, or a regular file that ours(path)
    recognises as the same kind of file, or (force) any regular file.  Never onto a symbolic link, a FIFO, a
    device or a directory, force or not: charrnn writes regular files only, and would otherwise replace the link
    (losing it) or the special file's name."""
    st = existing(path)
    if st is None:
        return
    if not stat.S_ISREG(st.st_mode):
        raise CharrnnError(f"{short(path)} is {kind(st.st_mode)}; charrnn writes only regular files and leaves "
                           f"anything else alone: name another file")
    if not force and not ours(path):
        raise CharrnnError(f"{short(path)} exists and is not {what}; {hint}")


def check_writable_dir(path: Path, what: str = "files") -> None:
    """Make the directory if need be and prove a file can be created in it, or raise a one-line CharrnnError that
    says what is in the way (a file, a device, a symbolic link to nowhere)."""
    try:
        mode = os.stat(path).st_mode  # through links: a link to a directory is a directory
    except OSError as e:
        if e.errno != errno.ENOENT or os.path.islink(path):  # else nothing is there yet: made below
            raise CharrnnError(f"cannot write {what} to {short(path)}: it {why_not(path, e)}") from None
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise CharrnnError(f"cannot write {what} to {short(path)}: it is {kind(mode)}, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CharrnnError(f"cannot write {what} to {short(path)}: {e.strerror or e}") from None
