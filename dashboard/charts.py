"""Server-rendered SVG charts of the results: depth curves, quality against speed, routing heatmaps.

Each chart is an inline SVG string whose numbers are drawn as text, so it reads without hovering and
without a script. Only presentation attributes are used (the CSP allows no inline style); every piece
of text goes through ``html.escape``. Large heatmaps (the reference model has 48 layers × 128 experts)
are drawn as one embedded PNG rather than thousands of rectangles, with the same axes and legend.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.utils.safestring import SafeString, mark_safe

from dashboard.analysis import Arm, Group

WIDTH, HEIGHT = 600, 340
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 170, 40, 52
SERIES_COLOURS = ["#2557a7", "#b5541c", "#2f7d32", "#7b3fa0", "#8a6d00", "#0f7b86", "#a8231d", "#4d5a66"]
LOW_RGB, HIGH_RGB, NEGATIVE_RGB = (255, 255, 255), (37, 87, 167), (181, 84, 28)
# Above this many cells a heatmap is one embedded image instead of a rectangle per cell.
MAX_RECT_CELLS = 1024
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg(width: float, height: float, title: str, body: list[str], css_class: str) -> SafeString:
    """The outer element; the title is the accessible name and the first visible line.

    Marked safe as a whole: ``body`` holds only markup built here, every text in it through ``_e``.
    """
    return mark_safe(
        f'<svg class="chart {css_class}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" {FONT}>'
        f"<title>{_e(title)}</title>"
        f'<text x="8" y="18" font-weight="600" font-size="13" fill="#1d232b">{_e(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


# --------------------------------------------------------------------------- axes


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10ⁿ) that cover [lo, hi]."""
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _tick_text(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    return f"{value:.{decimals}f}".replace("-", "−")


def _number(value: float | None, decimals: int = 0) -> str:
    return "–" if value is None else f"{value:.{decimals}f}".replace("-", "−")


@dataclass(frozen=True)
class Point:
    """One arm on an interval chart: x, the score y and its interval [lo, hi]."""

    label: str
    x: float
    y: float
    lo: float | None
    hi: float | None
    series: str = ""


def interval_chart(
    points: Sequence[Point], *, title: str, x_label: str, y_label: str, connect: bool, x_decimals: int = 1
) -> SafeString:
    """Points with vertical interval whiskers, each labelled with its name, score and interval.

    With ``connect``, points of one series (e.g. one context configuration) are joined in x order.
    """
    if not points:
        body = [f'<text x="8" y="48" fill="#5b6570">{_e("No votes or no outputs yet.")}</text>']
        return _svg(WIDTH, 64, title, body, "interval empty")
    xs = [p.x for p in points]
    ys = [v for p in points for v in (p.y, p.lo, p.hi) if v is not None]
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs), 5), nice_ticks(min(ys), max(ys), 5)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    top, bottom = MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    body = [
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="#fff" '
        'stroke="#d5dae0"/>'
    ]
    x_step, y_step = x_ticks[1] - x_ticks[0], y_ticks[1] - y_ticks[0]
    for t in x_ticks:
        body.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{bottom}" stroke="#eef1f4"/>')
        body.append(
            f'<text x="{sx(t):.1f}" y="{bottom + 16}" text-anchor="middle" fill="#5b6570">'
            f"{_e(_tick_text(t, x_step))}</text>"
        )
    for t in y_ticks:
        body.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#eef1f4"/>')
        body.append(
            f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" fill="#5b6570">'
            f"{_e(_tick_text(t, y_step))}</text>"
        )
    body.append(
        f'<text x="{(left + right) / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle" fill="#1d232b">'
        f"{_e(x_label)}</text>"
    )
    body.append(
        f'<text x="14" y="{(top + bottom) / 2:.1f}" text-anchor="middle" fill="#1d232b" '
        f'transform="rotate(-90 14 {(top + bottom) / 2:.1f})">{_e(y_label)}</text>'
    )
    series = list(dict.fromkeys(p.series for p in points))
    colour = {name: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, name in enumerate(series)}
    if connect:
        for name in series:
            members = sorted((p for p in points if p.series == name), key=lambda p: p.x)
            if len(members) > 1:
                path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in members)
                body.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour[name]}" stroke-width="2"/>'
                )
    label_y = _spread_labels([(sx(p.x), sy(p.y)) for p in points])
    for p, text_y in zip(points, label_y, strict=True):
        cx, cy, c = sx(p.x), sy(p.y), colour[p.series]
        if p.lo is not None and p.hi is not None:
            body.append(
                f'<line x1="{cx:.1f}" y1="{sy(p.lo):.1f}" x2="{cx:.1f}" y2="{sy(p.hi):.1f}" '
                f'stroke="{c}" stroke-width="1.5"/>'
            )
            for end in (p.lo, p.hi):
                body.append(
                    f'<line x1="{cx - 5:.1f}" y1="{sy(end):.1f}" x2="{cx + 5:.1f}" y2="{sy(end):.1f}" '
                    f'stroke="{c}" stroke-width="1.5"/>'
                )
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{c}"/>')
        interval = f" ({_number(p.lo)}–{_number(p.hi)})" if p.lo is not None else ""
        body.append(
            f'<text x="{cx + 8:.1f}" y="{text_y - 6:.1f}" fill="#1d232b">'
            f'<tspan font-weight="600">{_e(p.label)}</tspan> {_e(_number(p.y))}{_e(interval)}</text>'
        )
        body.append(
            f'<text x="{cx + 8:.1f}" y="{text_y + 9:.1f}" fill="#5b6570" font-size="11">'
            f"{_e(x_label.split(' (')[0])}: {_e(_number(p.x, x_decimals))}</text>"
        )
    if len(series) > 1:
        for i, name in enumerate(series):
            y = top + 14 + 16 * i
            body.append(f'<rect x="{right + 10}" y="{y - 9}" width="10" height="10" fill="{colour[name]}"/>')
            body.append(f'<text x="{right + 24}" y="{y}" fill="#1d232b" font-size="11">{_e(name)}</text>')
    return _svg(WIDTH, HEIGHT, title, body, "interval")


