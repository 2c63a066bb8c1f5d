"""The report's pictures of the verdicts: each row's Δ with its interval against ±margin (a forest plot), and every
seed's value per row (a strip plot, where a bimodal row shows as two clusters)."""

from __future__ import annotations

from ablate.results.formats import MARKS

COLORS = {"better": "#1a7f37", "worse": "#cf222e", "equivalent": "#0969da", "undecided": "#6e7781"}


def forest_figure(rows: list[dict], labels: dict[str, str], alpha: float = 0.05, margin: float | None = None):
    """Δ (points) of every compared row with its (1 − 2α) t interval, coloured by verdict, against 0 and ±margin;
    a note (str) when no row has an interval."""
    import plotly.graph_objects as go

    shown = [r for r in rows if not r.get("baseline") and r.get("ci_low") is not None]
    if not shown:
        return "no row has an interval yet: a comparison needs 2 seeds on each side"
    fig = go.Figure()
    if margin:
        fig.add_vrect(
            x0=-margin,
            x1=margin,
            fillcolor="#0969da",
            opacity=0.08,
            line_width=0,
            annotation_text=f"±{margin:g} (equivalent inside)",
            annotation_position="top left",
        )
    fig.add_vline(x=0, line_color="#444", line_width=1)
    for verdict, color in COLORS.items():
        group = [r for r in shown if r["verdict"] == verdict]
        if group:
            fig.add_scatter(
                x=[r["delta"] for r in group],
                y=[labels[r["variant"]] for r in group],
                mode="markers",
                name=MARKS[verdict],
                marker={"color": color, "size": 9},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "color": color,
                    "array": [r["ci_high"] - r["delta"] for r in group],
                    "arrayminus": [r["delta"] - r["ci_low"] for r in group],
                },
                customdata=[[r["test"], r["p_adjusted"], r["n"]] for r in group],
                hovertemplate="Δ %{x:+.2f} points<br>%{customdata[0]} t, Holm p %{customdata[1]:.3g}, "
                "n %{customdata[2]}<extra></extra>",
            )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=f"Δ vs the baseline (points), {100 * (1 - 2 * alpha):.3g} % CI")
    return fig.update_layout(height=160 + 34 * len(shown), legend={"orientation": "h", "y": -0.25})


def strip_figure(rows: list[dict], labels: dict[str, str], metric: str = "val/mIoU"):
    """Every seed's value of every row (one marker a seed, the mean as a bar), best row first."""
    import plotly.graph_objects as go

    shown = [r for r in rows if r["seeds"]]
    fig = go.Figure()
    for r in shown:
        label = labels[r["variant"]] + (" (baseline)" if r.get("baseline") else "")
        color = COLORS.get(r.get("verdict"), "#000")
        fig.add_scatter(
            x=list(r["seeds"].values()),
            y=[label] * len(r["seeds"]),
            mode="markers",
            showlegend=False,
            marker={"color": color, "size": 8, "opacity": 0.7},
            text=[f"seed {s}" for s in r["seeds"]],
            hovertemplate="%{text}: %{x:.4f}<extra></extra>",
        )
        fig.add_scatter(
            x=[r["mean"]],
            y=[label],
            mode="markers",
            showlegend=False,
            hoverinfo="skip",
            marker={"symbol": "line-ns-open", "size": 18, "color": color, "line": {"width": 2}},
        )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text=f"{metric}, one marker a seed (bar: the mean)")
    return fig.update_layout(height=140 + 34 * len(shown))
