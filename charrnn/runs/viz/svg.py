"""Small inline SVG charts for the page: line charts (linear or log y) and the gate-saturation scatter plots.
Every piece of text that goes in is escaped; colours come from the page's CSS classes."""

from __future__ import annotations

import math
from html import escape

import numpy as np

WIDTH, HEIGHT = 420, 240  # a line chart's size in CSS pixels
MARGIN = (12, 16, 40, 56)  # top, right, bottom, left: room for the axis labels


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) spanning low .. high."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"


def line_chart(series: list[tuple[str, np.ndarray, np.ndarray, str]], x_label: str, y_label: str,
               log_y: bool = False, title: str = "") -> str:
    """series: (name, x, y, CSS class) each; non-finite points (and non-positive ones on a log axis) are left
    out."""
    top, right, bottom, left = MARGIN
    plot_w, plot_h = WIDTH - left - right, HEIGHT - top - bottom
    kept = []
    for name, x, y in ((s[0], np.asarray(s[1], float), np.asarray(s[2], float)) for s in series):
        ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        kept.append((name, x[ok], np.log10(y[ok]) if log_y else y[ok]))
    points = [p for _, x, y in kept for p in zip(x, y, strict=True)]
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">',
             f"<title>{escape(title or y_label)}</title>"]
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(parts)
    xs, ys = np.array(points).T
    x0, x1 = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1
    if log_y:
        y0, y1 = math.floor(ys.min()), math.ceil(ys.max()) if ys.max() > ys.min() else math.floor(ys.min()) + 1
        y_ticks = [float(v) for v in range(int(y0), int(y1) + 1)]
    else:
        y_ticks = nice_ticks(float(ys.min()), float(ys.max()))
        y0, y1 = min(y_ticks[0], ys.min()), max(y_ticks[-1], ys.max())
        y1 = y1 if y1 > y0 else y0 + 1

    def px(x):
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    for v in y_ticks:
        text = label(10**v) if log_y else label(v)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{py(v):.1f}" y2="{py(v):.1f}"/>'
                     f'<text class="tick" x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{text}</text>')
    for v in nice_ticks(x0, x1):
        parts.append(f'<text class="tick" x="{px(v):.1f}" y="{top + plot_h + 14}" text-anchor="middle">'
                     f"{label(v)}</text>")
    parts.append(f'<text class="axis" x="{left + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f"{escape(x_label)}</text>"
                 f'<text class="axis" transform="translate(14 {top + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for (name, x, y), (_, _, _, css) in zip(kept, series, strict=True):
        if len(x):
            path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y, strict=True))
            parts.append(f'<polyline class="line {escape(css)}" points="{path}"><title>{escape(name)}</title>'
                         f"</polyline>")
    legend = "".join(f'<tspan class="{escape(css)}" dx="10">— {escape(name)}</tspan>' for name, _, _, css in series)
    parts.append(f'<text class="legend" x="{left + 4}" y="{top + 14}">{legend}</text></svg>')
    return "".join(parts)


SIDE = 150  # a saturation plot's side in CSS pixels


def saturation_plot(fractions: np.ndarray, title: str) -> str:
    """One gate of one layer, as in Karpathy et al. (2015), figure 3: a dot per unit at (fraction of steps left-
    saturated, fraction right-saturated).  fractions (2, H)."""
    pad = 24
    inner = SIDE - 2 * pad
    dots = "".join(f'<circle cx="{pad + a * inner:.1f}" cy="{pad + (1 - b) * inner:.1f}" r="2"/>'
                   for a, b in fractions.T)
    return (f'<svg class="saturation" viewBox="0 0 {SIDE} {SIDE}" width="{SIDE}" height="{SIDE}" role="img">'
            f"<title>{escape(title)}</title>"
            f'<rect class="frame" x="{pad}" y="{pad}" width="{inner}" height="{inner}"/>'
            f'<text class="axis" x="{SIDE / 2}" y="14" text-anchor="middle">{escape(title)}</text>'
            f'<text class="tick" x="{SIDE / 2}" y="{SIDE - 6}" text-anchor="middle">left-saturated</text>'
            f'<text class="tick" transform="translate(12 {SIDE / 2}) rotate(-90)" text-anchor="middle">'
            f"right-saturated</text>"
            f'<line class="diagonal" x1="{pad}" y1="{pad}" x2="{pad + inner}" y2="{pad + inner}"/>'
            f'<g class="dots">{dots}</g></svg>')
