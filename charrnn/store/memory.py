"""How much memory this machine can give, and a one-line refusal when a model or a run would need more.

Checked before allocating: NumPy's failure to allocate is a traceback (_ArrayMemoryError), and where Linux
overcommits, the allocation succeeds and the process is killed later, while it fills the pages.  Available means
MemAvailable (free memory plus the page cache the kernel can drop), less where a cgroup (a container) allows less.
"""

from __future__ import annotations

import os
from pathlib import Path

from charrnn.errors import CharrnnError


def format_bytes(n: float) -> str:
    """Decimal units, as file managers show sizes: 950 B, 1.2 MB, 3.4 GB, 5.6 TB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def _read_number(path: str, key: str | None = None) -> int | None:
    """A number from a /proc or /sys file (the value after `key:` in kB, or the file's whole content), or None."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if key is None:
        return int(text) if text.strip().isdigit() else None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key and rest.split() and rest.split()[0].isdigit():
            return int(rest.split()[0]) * 1024
    return None


def available() -> int | None:
    """Bytes of memory this process can still use, or None where the system does not say."""
    free = _read_number("/proc/meminfo", "MemAvailable")
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    limit, used = _read_number("/sys/fs/cgroup/memory.max"), _read_number("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        free = limit - used if free is None else min(free, limit - used)
    return free


def check_fits(needed: int, what: str) -> None:
    """Refuse, in one line, what needs more memory than is available: what names the need ("a model of ...")."""
    free = available()
    if free is not None and needed > free:
        raise CharrnnError(f"{what} needs {format_bytes(needed)} of memory, and {format_bytes(max(free, 0))} is "
                           f"available")
