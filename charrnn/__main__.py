"""`charrnn` and `python -m charrnn`: the command-line tool, with Ctrl-C and SIGTERM honoured from the first
instruction to the last (charrnn.runs.signals).

The first instruction records SIGINT and SIGTERM through the interpreter's builtin _signal (importing the signal
module takes milliseconds); main() installs the real handlers, which raise, and delivers again what was recorded,
all before NumPy, click and rich are imported (a few hundred milliseconds).  Once the exit status is decided,
later signals are ignored.  The console script points here, not at the click group, for that reason.
"""

import _signal

early: list[int] = []  # signals that came before main() took over
for _signum in (_signal.SIGINT, _signal.SIGTERM):
    _signal.signal(_signum, lambda signum, frame: early.append(signum))

import sys  # noqa: E402  (after the handlers, on purpose)

from charrnn.runs.signals import Stopped, handle_signals, hold_signals  # noqa: E402


def main() -> int:
    try:
        try:
            handle_signals(early)
            from charrnn.cli.commands import main as commands  # the slow imports

            commands.main(prog_name="charrnn")  # exits through SystemExit with the command's status
            return 0
        finally:
            hold_signals()
    except Stopped as stop:
        try:  # every write is atomic: a file is complete, old or new, whenever the stop came
            sys.stderr.write(f"charrnn: {stop.reason} by {stop.signal_name}; no file was left half-written\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
