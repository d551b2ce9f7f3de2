"""One training run per output directory at a time: an advisory lock on OUT/.charrnn.lock.

flock(2) locks belong to the open file, and the kernel drops them when the last descriptor of it closes, so a
run killed by SIGKILL cannot leave its directory locked.  The holder writes its pid into the file for the
refusal to name.  Forked workers (charrnn.fast.shards) close their inherited descriptor at once, or a killed
run's lock would last until its workers noticed and left.  The file itself stays: removing a lock file while
another process waits on it would let two processes hold two different locks on one directory.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from charrnn.errors import CharrnnError
from charrnn.store.files import short

NAME = ".charrnn.lock"
_held: dict[int, Path] = {}  # descriptor -> directory, for the fork hook


def _close_in_child() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """The lock on a directory, taken with acquire() (or `with`) and held until release() or the process ends."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock without waiting, or raise a one-line CharrnnError naming the process that holds it."""
        path = self.directory / NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise CharrnnError(f"cannot lock {short(self.directory)} for this run ({path.name}: "
                               f"{e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "a process that has not yet written its pid"
            raise CharrnnError(f"{short(self.directory)} is in use by another training run ({who}); wait for it to "
                               f"finish, or train into another directory with --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _held[fd] = self.directory
        return self

    def release(self) -> None:
        if self.fd is not None:
            _held.pop(self.fd, None)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def abandon(self, made: bool) -> None:
        """Release the lock of a run that never started; made: the run made the directory, so it goes too, with
        the lock file, if nothing else is in it.  (No other process can hold that new file's lock: it was ours.)"""
        self.release()
        if made:
            try:
                (self.directory / NAME).unlink()
                self.directory.rmdir()
            except OSError:
                pass

    __del__ = release  # a Trainer dropped without running still frees its directory

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
