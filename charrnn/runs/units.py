"""How quantities read in messages and tables: durations, numbers that may not be finite (byte counts:
store.memory.format_bytes)."""

from __future__ import annotations

import math


def human_duration(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def finite(v):
    """v, or None where it is a non-finite float: NaN and inf have no JSON spelling and no place on a plot."""
    return None if isinstance(v, float) and not math.isfinite(v) else v
