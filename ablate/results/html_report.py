"""One self-contained HTML report of a study (plotly.js inline, no network): table, plots, receptive fields,
predictions."""

from __future__ import annotations

import base64
import html
import statistics
import warnings

import optuna

from ablate.results.cost_plot import cost_figure
from ablate.results.formats import EFFECTS_COLUMNS, effects_caption, effects_cells, render, varied_keys
from ablate.results.verdict_plots import forest_figure, strip_figure
from ablate.study.variants import short_labels

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}p.note{color:#8a4b00}"
    "figure{display:inline-block;margin:0 2em 1em 0}img{image-rendering:pixelated;max-width:100%}"
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


def optuna_figures(study: optuna.Study) -> list[tuple[str, str, object]]:
    """(id, title, figure or note) for Optuna's history, importances and parallel coordinates."""
    from optuna.visualization import plot_optimization_history, plot_parallel_coordinate, plot_param_importances

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varied = [k for k in {k for t in done for k in t.params} if len({repr(t.params.get(k)) for t in done}) > 1]
    out = [("history", "Optimization history", plot_optimization_history(study))]
    with warnings.catch_warnings(record=True) as caught:  # Optuna warns when it cannot tell settings apart
        warnings.simplefilter("always")
        shares = list(optuna.importance.get_param_importances(study).values()) if len(varied) > 1 else []
    flat = len(shares) > 1 and max(shares) - min(shares) < 1e-9  # Optuna's evaluator found nothing to split on
    if len(varied) < 2 or caught or flat:
        why = "; ".join(str(w.message) for w in caught) or (
            f"its evaluator gives every setting the same share (1/{len(shares)}) on {len(done)} trials; "
            "see the main effects above"
            if flat
            else f"{len(varied)} swept setting(s) varied, 2 needed"
        )
        out.append(("importances", "Parameter importances", f"Optuna cannot rank the settings of this study: {why}"))
    else:
        out.append(("importances", "Parameter importances", plot_param_importances(study)))
    if done and varied:
        out.append(("parallel", "Parallel coordinates", plot_parallel_coordinate(study)))
    else:
        out.append(("parallel", "Parallel coordinates", "no complete trial with a varied setting to draw"))
    return out


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


RF_KEYS = ("rf/", "taps9/", "erf/", "feature_px", "gridding_holes")  # what ablate.callbacks.NeckAnalysis leaves


def receptive_field_section(rows: list[dict], runs: dict[str, list[dict]], labels: dict[str, str]) -> str:
    """Each variant's receptive fields as its runs' ablate.callbacks.NeckAnalysis measured them (theoretical ones
    per branch, the effective receptive field's radii; mean over its runs) and the lowest seed's ERF image."""
    numbers = {}
    for r in rows:
        keys = {k for run in runs[r["variant"]] for k in run["summary"] if k.startswith(RF_KEYS)}
        values = {k: [run["summary"][k] for run in runs[r["variant"]] if k in run["summary"]] for k in sorted(keys)}
        numbers[r["variant"]] = {k: statistics.fmean(v) for k, v in values.items()}
    keys = list(dict.fromkeys(k for n in numbers.values() for k in n))
    if not keys:
        return note("no run has receptive-field numbers (ablate.callbacks.NeckAnalysis found no ablate neck)")
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["variant", *keys])
    body = "".join(
        "<tr><td>"
        + html.escape(labels[v])
        + "</td>"
        + "".join(f"<td>{n[k]:.4g}</td>" if k in n else "<td></td>" for k in keys)
        + "</tr>"
        for v, n in numbers.items()
    )
    images = [erf_image(runs[v], labels[v]) for v in numbers]
    gallery = "".join(images) if any(images) else note("no run folder has erf.png")
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<p>Effective receptive field of each variant's final model (lowest seed; the centre pixel's gradient "
        f"on the first validation images):</p>{gallery}"
    )


