"""The report's "Accuracy vs cost" plots: one numbered point per variant, each number placed beside its point where it
covers no other number or point and stays inside the plot (a greedy repel, as ggrepel does), and a legend and the
hover text that give each number's full label."""

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


def place_keys(points: list[tuple[float, float]], keys: list[str], area: tuple) -> list[tuple[float, float]]:
    """Pixel offsets (dx, dy) of each key from its point (pixels, y down) so that no key box overlaps another key or
    any point and every box lies inside `area` (x0, y0, x1, y1); the nearest free place, first point first."""
    boxes = [(x - 6, y - 6, x + 6, y + 6) for x, y in points]  # the markers
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
    titles = (f"{metric} vs neck parameters", f"{metric} vs GFLOPs")
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
    for col, x in ((1, "params/neck"), (2, "gflops")):
        shown = [r for r in done if r.get(x) is not None]
        xs = padded_range([r[x] for r in shown]) if shown else [0, 1]
        fig.update_xaxes(title_text=x, range=xs, row=1, col=col)
        fig.update_yaxes(range=padded_range(ys or [0, 1]), row=1, col=col)
        add_keys(fig, col, [(r[x], r["mean"], str(done.index(r) + 1)) for r in shown], xs, padded_range(ys or [0, 1]))
    fig.update_yaxes(title_text=f"{metric} (mean ± std over seeds)", row=1, col=1)
    height = MARGIN["t"] + PLOT_HEIGHT + MARGIN["b"] + LEGEND_ROW * len(done)
    return fig.update_layout(
        width=WIDTH,
        height=height,
        margin={**MARGIN, "b": MARGIN["b"] + LEGEND_ROW * len(done), "autoexpand": False},
        legend={"orientation": "v", "x": 0, "xanchor": "left", "y": -MARGIN["b"] / PLOT_HEIGHT, "yanchor": "top"},
    )


def add_keys(fig, col: int, points: list[tuple], xs: list[float], ys: list[float]) -> None:
    """Each point's key as an annotation with a short leader, placed by `place_keys` in this plot's pixels."""
    domain = fig.layout[f"xaxis{col if col > 1 else ''}"].domain
    left, right = (MARGIN["l"] + d * (WIDTH - MARGIN["l"] - MARGIN["r"]) for d in domain)
    top, bottom = MARGIN["t"], MARGIN["t"] + PLOT_HEIGHT
    pixels = [
        (left + (x - xs[0]) / (xs[1] - xs[0]) * (right - left), bottom - (y - ys[0]) / (ys[1] - ys[0]) * PLOT_HEIGHT)
        for x, y, _ in points
    ]
    offsets = place_keys(pixels, [k for _, _, k in points], (left, top, right, bottom))
    for (x, y, key), (dx, dy) in zip(points, offsets):
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
