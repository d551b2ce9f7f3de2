"""What the fast path may use on this machine, and how: checked and measured once, in child processes, and
remembered per BLAS.

The packed kernels (charrnn.fast.packed) are OpenBLAS's internal routines, called through ctypes.  A kernel
whose interface or limits are not the ones bound there does not raise: it crashes the process (NumPy's OpenBLAS
with OPENBLAS_CORETYPE=Sandybridge does, and Haswell's dgemm past a depth of 256 did).  So packed.check runs in
a forked child, one per dtype; a crash, a hang past TIMEOUT or any difference from np.matmul leaves np.matmul in
charge.  Then a third child measures the choices that depend on the machine (charrnn.fast.tuning: packed kernels
or np.matmul by speed, their block size and depth, how many streams a shard needs, the sampler's GEMVs); where
it fails, the defaults stand.  The verdict is written to the user's cache ($XDG_CACHE_HOME/charrnn, else
~/.cache/charrnn) under the BLAS library's file, version, core and threads, so the second or two is paid once per
machine (and again when NumPy, its BLAS, OPENBLAS_CORETYPE or the thread count changes); where nothing is
writable it lasts for the process.  The record has a version and a field per choice: a record of another
version is checked and measured again.

CHARRNN_FAST=0 turns the fast path off: np.matmul in one process, no packed kernels, no shards.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import hashlib
import json
import os
import resource
import select
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from charrnn.fast import blas, packed, tuning

SWITCH = "CHARRNN_FAST"  # 0 (or off, false, no): the fast path off
VERSION = 2  # of the record and of the checks behind it: a record of another version is checked again
TIMEOUT = 30.0  # seconds: a check still running then has hung (a check takes a tenth of a second, tuning two)
DTYPES = ("float32", "float64")
AGREES = "agrees"  # what a check that passed saw
NOT_CHECKED = "not checked: "  # how an answer begins where no check could run (kept for the process only)
BUSY = 0.25  # a share of the CPUs other processes took while tuning measured, above which the defaults stand


def enabled() -> bool:
    """Whether the fast path may run at all: not when CHARRNN_FAST is 0, off, false or no."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


@dataclass(frozen=True)
class Verdict:
    """What the fast path may use on this machine, and how: a field per checked or measured choice.

    packed: per dtype name, what packed.check saw in its child: "agrees", or what went wrong ("crashed
    (SIGSEGV)", "timed out after 30 s", a difference from np.matmul, no kernels for this core).
    tuned: per choice of charrnn.fast.tuning, {"value": what was picked, "why": the measurement that decided};
    a choice not there takes its default.  Where other processes took more than BUSY of the CPUs while the
    tuning measured, its gaps are theirs as much as the candidates': every choice keeps its default, for this
    process only (the next one measures again)."""

    packed: dict[str, str]
    tuned: dict[str, dict] = field(default_factory=dict)
    others: float | None = None  # the share of the CPUs other processes took while tuning measured (None: unknown)

    def agrees(self, dtype) -> bool:
        """Whether the packed kernels of this dtype passed their check: they may run."""
        return self.packed.get(np.dtype(dtype).name) == AGREES

    def packs(self, dtype) -> bool:
        """Whether the packed kernels of this dtype run in a shard: they passed their check and were not slower
        than np.matmul here."""
        return self.agrees(dtype) and self.value(f"gemm {np.dtype(dtype).name}") == "packed"

    def value(self, name: str):
        """The choice named (a key of tuning.CANDIDATES): measured, else its default."""
        return self.tuned.get(name, {}).get("value", tuning.DEFAULTS[name])

    def why(self, name: str) -> str:
        """What decided the choice, e.g. "1.31x np.matmul"; "not measured" where nothing did."""
        return self.tuned.get(name, {}).get("why", "not measured")


