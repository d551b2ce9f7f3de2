"""Ctrl-C and SIGTERM during a run: the first asks the loop to stop and save; a second one stops it now."""

from __future__ import annotations

import signal

REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
EXIT_CODES = {"interrupted": 130, "terminated": 143}  # 128 + the signal's number, as a shell reports it


class StopRequests:
    """Catches SIGINT and SIGTERM inside the block (installed on entry, the old handlers back on exit).
    `reason` is None until the first arrives, then "interrupted" or "terminated"; the loop checks it between
    steps.  A second signal raises KeyboardInterrupt at once: the user insists."""

    def __init__(self):
        self.reason: str | None = None
        self._old = {}

    def _caught(self, signum, frame) -> None:
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = REASONS[signum]

    def __enter__(self) -> StopRequests:
        self._old = {s: signal.signal(s, self._caught) for s in REASONS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
