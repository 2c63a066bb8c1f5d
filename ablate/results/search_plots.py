"""The report's pictures of the search: each variant's mean over its seeds as trials came in (in place of Optuna's
optimization history, whose "best value" is one trial's), Optuna's parameter importances (fANOVA, Hutter et al.
2014) with why they may differ from the main effects, and Optuna's parallel coordinates."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from ablate.study.variants import study_objective, study_rows

IMPORTANCES_WHY = (
    "Optuna's importances (fANOVA) rank the settings by how much of the spread of single trials' values each "
    "explains, with no seeds, no blocking and no test, so with few trials they can order the settings unlike the "
    "main effects, which test each setting over every seed: read the main effects for what a setting does."
)


def mean_history(study: optuna.Study) -> list[dict]:
    """One point per complete trial, in trial order: its number, its variant, that variant's mean over the seeds
    run up to it, and the best variant's mean then (ablate.study.variants.study_rows on the trials so far, so the
    last best is the comparison table's best mean; a mean moves as seeds are added, so the best can fall)."""
    metric, direction = study_objective(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    out = []
    for i, t in enumerate(trials):
        if t.state != TrialState.COMPLETE or "variant" not in t.user_attrs:
            continue
        rows = study_rows(trials[: i + 1], None, metric, direction)
        row = next(r for r in rows if r["variant"] == t.user_attrs["variant"])
        if row["mean"] is not None:
            out.append({"trial": t.number, "variant": row["variant"], "mean": row["mean"], "n": row["n"]})
            out[-1]["best"] = rows[0]["mean"]  # best_first: a row with a mean comes first
    return out


def history_figure(study: optuna.Study, labels: dict[str, str]):
    """`mean_history` as markers (a variant's mean so far) and a step line (the best variant's mean so far), or a
    note (str) when no trial is complete."""
    import plotly.graph_objects as go

    points, (metric, _) = mean_history(study), study_objective(study)
    if not points:
        return "no complete trial yet"
    x = [p["trial"] for p in points]
    fig = go.Figure()
    fig.add_scatter(
        x=x,
        y=[p["mean"] for p in points],
        mode="markers",
        name="the trial's variant: mean over its seeds so far",
        text=[f"{labels.get(p['variant'], p['variant'])} ({p['n']} seeds)" for p in points],
        hovertemplate="trial %{x}: %{text}<br>mean %{y:.4f}<extra></extra>",
    )
    fig.add_scatter(x=x, y=[p["best"] for p in points], mode="lines", line_shape="hv", name="best variant's mean")
    fig.update_xaxes(title_text="trial (in the order they were created)")
    fig.update_yaxes(title_text=f"{metric}, mean over seeds")
    return fig.update_layout(height=380, legend={"orientation": "h", "y": -0.25})


def varied_params(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """The parameters that take more than one value across `trials`."""
    keys = dict.fromkeys(k for t in trials for k in t.params)
    return [k for k in keys if len({repr(t.params.get(k)) for t in trials}) > 1]


def importances_figure(study: optuna.Study):
    """Optuna's parameter importances, or a note (str) saying why Optuna cannot rank the settings."""
    from optuna.visualization import plot_param_importances

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = varied_params(done)
    with warnings.catch_warnings(record=True) as caught:  # Optuna warns when it cannot tell settings apart
        warnings.simplefilter("always")
        shares = list(optuna.importance.get_param_importances(study).values()) if len(varied) > 1 else []
    flat = len(shares) > 1 and max(shares) - min(shares) < 1e-9  # Optuna's evaluator found nothing to split on
    if len(varied) > 1 and not caught and not flat:
        fig = plot_param_importances(study).update_layout(width=560, height=320, title=None)
        return fig.update_xaxes(title_text="share of the spread of trials' values").update_yaxes(title_text=None)
    why = "; ".join(str(w.message) for w in caught) or (
        f"its evaluator gives every setting the same share (1/{len(shares)}) on {len(done)} trials"
        if flat
        else f"{len(varied)} swept setting(s) varied, 2 needed"
    )
    return f"Optuna cannot rank the settings of this study: {why}"


def parallel_figure(study: optuna.Study):
    """Optuna's parallel coordinates (one line a trial), or a note (str) when no complete trial varies a setting."""
    from optuna.visualization import plot_parallel_coordinate

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done or not varied_params(done):
        return "no complete trial with a varied setting to draw"
    return plot_parallel_coordinate(study)
