"""Ctrl-C and SIGTERM, from the first instruction to the last.

The entry point (charrnn/__main__.py) calls handle_signals() before it imports NumPy or click: from then on
SIGINT raises Interrupted and SIGTERM raises Terminated.  They unwind the program like any exception (every
`finally` runs, so no temporary file outlives a write), they are BaseExceptions that `except Exception` never
swallows, and click, which turns a KeyboardInterrupt into "Aborted!" and exit status 1, lets them through to the
entry point, which prints one line and exits 130 or 143.  Once the exit status is decided, hold_signals() keeps
later signals are ignored, so nothing can turn the exit into a traceback.  A stop raised where Python cannot let an
exception out (a weakref callback during an import, a __del__) would be printed as "Exception ignored" and lost,
the command running on to exit 0: such a stop is raised again a moment later (SIGALRM), where it can propagate.

A training run's loop takes both signals over (StopRequests): the first asks it to stop between steps and save,
a second one stops it at once, as the exception of that signal.
"""

from __future__ import annotations

import signal
import sys


class Stopped(BaseException):
    """The process was asked to stop.  reason: "interrupted" or "terminated"; exit_code: 130 or 143."""

    reason, exit_code, signum, signal_name = "", 1, 0, ""


class Interrupted(Stopped):
    reason, exit_code, signum, signal_name = "interrupted", 130, signal.SIGINT, "Ctrl-C (SIGINT)"


class Terminated(Stopped):
    reason, exit_code, signum, signal_name = "terminated", 143, signal.SIGTERM, "SIGTERM"


STOPS = {signal.SIGINT: Interrupted, signal.SIGTERM: Terminated}
REASONS = {sig: stop.reason for sig, stop in STOPS.items()}
EXIT_CODES = {stop.reason: stop.exit_code for stop in STOPS.values()}  # 128 + the signal's number, as a shell says


_swallowed: list[int] = []  # signals whose Stopped Python swallowed, to be raised again


def _raise_stop(signum, frame) -> None:
    if signum == signal.SIGALRM:  # the timer _stop_again set: raise what was swallowed, out here
        if not _swallowed:
            return
        signum = _swallowed.pop()
    raise STOPS[signum]()


def _stop_again(unraisable) -> None:
    """sys.unraisablehook: a Stopped that Python had to swallow (raised in a weakref callback or a __del__) is
    raised again 10 ms later by a one-shot timer, back in code that lets it out (raised here, in the hook, it would
    be swallowed too); anything else is reported as Python would."""
    if isinstance(unraisable.exc_value, Stopped):
        _swallowed.append(unraisable.exc_value.signum)
        signal.setitimer(signal.ITIMER_REAL, 0.01)
    else:
        sys.__unraisablehook__(unraisable)


def handle_signals(pending=()) -> None:
    """SIGINT raises Interrupted and SIGTERM Terminated, wherever the program is (see the module docstring).
    pending: signals that came before, delivered again now."""
    sys.unraisablehook = _stop_again
    for sig in (*STOPS, signal.SIGALRM):
        signal.signal(sig, _raise_stop)
    for sig in pending[:1]:
        signal.raise_signal(sig)


def hold_signals() -> None:
    """Ignore SIGINT and SIGTERM from now until the process exits: its status is already decided.  Ignored, not
    blocked: a mask holds for one thread only, and BLAS's threads would take the signal after Python's
    finalisation put the default action back (which it does not do for an ignored signal)."""
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)


class StopRequests:
    """Catches SIGINT and SIGTERM inside the block (installed on entry, the old handlers back on exit).
    `reason` is None until the first arrives, then "interrupted" or "terminated"; the loop checks it between
    steps.  A second signal raises that signal's Stopped at once: the user insists."""

    def __init__(self):
        self.reason: str | None = None
        self._old = {}

    def _caught(self, signum, frame) -> None:
        if self.reason is not None:
            raise STOPS[signum]()
        self.reason = REASONS[signum]

    def __enter__(self) -> StopRequests:
        self._old = {s: signal.signal(s, self._caught) for s in STOPS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
