"""One self-contained HTML report of a study (plotly.js inline, no network): table, plots, receptive fields,
predictions of the best variant beside the baseline's."""

from __future__ import annotations

import base64
import html
import statistics

import optuna

from ablate.results.conclusion import conclusion
from ablate.results.cost_plot import cost_figure
from ablate.results.formats import render
from ablate.results.report_tables import boxed, effects_table, note, receptive_field_section
from ablate.results.search_plots import IMPORTANCES_WHY, history_figure, importances_figure, parallel_figure
from ablate.results.verdict_plots import forest_figure, strip_figure
from ablate.study.variants import short_labels

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}p.note{color:#8a4b00}"
    "th{text-align:center;vertical-align:bottom;min-width:4em;max-width:12em}th[title]{cursor:help}"
    "div.scroll{overflow-x:auto;max-width:100%}div.scroll table{margin:0.5em 0}"
    "div.beside{display:flex;flex-wrap:wrap;gap:1em 2em;align-items:flex-start}div.beside>*{min-width:0;max-width:100%}"
    "div.effects{flex:1 1 auto}div.importances{flex:0 1 560px}p.why{font-size:13px}"
    "figure{display:inline-block;margin:0 2em 1em 0}img{image-rendering:pixelated;max-width:100%}"
    "figure.panel{margin:0;font-size:14px}div.shot{display:inline-block}div.shot img{display:block}"
    "div.columns{display:grid;grid-template-columns:repeat(3,1fr);text-align:center;font-weight:bold}"
    "img.erf{width:128px;height:128px}figure.erf{width:140px;font-size:11px;margin:0 8px 8px 0}"
)


def class_ious(runs: list[dict]) -> tuple[dict[str, float], str]:
    """Per-class IoU of a variant at the best epoch, else (older runs) the last epoch: each class averaged over the
    runs that have it (a class absent from a run's predictions and targets has no IoU there)."""
    for prefix, when in (("val/IoU_best/", "best epoch"), ("val/IoU/", "last epoch")):
        per_run = [{k[len(prefix) :]: v for k, v in r["summary"].items() if k.startswith(prefix)} for r in runs]
        classes = list(dict.fromkeys(c for p in per_run for c in p))  # first seen first
        if classes:
            return {c: statistics.fmean(p[c] for p in per_run if c in p) for c in classes}, when
    return {}, ""


def iou_heatmap(rows: list[dict], runs: dict[str, list[dict]], labels: dict[str, str]):
    """Per-class IoU (mean over seeds) of each variant as a heat map, or a note when no run has it."""
    import plotly.graph_objects as go

    per_variant = {r["variant"]: class_ious(runs[r["variant"]]) for r in rows}
    shown = [r["variant"] for r in rows if per_variant[r["variant"]][0]]
    if not shown:
        return "no run folder of this study has per-class IoU (summary.json val/IoU_best/<class>)"
    classes = list(dict.fromkeys(c for v in shown for c in per_variant[v][0]))  # one a variant lacks: a gap
    z = [[per_variant[v][0].get(c) for c in classes] for v in shown]
    when = sorted({per_variant[v][1] for v in shown})
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=classes,
            y=[labels[v] for v in shown],
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            text=[[f"{x:.2f}" if x is not None else "" for x in zs] for zs in z],
            texttemplate="%{text}",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return fig.update_layout(
        title=f"IoU per class at the {' / '.join(when)}, mean over seeds", height=180 + 40 * len(shown)
    )


def figure_div(div_id: str, fig) -> str:
    """A plot as a div `plot-<id>` (plotly.js is in the page's head), or a note in its place."""
    if isinstance(fig, str):
        return note(fig)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{div_id}", config={"displaylogo": False})


def plot_sections(plots: list[tuple[str, str, object]]) -> list[str]:
    """A heading and a div `plot-<id>` (or a note) per plot."""
    return [
        part for div_id, title, fig in plots for part in (f"<h2>{html.escape(title)}</h2>", figure_div(div_id, fig))
    ]


def effects_beside_importances(study: optuna.Study, table) -> str:
    """The main effects (seeds as blocks, each setting tested) beside Optuna's importances (single trials' values,
    untested), with the sentence on why they can differ; the importances only with that sentence."""
    importances = figure_div("importances", importances_figure(study))
    why = f'<p class="why">{html.escape(IMPORTANCES_WHY)}</p>'
    effects = effects_table(table.effects, table.metric, table.verdicts["alpha"])
    return (
        f'<div class="beside"><div class="effects">{effects}'
        f'</div><div class="importances"><h3>Optuna\'s parameter importances</h3>{importances}{why}</div></div>'
    )


