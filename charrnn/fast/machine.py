"""What the fast path may use on this machine: checked once, in a child process, and remembered per BLAS.

The packed kernels (charrnn.fast.packed) are OpenBLAS's internal routines, called through ctypes.  A kernel
whose interface or limits are not the ones bound there does not raise: it crashes the process (NumPy's OpenBLAS
with OPENBLAS_CORETYPE=Sandybridge does, and Haswell's dgemm past a depth of 256 did).  So packed.check runs in
a forked child, one per dtype; a crash, a hang past TIMEOUT or any difference from np.matmul leaves np.matmul in
charge.  The verdict is written to the user's cache ($XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn) under the
BLAS library's file, version and core, so the half second is paid once per machine (and again when NumPy, its
BLAS or OPENBLAS_CORETYPE changes); where nothing is writable it lasts for the process.  The record has a version
and a field per choice, so that other measured per-machine choices (shards or BLAS threads, block sizes) can
join it.

CHARRNN_FAST=0 turns the fast path off: np.matmul in one process, no packed kernels, no shards.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import hashlib
import json
import os
import select
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn.fast import blas, packed

SWITCH = "CHARRNN_FAST"  # 0 (or off, false, no): the fast path off
VERSION = 1  # of the record and of the checks behind it: a record of another version is checked again
TIMEOUT = 30.0  # seconds: a check still running then has hung (it takes a tenth of a second)
DTYPES = ("float32", "float64")
AGREES = "agrees"  # what a check that passed saw
NOT_CHECKED = "not checked: "  # how an answer begins where no check could run (kept for the process only)


def enabled() -> bool:
    """Whether the fast path may run at all: not when CHARRNN_FAST is 0, off, false or no."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


@dataclass(frozen=True)
class Verdict:
    """What the fast path may use on this machine: a field per checked choice.

    packed: per dtype name, what packed.check saw in its child: "agrees", or what went wrong ("crashed
    (SIGSEGV)", "timed out after 30 s", a difference from np.matmul, no kernels for this core)."""

    packed: dict[str, str]

    def packs(self, dtype) -> bool:
        """Whether the packed kernels of this dtype passed their check."""
        return self.packed.get(np.dtype(dtype).name) == AGREES



def library_key() -> dict[str, str] | None:
    """The BLAS a verdict holds for: NumPy's OpenBLAS's file, version and core; None where there is none."""
    lib, core = blas.library(), blas.core_name()
    if blas.openblas() is None or core is None:
        return None
    return {"file": os.path.realpath(lib.filepath), "version": str(lib.version), "core": core}


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def cache_file(key: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"fast-path-{digest}.json"


@functools.cache
def verdict() -> Verdict:
    """This machine's verdict: from the cache, else checked now (in child processes) and cached.  Found once a
    process; a process forked after (a shard's worker) inherits it."""
    key = library_key()
    if key is None:
        return Verdict(packed={d: f"no OpenBLAS kernels to call ({blas.describe()})" for d in DTYPES})
    path = cache_file(key)
    found = load(path, key)
    if found is None:
        found = Verdict(packed={d: check_in_child(functools.partial(packed.check, d)) for d in DTYPES})
        if not any(seen.startswith(NOT_CHECKED) for seen in found.packed.values()):
            save(path, key, found)
    return found


def load(path: Path, key: dict[str, str]) -> Verdict | None:
    """The verdict cached at path for this key; None where there is none, or it is of another version or key,
    or unreadable."""
    try:
        record = json.loads(path.read_text())
        if record["version"] != VERSION or record["blas"] != key:
            return None
        return Verdict(**record["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(path: Path, key: dict[str, str], found: Verdict) -> bool:
    """Write the verdict to path atomically (a whole file or none, for processes that read it meanwhile);
    False where the directory is not writable, and the verdict then lasts for this process."""
    record = {"version": VERSION, "blas": key, "verdict": asdict(found)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
    return True


def check_in_child(check: Callable[[], str | None], timeout: float = TIMEOUT) -> str:
    """Run check() in a forked child and say what it saw: AGREES when it returned None, else what it returned,
    what it raised, or how the child ended (a crash, an exit, or a hang past timeout seconds, then killed).
    Ctrl-C here kills the child and raises (the child ignores it: the terminal sends it to both)."""
    if not hasattr(os, "fork"):
        return NOT_CHECKED + "no fork() to check in"
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of fork beside threads (BLAS's); the child only
            warnings.simplefilter("ignore", DeprecationWarning)  # runs the check and leaves by os._exit
            pid = os.fork()
    except OSError as error:  # out of memory or processes, for now
        os.close(read)
        os.close(write)
        return NOT_CHECKED + f"cannot start a process ({error.strerror or error})"
    if pid == 0:  # the child: never returns into the caller's code
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            faulthandler.disable()  # a crash is an answer here, not news for the terminal
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os.close(read)
            try:
                with blas.single_threaded():  # as the kernels run in training, and no pool to start after fork
                    seen = check()
            except BaseException as error:  # whatever it was, the parent reports it
                seen = f"raised {type(error).__name__}: {error}"
            os.write(write, json.dumps(AGREES if seen is None else seen).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        return _wait(pid, read, timeout)
    finally:
        os.close(read)
        _reap(pid)


def _wait(pid: int, read: int, timeout: float) -> str:
    """What the child at pid reports on its pipe before it ends, or how it ended."""
    deadline, message = time.monotonic() + timeout, b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read], [], [], left)[0]:
            return f"timed out after {timeout:g} s"
        chunk = os.read(read, 1 << 16)
        if not chunk:  # the child has ended, one way or another
            break
        message += chunk
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    try:
        return json.loads(message)
    except ValueError:  # nothing, or not what the child writes
        return f"exited with code {os.WEXITSTATUS(status)}" + (f", having said {message[:80]!r}" if message else "")


def _reap(pid: int) -> None:
    """Kill the child if it still runs, and collect it."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:  # collected already
        pass
