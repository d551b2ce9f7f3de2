"""Run charrnn as its console script does, sending itself signals at exact moments, for tests of "Ctrl-C and
SIGTERM at any moment" that do not depend on timing:

    python tests/stop_at.py MOMENT SIGNAL [MOMENT SIGNAL ...] -- CHARRNN-ARGS...

MOMENT is import:MODULE (as MODULE starts importing: numpy's import is the slow one) or call:MODULE.ATTR[.ATTR]:N
(at the start of the N-th call of that function; the module is imported after charrnn's entry point, as late as
the command line allows).  SIGNAL is INT or TERM.
"""

import importlib
import os
import signal
import sys

split = sys.argv.index("--")
moments = list(zip(sys.argv[1:split:2], sys.argv[2:split:2], strict=True))
sys.argv = ["charrnn", *sys.argv[split + 1 :]]


def send(name: str) -> None:
    os.kill(os.getpid(), getattr(signal, "SIG" + name))


class Trip:
    """A meta-path finder that finds nothing: it only notices a module's import starting."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.module:
            sys.meta_path.remove(self)
            send(self.name)
        return None


def on_call(target: str, name: str) -> None:
    """Wrap target (module.attr[.attr]:n) so its n-th call first sends the signal."""
    dotted, n = target.rsplit(":", 1)
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    for attr in parts[i:-1]:
        owner = getattr(owner, attr)
    original, calls = getattr(owner, parts[-1]), [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(n):
            send(name)
        return original(*args, **kwargs)

    setattr(owner, parts[-1], wrapper)


for moment, name in moments:  # import trips first: charrnn's entry point is the first import they may see
    if moment.startswith("import:"):
        sys.meta_path.insert(0, Trip(moment.removeprefix("import:"), name))

from charrnn.__main__ import main  # noqa: E402  (its first instruction takes the signals over)

for moment, name in moments:
    if moment.startswith("call:"):
        on_call(moment.removeprefix("call:"), name)
sys.exit(main())
