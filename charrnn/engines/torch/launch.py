"""--procs N: the processes of a run on this machine, started as torchrun starts them.

Each one is `python -m charrnn` with this command's arguments and torchrun's variables (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), in a session of its own, as torchrun's are: Ctrl-C at
the terminal reaches this process alone, which passes every SIGINT and SIGTERM on once, so the processes stop
together, save and exit 130 or 143, and a second Ctrl-C still insists.  When one of them fails, the others
notice at their next collective and stop; any still running after GRACE seconds are killed.
Imports no torch: this process only waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

GRACE = 10.0  # seconds the other processes get to stop by themselves after one has failed
STOPPED = (0, 130, 143)  # exit codes of a process that finished, or stopped on a signal and saved


def launched() -> bool:
    """Whether this process is one of a run's many (torchrun's or launch's variables are set)."""
    return "WORLD_SIZE" in os.environ


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now, for the processes' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(procs: int, args: list[str]) -> int:
    """Run `python -m charrnn *args` as the procs processes of one run; returns the exit code for the command:
    the first process's, unless it finished and another did not."""
    port = free_port()
    children = []
    for rank in range(procs):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(procs),
               "LOCAL_WORLD_SIZE": str(procs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        children.append(subprocess.Popen([sys.executable, "-m", "charrnn", *args], env=env, start_new_session=True))

    def pass_on(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    handlers = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed = None  # when the first process failed
        while any(child.poll() is None for child in children):
            if failed is None and any(child.returncode not in (None, *STOPPED) for child in children):
                failed = time.monotonic()
            if failed is not None and time.monotonic() - failed > GRACE:
                break
            time.sleep(0.05)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    codes = [child.returncode for child in children]
    if codes[0] < 0:  # the first process said nothing: it was killed
        print(f"charrnn: the run's first process was killed ({signal.Signals(-codes[0]).name}); its last "
              f"checkpoint is untouched and --resume continues from it", file=sys.stderr)
    code = next((c for c in codes if c != 0), 0)
    return 128 - code if code < 0 else code
