"""Main effects and interactions of a factorial study: OLS on every seed's value, categorical factors with pairwise
interactions where the design has the degrees of freedom, type-II ANOVA (statsmodels)."""

from __future__ import annotations

import itertools
import re
import warnings

import numpy as np


def factorial_effects(rows: list[dict], metric_scale: float = 1.0) -> list[dict]:
    """Main effects and pairwise interactions of a factorial study: OLS, type-II ANOVA, one term a dict.

    Every per-seed value is one observation; each setting that varies between rows is a categorical
    factor. Pairwise interactions are in the model when the design estimates them with residual
    degrees of freedom left, else main effects only. Per term: term ("a" or "a × b"), factors, df,
    F, p_value, levels ([{value, mean, n}]: means are the model's marginal means, averaged evenly
    over the other factors, so unequal seed counts do not bias them) and effect (points: the largest
    difference between two levels, or for an interaction the largest difference of differences).
    metric_scale is the metric's full scale (1.0 for a fraction such as mIoU; a point is 1/100 of it).
    [] when the rows are not a design the model can estimate.
    """
    data, names = _observations(rows)
    fit = _fit(data, len(names)) if names else None
    if fit is None:
        return []
    from statsmodels.stats.anova import anova_lm

    anova = anova_lm(fit, typ=2)
    grid = _grid(data, len(names))
    grid["y"] = np.asarray(fit.predict(grid))
    return [
        _term(term, anova.loc[term], grid, data, names, 100 / metric_scale)
        for term in anova.index
        if term != "Residual"
    ]


def _observations(rows: list[dict]) -> tuple:
    """A frame of one row per seed value (factors renamed x0, x1, … for the formula) and the factor names."""
    import pandas as pd

    from ablate.results.formats import settings

    parsed = [(settings(r["variant"]), list(r["seeds"].values())) for r in rows if r["seeds"]]
    keys = sorted({k for settings, _ in parsed for k in settings})
    names = [k for k in keys if len({settings.get(k, "") for settings, _ in parsed}) > 1]
    records = [
        {**{f"x{i}": settings.get(k, "") for i, k in enumerate(names)}, "y": float(v)}
        for settings, values in parsed
        for v in values
    ]
    return pd.DataFrame(records), names


def _fit(data, k: int):
    """OLS with pairwise interactions when estimable with residual df left, else main effects; else None."""
    import statsmodels.formula.api as smf

    main = [f"C(x{i})" for i in range(k)]
    for terms in (main + [f"{a}:{b}" for a, b in itertools.combinations(main, 2)], main):
        with warnings.catch_warnings():  # a rank-deficient try warns; the rank check below decides, silently
            warnings.simplefilter("ignore")
            fit = smf.ols("y ~ " + " + ".join(terms), data).fit()
        exog = fit.model.exog
        if np.linalg.matrix_rank(exog) == exog.shape[1] < exog.shape[0]:
            return fit
    return None


def _grid(data, k: int):
    """Every combination of the factors' levels, to average the model's predictions over."""
    import pandas as pd

    columns = [f"x{i}" for i in range(k)]
    return pd.DataFrame(list(itertools.product(*(sorted(data[c].unique()) for c in columns))), columns=columns)


def _term(term: str, line, grid, data, names: list[str], points: float) -> dict:
    columns = re.findall(r"x\d+", term)
    means = grid.groupby(columns)["y"].mean()
    counts = data.groupby(columns).size()
    levels = [
        {"value": " / ".join(np.atleast_1d(key)), "mean": float(m), "n": int(counts.get(key, 0))}
        for key, m in means.items()
    ]
    cells = means.to_numpy() if len(columns) == 1 else means.unstack().to_numpy()
    if len(columns) == 1:
        effect = np.ptp(cells)
    else:  # the largest difference of differences over two levels of each factor
        diffs = cells[:, :, None] - cells[:, None, :]
        effect = np.nanmax(np.abs(diffs[:, None] - diffs[None, :]))
    factors = [names[int(c[1:])] for c in columns]
    return {
        "term": " × ".join(factors),
        "factors": factors,
        "df": int(line["df"]),
        "F": _finite(line["F"]),
        "p_value": _finite(line["PR(>F)"]),
        "levels": levels,
        "effect": float(effect) * points,
    }


def _finite(value) -> float | None:
    return float(value) if np.isfinite(value) else None
