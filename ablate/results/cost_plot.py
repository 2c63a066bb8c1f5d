"""The report's "Accuracy vs cost" plots: one numbered point per variant on cost axes that start at zero (a 1 %
difference in cost looks like one), each number placed beside its point where it covers no other number, point or
error bar and stays inside the plot (a greedy repel, as ggrepel does), and a legend and the hover text that give
each number's full label."""

from __future__ import annotations

import math

WIDTH, PLOT_HEIGHT, LEGEND_ROW = 1200, 420, 30  # px: the figure's width, the plots' height, one legend entry
MARGIN = {"l": 80, "r": 30, "t": 60, "b": 60}  # fixed (autoexpand off): the pixel layout below is the drawn one
KEY_FONT, CHAR_PX, KEY_PX = 13, 9, 18  # the keys' font size, a digit's width and a key box's height, with a margin
OFFSETS = [
    (r * math.cos(a), r * math.sin(a)) for r in (16, 26, 38, 52, 70) for a in [i * math.pi / 4 for i in range(8)]
]


def padded_range(values: list[float], share: float = 0.12) -> list[float]:
    """[low, high] of `values` widened by `share` of their span on each side (1 when they are all equal)."""
    low, high = min(values), max(values)
    pad = (high - low) * share or abs(high) * share or 1.0
    return [low - pad, high + pad]


def from_zero(values: list[float], share: float = 0.12) -> list[float]:
    """[0, high] with `share` of the largest of `values` above it (a cost is never negative)."""
    high = max(values, default=0) * (1 + share)
    return [0, high or 1.0]


def place_keys(
    points: list[tuple[float, float]], keys: list[str], area: tuple, bars: list[tuple] = ()
) -> list[tuple[float, float]]:
    """Pixel offsets (dx, dy) of each key from its point (pixels, y down) so that no key box overlaps another key,
    any point or any error bar (`bars`: (x, y_top, y_bottom) each) and every box lies inside `area` (x0, y0, x1,
    y1); the nearest free place, first point first."""
    boxes = [(x - 6, y - 6, x + 6, y + 6) for x, y in points]  # the markers
    boxes += [(x - 5, top, x + 5, bottom) for x, top, bottom in bars]  # the bars and their caps
    out = []
    for (x, y), key in zip(points, keys):
        w, h = CHAR_PX * len(key) + 4, KEY_PX
        candidates = [(dx, dy, (x + dx - w / 2, y + dy - h / 2, x + dx + w / 2, y + dy + h / 2)) for dx, dy in OFFSETS]
        fits = [c for c in candidates if contains(area, c[2])] or candidates  # a plot too small for any: the nearest
        dx, dy, box = next((c for c in fits if not any(overlaps(c[2], b) for b in boxes)), fits[0])
        boxes.append(box)
        out.append((dx, dy))
    return out


def overlaps(a: tuple, b: tuple) -> bool:
    """True when boxes (x0, y0, x1, y1) share some area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def contains(outer: tuple, inner: tuple) -> bool:
    """True when box `inner` (x0, y0, x1, y1) lies inside box `outer`."""
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def cost_figure(rows: list[dict], labels: dict[str, str], metric: str = "val/mIoU"):
    """The metric (mean ± std over seeds) against neck parameters and against GFLOPs, one point per variant marked
    with its number in the table's order; the legend and the hover text give the number's full label."""
    from plotly.subplots import make_subplots

    done = [r for r in rows if r["mean"] is not None]
    titles = (f"{metric} vs neck parameters", f"{metric} vs GFLOPs (billions of operations for one image)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    ys = [v for r in done for v in (r["mean"] - (r["std"] or 0), r["mean"] + (r["std"] or 0))]
    for i, r in enumerate(done):
        key = str(i + 1)
        for col, x in ((1, "params/neck"), (2, "gflops")):
            fig.add_scatter(
                x=[r.get(x)],
                y=[r["mean"]],
                mode="markers",
                marker={"size": 10, "color": f"hsl({i * 360 / len(done):.0f},70%,42%)"},
                error_y={"type": "data", "array": [r["std"] or 0]},
                name=f"{key}  {labels[r['variant']]}",
                legendgroup=key,
                showlegend=col == 1,
                hovertemplate=f"<b>{key}</b> {labels[r['variant']]}<br>{x} %{{x:,}}<br>{metric} %{{y:.4f}}"
                f" ± {r['std'] or 0:.4f}<extra></extra>",
                row=1,
                col=col,
            )
    for col, (x, words) in enumerate((("params/neck", "neck parameters"), ("gflops", "GFLOPs")), 1):
        shown = [r for r in done if r.get(x) is not None]
        xs, y_range = from_zero([r[x] for r in shown]), padded_range(ys or [0, 1])
        fig.update_xaxes(title_text=f"{words} ({x}), from 0", range=xs, row=1, col=col)
        fig.update_yaxes(range=y_range, row=1, col=col)
        add_keys(fig, col, [(r[x], r["mean"], r["std"] or 0, str(done.index(r) + 1)) for r in shown], xs, y_range)
    fig.update_yaxes(title_text=f"{metric} (mean ± std over seeds)", row=1, col=1)
    height = MARGIN["t"] + PLOT_HEIGHT + MARGIN["b"] + LEGEND_ROW * len(done)
    return fig.update_layout(
        width=WIDTH,
        height=height,
        margin={**MARGIN, "b": MARGIN["b"] + LEGEND_ROW * len(done), "autoexpand": False},
        legend={"orientation": "v", "x": 0, "xanchor": "left", "y": -MARGIN["b"] / PLOT_HEIGHT, "yanchor": "top"},
    )


def to_pixels(fig, col: int, xs: list[float], ys: list[float]):
    """(x, y) in plot `col`'s data -> its pixels (y down), and that plot's area (left, top, right, bottom)."""
    domain = fig.layout[f"xaxis{col if col > 1 else ''}"].domain
    left, right = (MARGIN["l"] + d * (WIDTH - MARGIN["l"] - MARGIN["r"]) for d in domain)
    top, bottom = MARGIN["t"], MARGIN["t"] + PLOT_HEIGHT
    px = lambda x, y: (  # noqa: E731
        left + (x - xs[0]) / (xs[1] - xs[0]) * (right - left),
        bottom - (y - ys[0]) / (ys[1] - ys[0]) * PLOT_HEIGHT,
    )
    return px, (left, top, right, bottom)


def add_keys(fig, col: int, points: list[tuple], xs: list[float], ys: list[float]) -> None:
    """Each point's key (points: (x, y, std, key)) as an annotation with a short leader, placed by `place_keys` in
    this plot's pixels clear of every point and error bar."""
    px, area = to_pixels(fig, col, xs, ys)
    bars = [(px(x, y)[0], px(x, y + std)[1], px(x, y - std)[1]) for x, y, std, _ in points]
    offsets = place_keys([px(x, y) for x, y, _, _ in points], [k for *_, k in points], area, bars)
    for (x, y, _, key), (dx, dy) in zip(points, offsets):
        fig.add_annotation(
            x=x,
            y=y,
            text=key,
            ax=dx,
            ay=dy,
            showarrow=True,
            arrowhead=0,
            arrowwidth=1,
            arrowcolor="#888",
            font={"size": KEY_FONT},
            xref=f"x{col if col > 1 else ''}",
            yref=f"y{col if col > 1 else ''}",
        )