def erf_image(runs: list[dict], label: str) -> str:
    """The lowest seed's erf.png as a captioned inline figure, or nothing."""
    for run in runs:
        png = run["folder"] / "erf.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            return (
                f'<figure class="erf"><img class="erf" alt="ERF" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(label)}</figcaption></figure>"
            )
    return ""


def predictions(runs: list[dict], role: str, label: str, metric: str = "val/mIoU") -> str:
    """The lowest seed's predictions.png of a variant (image | true | predicted), inline, or a note."""
    for run in runs:
        png = run["folder"] / "predictions.png"
        if png.is_file():
            data = base64.b64encode(png.read_bytes()).decode()
            best = run["summary"].get(f"{metric}_best")
            caption = f"{role}: {label} ({run['name']}" + ("" if best is None else f", {metric}_best {best:.4f}") + ")"
            return (
                f"<figure><figcaption>{html.escape(caption)}</figcaption>"
                f'<img alt="{html.escape(role)} predictions" src="data:image/png;base64,{data}"></figure>'
            )
    return note(f"{role} ({label}): no run folder has predictions.png")


def effects_table(rows: list[dict], metric: str = "val/mIoU", alpha: float = 0.05) -> str:
    """Main effects and interactions of the swept settings (ablate.stats.factorial.factorial_effects), or a note."""
    from ablate.stats.factorial import factorial_effects

    effects = factorial_effects(rows, alpha=alpha) if len(varied_keys(rows)) > 1 else []
    if not effects:
        return note("one swept setting, or runs that cannot estimate a model: the comparison table is its effect")
    head = "".join(f"<th>{html.escape(c if c != 'term' else f'term ({metric})')}</th>" for c in EFFECTS_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in effects_cells(e)) + "</tr>" for e in effects)
    caption = html.escape(effects_caption(effects, alpha))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{caption}</p>"


def note(text: str) -> str:
    """A visible note in place of a plot or image that cannot be made."""
    return f'<p class="note">{html.escape(text)}</p>'


def plot_sections(plots: list[tuple[str, str, object]]) -> list[str]:
    """A heading and a div `plot-<id>` (or a note) per plot; the first figure carries plotly.js, inline."""
    parts, first = [], True
    for div_id, title, fig in plots:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(fig, str):
            parts.append(note(fig))
            continue
        parts.append(
            fig.to_html(full_html=False, include_plotlyjs=first, div_id=f"plot-{div_id}", config={"displaylogo": False})
        )
        first = False
    return parts


def build(study: optuna.Study, table) -> str:
    """The whole report of `table` (ablate.results.tables.study_table of `study`) as one HTML document; plotly.js
    is embedded once, inline."""
    rows, base, metric, v = table.rows, table.base, table.metric, table.verdicts
    runs, labels = table.runs, short_labels(rows)
    parts = [
        f"<h1>Study {html.escape(study.study_name)}</h1>",
        "<h2>Comparison table</h2>",
        render(rows, "html", metric, v["alpha"], table.note, table.direction),
        "<h2>Main effects</h2>",
        effects_table(rows, metric, v["alpha"]),
    ]
    forest = forest_figure(rows, labels, v["alpha"], v["margin"])
    verdict_plots = [
        ("forest", "Δ vs the baseline, with its interval", forest),
        ("seeds", "Every seed", strip_figure(rows, labels, metric)),
    ]
    others = [
        ("cost", "Accuracy vs cost", cost_figure(rows, labels, metric)),
        ("iou", "Per-class IoU", iou_heatmap(rows, runs, labels)),
    ]
    parts += plot_sections(verdict_plots + optuna_figures(study) + others)
    parts += ["<h2>Receptive fields</h2>", receptive_field_section(rows, runs, labels), "<h2>Example predictions</h2>"]
    best = next(r for r in rows if r["mean"] is not None)
    shown = [(best, "best")] + ([(base, "baseline")] if base is not best else [])
    parts += [predictions(runs[r["variant"]], role, labels[r["variant"]], metric) for r, role in shown]
    if base is best:
        parts.append(note("the baseline is the best variant; --baseline KEY=VALUE picks another to compare"))
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ablate report: '
        f"{html.escape(study.study_name)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
