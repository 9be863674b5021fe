"""Line charts as inline SVG, drawn on the server from the numbers model versions store.

No plotting library and no script: a chart is a few dozen elements, readable without CSS, with
a title and a description for screen readers and a table of the same numbers beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44
# Colour-blind safe (Okabe-Ito); the dash patterns tell series apart in grey too.
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "4 4", "1 2")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [round(math.floor(lo / step) * step, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:g}" if value == int(value) else f"{value:.3g}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    chart_id: str,
    y_from_zero: bool = False,
) -> Markup:
    """An accessible SVG chart; series without points are left out, and no points at all gives
    a short note instead of an empty frame."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return Markup('<p class="muted">{}: no figures recorded yet.</p>').format(title)
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(0.0 if y_from_zero else min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    e = escape
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{e(chart_id)}-t {e(chart_id)}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{e(chart_id)}-t">{e(title)}</title>',
        f'<desc id="{e(chart_id)}-d">{e(y_label)} against {e(x_label)} for '
        f"{e(', '.join(s.name for s in drawn))}</desc>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for t in y_ticks:
        y = py(t)
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in x_ticks:
        x = px(t)
        out.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'class="axis-label">{e(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" class="axis-label" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{e(y_label)}</text>'
    )
    for i, s in enumerate(drawn):
        colour, dash = COLOURS[i % len(COLOURS)], DASHES[i % len(DASHES)]
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        for x, y in s.points:
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}">'
                f"<title>{e(s.name)}: {_fmt(x)}, {_fmt(y)}</title></circle>"
            )
        ly = TOP + 4 + 16 * i
        lx = LEFT + plot_w - 150
        out.append(
            f'<line x1="{lx}" x2="{lx + 20}" y1="{ly + 8}" y2="{ly + 8}" stroke="{colour}" '
            f'stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{lx + 26}" y="{ly + 12}" class="legend">{e(s.name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