def _spread_labels(anchors: list[tuple[float, float]], width: float = 170, height: float = 30) -> list[float]:
    """A y for each point's two-line label, moved down as needed so that no two labels overlap."""
    placed: list[tuple[float, float]] = []
    result = [0.0] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda i: anchors[i][1]):
        x, y = anchors[i]
        while any(abs(x - px) < width and abs(y - py) < height for px, py in placed):
            y += 4
        placed.append((x, y))
        result[i] = y
    return result


# --------------------------------------------------------------------------- heatmaps


def _colours(values: np.ndarray, limit: float, diverging: bool) -> np.ndarray:
    """[..., 3] uint8 colours: white to blue (0..limit), or orange ← white → blue (−limit..limit)."""
    limit = limit if limit > 0 else 1.0
    t = np.clip(values / limit, -1.0 if diverging else 0.0, 1.0)[..., None]
    low, high, negative = (np.array(c, float) for c in (LOW_RGB, HIGH_RGB, NEGATIVE_RGB))
    rgb = np.where(t >= 0, low + t * (high - low), low + (-t) * (negative - low))
    return np.round(rgb).astype(np.uint8)


def _hex(rgb: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


def png(rgb: np.ndarray) -> bytes:
    """A [height, width, 3] uint8 array as a PNG file (no compression library beyond zlib)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _labelled(n: int, pixels: float, spacing: float) -> list[int]:
    """Rows or columns to number: every k-th, at least ``spacing`` pixels apart, and always the last."""
    if n == 0:
        return []
    step = max(1, math.ceil(spacing / pixels))
    indices = list(range(0, n, step))
    if indices[-1] != n - 1:
        if (n - 1 - indices[-1]) * pixels < spacing and len(indices) > 1:
            indices.pop()
        indices.append(n - 1)
    return indices


def heatmap(
    values: np.ndarray, *, title: str, limit: float | None = None, diverging: bool = False, caption: str = ""
) -> SafeString:
    """Layers (rows) × experts (columns), coloured by value, with a numbered legend.

    Values are shares of tokens (0..1) and are written in percent; a diverging map shows differences in
    percentage points. ``limit`` fixes the colour scale (the same for every arm of a section).
    """
    values = np.asarray(values, float)
    layers, experts = values.shape
    limit = float(np.abs(values).max()) if limit is None else limit
    cell_w = min(30.0, max(3.0, 480.0 / max(experts, 1)))
    cell_h = min(22.0, max(3.0, 300.0 / max(layers, 1)))
    left, top = 56.0, 40.0
    grid_w, grid_h = cell_w * experts, cell_h * layers
    colours = _colours(values, limit, diverging)
    body = []
    if layers * experts <= MAX_RECT_CELLS:
        write_numbers = cell_w >= 22 and cell_h >= 14
        for layer in range(layers):
            for expert in range(experts):
                x, y = left + expert * cell_w, top + layer * cell_h
                body.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell_w:.1f}" height="{cell_h:.1f}" '
                    f'fill="{_hex(colours[layer, expert])}"/>'
                )
                if write_numbers:
                    dark = abs(values[layer, expert]) > 0.55 * (limit or 1.0)
                    body.append(
                        f'<text x="{x + cell_w / 2:.1f}" y="{y + cell_h / 2 + 4:.1f}" text-anchor="middle" '
                        f'font-size="10" fill="{"#fff" if dark else "#1d232b"}">'
                        f"{_e(_percent(values[layer, expert], diverging))}</text>"
                    )
    else:
        encoded = base64.b64encode(png(colours)).decode("ascii")
        body.append(
            f'<image x="{left:.1f}" y="{top:.1f}" width="{grid_w:.1f}" height="{grid_h:.1f}" '
            'preserveAspectRatio="none" image-rendering="optimizeSpeed" '
            f'href="data:image/png;base64,{encoded}"/>'
        )
    body.append(
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{grid_w:.1f}" height="{grid_h:.1f}" fill="none" '
        'stroke="#d5dae0"/>'
    )
    for layer in _labelled(layers, cell_h, 13):
        body.append(
            f'<text x="{left - 4:.1f}" y="{top + (layer + 0.5) * cell_h + 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="#5b6570">{layer}</text>'
        )
    for expert in _labelled(experts, cell_w, 22):
        body.append(
            f'<text x="{left + (expert + 0.5) * cell_w:.1f}" y="{top - 4:.1f}" text-anchor="middle" '
            f'font-size="10" fill="#5b6570">{expert}</text>'
        )
    body.append(
        f'<text x="{left - 40:.1f}" y="{top + grid_h / 2:.1f}" text-anchor="middle" fill="#1d232b" '
        f'transform="rotate(-90 {left - 40:.1f} {top + grid_h / 2:.1f})">layer</text>'
    )
    body.append(f'<text x="{left + grid_w + 6:.1f}" y="{top - 4:.1f}" fill="#1d232b">expert</text>')
    legend_y = top + grid_h + 16
    body += _legend(left, legend_y, limit, diverging)
    if caption:
        body.append(
            f'<text x="{left:.1f}" y="{legend_y + 36:.1f}" fill="#5b6570" font-size="11">{_e(caption)}</text>'
        )
    width = max(left + grid_w + 60, 380)
    return _svg(width, legend_y + (48 if caption else 30), title, body, "heatmap")


def _percent(share: float, signed: bool) -> str:
    value = 100 * share
    text = f"{value:+.0f}" if signed else f"{value:.0f}"
    return text.replace("-", "−")


def _legend(x: float, y: float, limit: float, diverging: bool) -> list[str]:
    steps = 10
    stops = np.linspace(-limit if diverging else 0.0, limit, steps)
    colours = _colours(stops, limit, diverging)
    parts = [
        f'<rect x="{x + 16 * i:.1f}" y="{y:.1f}" width="16" height="10" fill="{_hex(c)}"/>'
        for i, c in enumerate(colours)
    ]
    labels = [(0, stops[0]), (steps, stops[-1])]
    if diverging:
        labels.append((steps / 2, 0.0))
    for position, value in labels:
        parts.append(
            f'<text x="{x + 16 * position:.1f}" y="{y + 22:.1f}" text-anchor="middle" font-size="10" '
            f'fill="#5b6570">{_e(_percent(value, diverging))}{"" if diverging else "%"}</text>'
        )
    return parts


# --------------------------------------------------------------------------- the charts of one section


@dataclass(frozen=True)
class GroupCharts:
    depth_curve: SafeString
    speed: SafeString
    heatmaps: list[SafeString]
    difference: SafeString | None


SCORE_LABEL = "preference score (95% interval)"
ACTIVE_LABEL = "expert slots computed per token (measured)"
SPEED_LABEL = "tokens per second (measured)"


def group_charts(group: Group, pair: tuple[Arm, Arm] | None) -> GroupCharts:
    """The pictures of one section of the results page: all categories, or one category."""
    curve = [
        Point(r.arm.name, r.cost.compute_experts, r.score, r.ci_low, r.ci_high, r.arm.context)
        for r in group.rows
        if r.score is not None and r.cost.compute_experts is not None
    ]
    speed = [
        Point(r.arm.name, r.cost.tokens_per_s, r.score, r.ci_low, r.ci_high, r.arm.context)
        for r in group.rows
        if r.score is not None and r.cost.tokens_per_s is not None
    ]
    shares = {i: routing.share for i, routing in group.routing.items()}
    limit = max((float(s.max()) for s in shares.values() if s.size), default=1.0)
    arms = {r.arm.index: r.arm for r in group.rows}
    heatmaps = [
        heatmap(
            share,
            title=f"{arms[i].name}: routing in {group.title.lower()}",
            limit=limit,
            caption=f"% of tokens sent to each expert, {group.routing[i].outputs} outputs",
        )
        for i, share in sorted(shares.items())
    ]
    difference = None
    if pair is not None and pair[0].index in shares and pair[1].index in shares:
        a, b = pair
        if shares[a.index].shape == shares[b.index].shape:
            delta = shares[b.index] - shares[a.index]
            difference = heatmap(
                delta,
                title=f"{b.name} minus {a.name}: routing in {group.title.lower()}",
                diverging=True,
                caption=f"percentage points; blue: more tokens in {b.name}, orange: more in {a.name}",
            )
    return GroupCharts(
        depth_curve=interval_chart(
            curve,
            title=f"Depth curve, {group.title.lower()}: preference vs experts per token",
            x_label=ACTIVE_LABEL,
            y_label=SCORE_LABEL,
            connect=True,
        ),
        speed=interval_chart(
            speed,
            title=f"Quality vs speed, {group.title.lower()}",
            x_label=SPEED_LABEL,
            y_label=SCORE_LABEL,
            connect=False,
            x_decimals=0,
        ),
        heatmaps=heatmaps,
        difference=difference,
    )
