"""Small inline SVG charts for the dashboard (no JavaScript, no CDN): a line chart with axes."""
from __future__ import annotations

from html import escape

from markupsafe import Markup

COLORS = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def percent(v: float) -> str:
    return f"{v:.0%}"


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], *, title: str, x_label: str = "",
               y_range: tuple[float, float] | None = None, x_ticks: list[tuple[float, str]] | None = None,
               y_format=_fmt, width: int = 640, height: int = 220) -> Markup:
    """``series``: (name, [(x, y), ...]); points with y None are skipped. An accessible <svg>."""
    points = [(x, y) for _, pts in series for x, y in pts if y is not None]
    if not points:
        return Markup("")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, right, top, bottom = 52, 28, 12, 34
    w, h = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * w

    def sy(y):
        return top + (1 - (y - y0) / (y1 - y0)) * h

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for i in range(5):  # horizontal grid and y labels
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<line class="grid" x1="{left}" x2="{left + w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                   f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">'
                   f'{escape(y_format(y))}</text>')
    if x_ticks is None:
        step = max(1, round((x1 - x0) / 8))
        x_ticks = [(x, f"{x:g}") for x in range(int(x0), int(x1) + 1, step)]
    for x, label in x_ticks:
        out.append(f'<text class="tick" x="{sx(x):.1f}" y="{top + h + 16}" text-anchor="middle">'
                   f'{escape(label)}</text>')
    if x_label:
        out.append(f'<text class="tick" x="{left + w / 2:.1f}" y="{height - 2}" '
                   f'text-anchor="middle">{escape(x_label)}</text>')
    for k, (name, pts) in enumerate(series):
        pts = [(x, y) for x, y in pts if y is not None]
        color = COLORS[k % len(COLORS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for j, (x, y) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                       f'<title>{escape(name)}: {escape(y_format(y))} at {x:g}</title></circle>')
    out.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{COLORS[k % len(COLORS)]}"></i>'
                     f'{escape(name)}</span>' for k, (name, _) in enumerate(series))
    return Markup(f'<figure class="chart">{"".join(out)}<figcaption>{legend}</figcaption></figure>')


def records_chart(days: list[dict]) -> Markup:
    """Bins per day: confirmed by photo, recounted by a person (and found right), and
    discrepancies still open (``binventory.inventory.views.records_by_day``)."""
    if not days:
        return Markup("")
    keys = (("confirmed by photo", "confirmed_by_photo"), ("recounted by a person", "recounted"),
            ("recount: record right", "recount_right"), ("open discrepancies", "open_discrepancies"))
    series = [(name, [(i, d[key]) for i, d in enumerate(days)]) for name, key in keys]
    step = max(1, len(days) // 6)
    return line_chart(series, title="Bins per day", y_format=lambda v: f"{v:,.0f}",
                      x_ticks=[(i, days[i]["day"][5:]) for i in range(0, len(days), step)])
