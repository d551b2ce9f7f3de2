"""How quantities read in messages and tables: durations, byte counts, numbers that may not be finite."""

from __future__ import annotations

import math


def human_duration(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_bytes(n: float) -> str:
    """Decimal units, as file managers show sizes: 950 B, 1.2 MB, 3.4 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def finite(v):
    """v, or None where it is a non-finite float: NaN and inf have no JSON spelling and no place on a plot."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
