"""Charts drawn as SVG on the server: no scripts, no external assets, readable offline.

Each chart carries a <title> and <desc> for screen readers; pages also show the
numbers as a table.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from markupsafe import Markup, escape

INK, BAR, TARGET, GRID, MUTED = "#1a1a1a", "#1d4f91", "#a4000f", "#c8c8c8", "#4a4a4a"
_ids = itertools.count(1)


def _frame(title: str, description: str, width: int, height: int, body: list[str]) -> Markup:
    n = next(_ids)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="chart{n}-title chart{n}-desc">'
        f'<title id="chart{n}-title">{escape(title)}</title><desc id="chart{n}-desc">{escape(description)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _number(value: float) -> str:
    return f"{value:g}"


def bar_chart(title: str, bars: Sequence[tuple[str, float]], *, unit: str = "", width: int = 560, label_width: int = 170) -> Markup:
    """Horizontal bars, one per label, with the value written at the bar's end."""
    row, top = 26, 8
    height = top * 2 + row * max(len(bars), 1)
    scale = max([v for _, v in bars] + [1])
    span = width - label_width - 50
    body = []
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        length = span * value / scale
        body.append(f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end" fill="{INK}" font-size="13">{escape(label)}</text>')
        body.append(f'<rect x="{label_width}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" fill="{BAR}"/>')
        body.append(f'<text x="{label_width + length + 6:.1f}" y="{y + 17}" fill="{INK}" font-size="13">{_number(value)}{escape(unit)}</text>')
    description = "; ".join(f"{label}: {_number(v)}{unit}" for label, v in bars) or "no data"
    return _frame(title, description, width, height, body)


def column_chart(
    title: str,
    columns: Sequence[tuple[str, float]],
    *,
    reference: tuple[int, str] | None = None,
    width: int = 560,
    height: int = 220,
) -> Markup:
    """Vertical columns (e.g. months or wait bands); ``reference`` marks a limit
    between columns: (index of the first column past it, label)."""
    left, bottom, top = 36, 40, 16
    plot_height = height - bottom - top
    slot = (width - left - 8) / max(len(columns), 1)
    scale = max([v for _, v in columns] + [1])
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - 8}" y2="{height - bottom}" stroke="{GRID}"/>']
    for i, (label, value) in enumerate(columns):
        x = left + i * slot
        bar = plot_height * value / scale
        body.append(f'<rect x="{x + slot * 0.15:.1f}" y="{height - bottom - bar:.1f}" width="{slot * 0.7:.1f}" height="{bar:.1f}" fill="{BAR}"/>')
        body.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom - bar - 4:.1f}" text-anchor="middle" fill="{INK}" font-size="12">{_number(value)}</text>')
        body.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" fill="{MUTED}" font-size="11">{escape(label)}</text>')
    if reference is not None:
        index, label = reference
        x = left + index * slot
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - bottom + 4}" stroke="{TARGET}" stroke-width="2" stroke-dasharray="6 3"/>')
        body.append(f'<text x="{x + 4:.1f}" y="{top + 4}" fill="{TARGET}" font-size="12">{escape(label)}</text>')
    description = "; ".join(f"{label}: {_number(v)}" for label, v in columns) or "no data"
    if reference is not None:
        description += f"; {reference[1]}"
    return _frame(title, description, width, height, body)


def share_meter(title: str, share: float | None, target: float, *, width: int = 560) -> Markup:
    """A 0–100% bar for a share with the target marked."""
    height, left, right = 56, 8, 100
    span = width - left - right
    body = [f'<rect x="{left}" y="10" width="{span}" height="22" fill="none" stroke="{GRID}"/>']
    if share is not None:
        body.append(f'<rect x="{left}" y="10" width="{span * share:.1f}" height="22" fill="{BAR}"/>')
    x = left + span * target
    body.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="38" stroke="{TARGET}" stroke-width="2"/>')
    body.append(f'<text x="{x:.1f}" y="52" text-anchor="middle" fill="{TARGET}" font-size="12">target {target:.0%}</text>')
    shown = "no data yet" if share is None else f"{share:.0%}"
    body.append(f'<text x="{left + span + 6}" y="26" fill="{INK}" font-size="14" font-weight="bold">{shown}</text>')
    return _frame(title, f"{shown} against a target of {target:.0%}", width, height, body)


def share_columns(title: str, columns: Sequence[tuple[str, float | None]], target: float, *, width: int = 560, height: int = 220) -> Markup:
    """Vertical columns of shares on a 0–100% scale with the target drawn across them (its
    label in the right margin, clear of the columns); a column with no data says so rather
    than being drawn as zero. Values sit inside tall columns, above short ones."""
    left, right, bottom, top = 44, 96, 40, 16
    plot_height = height - bottom - top
    slot = (width - left - right) / max(len(columns), 1)
    base = height - bottom
    body = [f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="{GRID}"/>']
    for mark in (0.0, 0.5, 1.0):
        y = base - plot_height * mark
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}" font-size="11">{mark:.0%}</text>')
    for i, (label, share) in enumerate(columns):
        x = left + i * slot
        if share is None:
            body.append(f'<text x="{x + slot / 2:.1f}" y="{base - 6}" text-anchor="middle" fill="{MUTED}" font-size="11">no waits</text>')
        else:
            bar = plot_height * share
            inside = bar > 24
            body.append(f'<rect x="{x + slot * 0.2:.1f}" y="{base - bar:.1f}" width="{slot * 0.6:.1f}" height="{bar:.1f}" fill="{BAR}"/>')
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{base - bar + 16 if inside else base - bar - 4:.1f}" text-anchor="middle" '
                f'fill="{"#ffffff" if inside else INK}" font-size="12" font-weight="bold">{share:.0%}</text>'
            )
        body.append(f'<text x="{x + slot / 2:.1f}" y="{base + 16}" text-anchor="middle" fill="{MUTED}" font-size="11">{escape(label)}</text>')
    y = base - plot_height * target
    body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right + 4}" y2="{y:.1f}" stroke="{TARGET}" stroke-width="2" stroke-dasharray="6 3"/>')
    body.append(f'<text x="{width - right + 8}" y="{y + 4:.1f}" fill="{TARGET}" font-size="12">standard {target:.0%}</text>')
    description = "; ".join(f"{label}: {'no data' if s is None else f'{s:.0%}'}" for label, s in columns) + f"; standard {target:.0%}"
    return _frame(title, description, width, height, body)