def library_key() -> dict[str, str] | None:
    """The BLAS a verdict holds for: NumPy's OpenBLAS's file, version, core and threads (the shards' choice is
    measured on that many cores); None where there is none."""
    lib, core = blas.library(), blas.core_name()
    if blas.openblas() is None or core is None:
        return None
    return {"file": os.path.realpath(lib.filepath), "version": str(lib.version), "core": core,
            "threads": str(blas.threads())}


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
        checked = {d: check_in_child(functools.partial(packed.check, d)) for d in DTYPES}
        others = contention_meter()
        ok, tuned = in_child(functools.partial(tuning.measure, blas.threads() or 1,
                                               {d: seen == AGREES for d, seen in checked.items()}))
        busy = others()
        if not ok:  # the defaults stand
            tuned = {name: tuning.choice(value, f"not measured: {tuned}") for name, value in tuning.DEFAULTS.items()}
        elif (busy or 0.0) > BUSY:  # gaps that others' load made: the defaults stand, for this process
            tuned = {name: tuning.choice(tuning.DEFAULTS[name], f"others took {busy:.0%} of the CPUs: the default")
                     for name in tuned}
        found = Verdict(packed=checked, tuned=tuned, others=busy)
        seen = (*checked.values(), *(c["why"] for c in tuned.values()))
        if not any(s.startswith(NOT_CHECKED) for s in seen) and (busy or 0.0) <= BUSY:
            save(path, key, found)
    return found


def contention_meter() -> Callable[[], float | None]:
    """Start a meter; calling the result gives the share of all CPUs that other processes (and the hypervisor, as
    steal) used since, None where unknown (not Linux).  This process and its children (once collected) are not
    others.  On a shared machine it says whether a measurement is to be trusted."""

    def busy_and_own() -> tuple[float, float]:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        return busy, sum(r.ru_utime + r.ru_stime for r in own)

    try:
        start, wall = busy_and_own(), time.perf_counter()
    except (OSError, ValueError):
        return lambda: None

    def others() -> float:
        busy, own = busy_and_own()
        elapsed = (time.perf_counter() - wall) * (os.cpu_count() or 1)
        return max(0.0, (busy - start[0]) - (own - start[1])) / elapsed if elapsed > 0 else 0.0

    return others


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
    what it raised, or how the child ended (a crash, an exit, or a hang past timeout seconds, then killed)."""
    ok, seen = in_child(check, timeout)
    return AGREES if ok and seen is None else seen


def in_child(task: Callable[[], object], timeout: float = TIMEOUT) -> tuple[bool, object]:
    """Run task() in a forked child with BLAS on one thread: (True, what it returned, through JSON), or (False,
    what went wrong: what it raised, a crash, an exit, or a hang past timeout seconds, then killed).  Ctrl-C here
    kills the child and raises (the child ignores it: the terminal sends it to both)."""
    if not hasattr(os, "fork"):
        return False, NOT_CHECKED + "no fork() to check in"
    read, write = os.pipe()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of fork beside threads (BLAS's); the child only
            warnings.simplefilter("ignore", DeprecationWarning)  # runs the task and leaves by os._exit
            pid = os.fork()
    except OSError as error:  # out of memory or processes, for now
        os.close(read)
        os.close(write)
        return False, NOT_CHECKED + f"cannot start a process ({error.strerror or error})"
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
                    answer = [True, task()]
            except BaseException as error:  # whatever it was, the parent reports it
                answer = [False, f"raised {type(error).__name__}: {error}"]
            os.write(write, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        return _wait(pid, read, timeout)
    finally:
        os.close(read)
        _reap(pid)


def _wait(pid: int, read: int, timeout: float) -> tuple[bool, object]:
    """What the child at pid reports on its pipe before it ends, or how it ended."""
    deadline, message = time.monotonic() + timeout, b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([read], [], [], left)[0]:
            return False, f"timed out after {timeout:g} s"
        chunk = os.read(read, 1 << 16)
        if not chunk:  # the child has ended, one way or another
            break
        message += chunk
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return False, f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    try:
        ok, answer = json.loads(message)
        return bool(ok), answer
    except (ValueError, TypeError):  # nothing, or not what the child writes
        return False, (f"exited with code {os.WEXITSTATUS(status)}" +
                       (f", having said {message[:80]!r}" if message else ""))


def _reap(pid: int) -> None:
    """Kill the child if it still runs, and collect it."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:  # collected already
        pass
