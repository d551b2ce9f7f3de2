"""A small line plot in plain text, for loss curves in a terminal (no plotting dependency).

Each series is resampled at every column by linear interpolation between its points, so a curve reads as a
continuous line of markers even when it has few points; where curves meet, the later series is drawn on top.
"""

from __future__ import annotations

from charrnn.runs.units import finite

MARKERS = "•×+o#"  # one per series, in order


def _drawable(points):
    """The points whose x and y are both finite numbers, as floats."""
    return [(float(x), float(y)) for x, y in points if finite(x) is not None and finite(y) is not None]


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """y at x on the polyline through points (sorted by x); None outside their range."""
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _label(v: float) -> str:
    if v.is_integer() and abs(v) < 1e9:
        return f"{int(v):,}"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def plot(series: dict[str, list], width: int = 60, height: int = 10, x_label: str = "") -> list[str]:
    """Lines of a plot of each named series of (x, y) points; non-finite and None values are skipped.
    Returns [] when no series has a finite point.  width and height count plot cells, not labels."""
    data = {name: sorted(_drawable(points)) for name, points in series.items()}
    data = {name: points for name, points in data.items() if points}
    if not data:
        return []
    xs = [x for points in data.values() for x, _ in points]
    ys = [y for points in data.values() for _, y in points]
    x_lo, x_hi, y_lo, y_hi = min(xs), max(xs), min(ys), max(ys)
    if y_hi == y_lo:  # a flat line sits in the middle of a small band
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    grid = [[" "] * width for _ in range(height)]
    markers = dict(zip(data, MARKERS * (len(data) // len(MARKERS) + 1), strict=False))
    def column(x: float) -> int:
        return width // 2 if x_hi == x_lo else round((x - x_lo) / (x_hi - x_lo) * (width - 1))

    def put(col: int, y: float, marker: str) -> None:
        grid[round((y_hi - y) / (y_hi - y_lo) * (height - 1))][col] = marker

    for name, points in data.items():
        if points[0][0] == points[-1][0]:  # a single step: one marker
            put(column(points[-1][0]), points[-1][1], markers[name])
            continue
        for col in range(column(points[0][0]), column(points[-1][0]) + 1):
            y = _interpolate(points, x_lo + (x_hi - x_lo) * col / max(1, width - 1))
            if y is not None:
                put(col, y, markers[name])
    top, bottom = _label(y_hi), _label(y_lo)
    pad = max(len(top), len(bottom))
    lines = []
    for r, cells in enumerate(grid):
        label = top if r == 0 else bottom if r == height - 1 else ""
        lines.append(f"{label:>{pad}} ┤{''.join(cells)}" if label else f"{'':>{pad}} │{''.join(cells)}")
    lines.append(f"{'':>{pad}} └{'─' * width}")
    left, right = _label(x_lo), _label(x_hi)
    if x_hi == x_lo:
        axis = " " * max(0, width // 2 - len(left) // 2) + left
    else:
        axis = left + " " * max(1, width - len(left) - len(right)) + right
    lines.append(f"{'':>{pad}}  {axis}" + (f"  {x_label}" if x_label else ""))
    lines.append(f"{'':>{pad}}  " + "   ".join(f"{markers[name]} {name}" for name in data))
    return lines