def predictions(runs: list[dict], role: str, label: str, metric: str = "val/mIoU") -> str:
    """The lowest seed's predictions.png of a variant (image | true | predicted), inline under its role, the
    variant's name and the three columns' names, or a note."""
    for run in runs:
        png = run["folder"] / "predictions.png"
        if png.is_file():
            best = run["summary"].get(f"{metric}_best")
            caption = f"{role}: {label} ({run['name']}" + ("" if best is None else f", {metric}_best {best:.4f}") + ")"
            return panel(png.read_bytes(), caption, role)
    return note(f"{role} ({label}): no run folder has predictions.png")


def panel(png: bytes, caption: str, role: str) -> str:
    """A predictions.png as wide as it is drawn (its caption wraps to it, so panels fit side by side), under the
    names of its three columns."""
    width = int.from_bytes(png[16:20], "big")  # the PNG header's IHDR width
    data = base64.b64encode(png).decode()
    columns = "".join(f"<span>{c}</span>" for c in ("image", "ground truth", "prediction"))
    return (
        f'<figure class="panel" style="width:{width}px"><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="shot"><div class="columns">{columns}</div>'
        f'<img alt="{html.escape(role)} predictions" src="data:image/png;base64,{data}"></div></figure>'
    )


def compared_variants(rows: list[dict], base: dict) -> list[tuple[dict, str]]:
    """(row, role) of the variants whose predictions are shown side by side: the best and the baseline, or, when
    the baseline is the best, the worst beside it (nothing beside a single variant)."""
    done = [r for r in rows if r["mean"] is not None]
    if base is not done[0]:
        return [(done[0], "best"), (base, "baseline")]
    return [(done[0], "best and baseline")] + ([(done[-1], "worst")] if len(done) > 1 else [])


def prediction_section(table, labels: dict[str, str]) -> str:
    """The compared variants' predictions side by side, and a line when the baseline is the best."""
    shown = compared_variants(table.rows, table.base)
    panels = "".join(
        predictions(table.runs.get(r["variant"], []), role, labels[r["variant"]], table.metric) for r, role in shown
    )
    why = (
        ""
        if shown[0][1] == "best"
        else note(
            "the baseline is the best variant: beside it the worst, for contrast; --baseline KEY=VALUE picks another"
        )
    )
    return f'<div class="beside">{panels}</div>{why}'


def figures(study: optuna.Study, table, labels: dict[str, str]) -> list[tuple[str, str, object]]:
    """(id, heading, figure or note) of the report's plots, in their order."""
    rows, v = table.rows, table.verdicts
    return [
        ("forest", "Δ vs the baseline, with its interval", forest_figure(rows, labels, v["alpha"], v["margin"])),
        ("seeds", "Every seed", strip_figure(rows, labels, table.metric)),
        ("history", "Search history: each variant's mean over its seeds", history_figure(study, labels)),
        ("parallel", "Parallel coordinates (Optuna's: one line a trial)", parallel_figure(study)),
        ("cost", "Accuracy vs cost", cost_figure(rows, labels, table.metric)),
        ("iou", "Per-class IoU", iou_heatmap(rows, table.runs, labels)),
    ]


def build(study: optuna.Study, table) -> str:
    """The whole report of `table` (ablate.results.tables.study_table of `study`) as one HTML document; plotly.js
    is embedded once, inline, in its head."""
    from plotly.offline import get_plotlyjs

    labels = short_labels(table.rows)
    comparison = render(table.rows, "html", table.metric, table.verdicts["alpha"], table.note, table.direction)
    words = conclusion(table, table.effects)
    parts = [
        f"<h1>Study {html.escape(study.study_name)}</h1>",
        f'<div class="conclusion"><p><b>{html.escape(words[0])}</b></p>',
    ]
    parts += ["<ul>" + "".join(f"<li>{html.escape(w.removeprefix('- '))}</li>" for w in words[1:]) + "</ul></div>"]
    parts += ["<h2>Comparison table</h2>", boxed(comparison)]
    parts += ["<h2>Main effects</h2>", effects_beside_importances(study, table)]
    parts += [*plot_sections(figures(study, table, labels)), "<h2>Receptive fields</h2>"]
    parts += [receptive_field_section(table.rows, table.runs, labels), "<h2>Example predictions</h2>"]
    parts.append(prediction_section(table, labels))
    head = f"<title>ablate report: {html.escape(study.study_name)}</title><style>{STYLE}</style>"
    plotly_js = f"<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script><script>{get_plotlyjs()}</script>"
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">{head}{plotly_js}</head><body>\n{body}\n</body></html>\n'
    )
