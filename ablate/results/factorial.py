"""Main effects and interactions of a factorial study: OLS with categorical factors, type-II F, p-values by
permutation of reduced-model residuals (Freedman & Lane 1983) within seeds, Holm (1979) over the terms."""

from __future__ import annotations

import functools
import itertools
import math
import re
import warnings

import numpy as np

MIN_RESIDUAL_DF = 4  # pairwise interactions only when the model with them leaves this many residual df
PERMUTATIONS = 9999  # random permutations (within seeds) when there are more distinct ones than EXACT_LIMIT
EXACT_LIMIT = 50_000  # every permutation when there are at most this many: 8 runs of one seed have 8! = 40320
BLOCK = "C(seed)"  # the seed as a block term: seeds are shared across variants, as the verdicts pair them


def factorial_effects(
    rows: list[dict], metric_scale: float = 1.0, *, alpha: float = 0.05, permutations: int = PERMUTATIONS, seed=0
) -> list[dict]:
    """Main effects and pairwise interactions of a factorial study, one term a dict; [] when nothing to fit.

    Every per-seed value is one observation; each setting that varies between rows is a categorical factor,
    and the seed a block when several seeds repeat across variants. Pairwise interactions are in the model when
    it leaves at least MIN_RESIDUAL_DF residual df (else listed with test "not testable: …" and no p).
    Per term: term ("a" or "a × b"), factors, df, F (type-II, against the full model's residual), p_value
    (Freedman–Lane permutation p: the term's F on the reduced model's fit plus its residuals permuted within
    seeds; every permutation when there are ≤ EXACT_LIMIT, else `permutations` drawn with RNG `seed`),
    p_adjusted (Holm over the tested terms), significant (p_adjusted < alpha), p_floor (the least p the
    permutations can give), p_anova (the normal-theory F p, for comparison), test (how p was found), levels
    ([{value, mean, n}]: the model's marginal means, averaged evenly over the other factors) and effect (points:
    the largest difference between two levels; for an interaction the largest difference of differences).
    metric_scale is the metric's full scale (1.0 for a fraction such as mIoU; a point is 1/100 of it).
    """
    data, names = _observations(rows)
    fit, untested = _fit(data, len(names)) if names else (None, [])
    if fit is None:
        return []
    from ablate.results.stats import holm

    blocked = BLOCK in fit.model.data.model_spec.term_names  # seeds shared: permute only within a seed
    orders, test = _permutations(tuple(data["seed"] if blocked else [""] * len(data)), permutations, seed)
    grid = _grid(data, len(names))
    grid["y"] = np.asarray(fit.predict(grid))
    names_in_fit = [t for t in fit.model.data.model_spec.term_names if t not in ("Intercept", BLOCK)]
    terms = [
        {**_term(t, grid, data, names, 100 / metric_scale), **_freedman_lane(fit, t, orders), "test": test}
        for t in names_in_fit
    ]
    for term, adjusted in zip(terms, holm([t["p_value"] for t in terms])):
        term.update(p_adjusted=adjusted, significant=adjusted < alpha)
    return terms + [_not_testable(pair, names, reason) for pair, reason in untested]


def _observations(rows: list[dict]) -> tuple:
    """A frame of one row per seed value (factors renamed x0, x1, … for the formula; its seed) and factor names."""
    import pandas as pd

    from ablate.results.formats import settings

    parsed = [(settings(r["variant"]), r["seeds"]) for r in rows if r["seeds"]]
    keys = sorted({k for settings, _ in parsed for k in settings})
    names = [k for k in keys if len({settings.get(k, "") for settings, _ in parsed}) > 1]
    records = [
        {**{f"x{i}": settings.get(k, "") for i, k in enumerate(names)}, "seed": str(s), "y": float(v)}
        for settings, values in parsed
        for s, v in values.items()
    ]
    return pd.DataFrame(records), names


def _fit(data, k: int, block: list[str] | None = None) -> tuple:
    """(OLS fit, interactions left out as [((i, j), reason)]): pairwise interactions when estimable with
    MIN_RESIDUAL_DF residual df left, else main effects; without the seed block when a seed of its own makes
    the model inestimable; (None, []) when not even main effects are estimable."""
    main = [f"C(x{i})" for i in range(k)]
    pairs = list(itertools.combinations(range(k), 2))
    if block is None:
        block = [BLOCK] if data["seed"].nunique() > 1 and data["seed"].duplicated().any() else []
    full = _ols(data, main + [f"C(x{i}):C(x{j})" for i, j in pairs] + block)
    if full is not None and full.df_resid >= MIN_RESIDUAL_DF:
        return full, []
    reason = (
        f"not testable: leaves {full.df_resid:.0f} residual df (needs {MIN_RESIDUAL_DF})"
        if full is not None
        else "not testable: not estimable from these runs"
    )
    fit = _ols(data, main + block)
    if fit is None and block:
        return _fit(data, k, [])
    return fit, ([(pair, reason) for pair in pairs] if fit is not None else [])


def _ols(data, terms: list[str]):
    """The OLS fit of y on `terms`, or None when the design matrix is rank-deficient or leaves no residual df."""
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():  # a rank-deficient try warns; the rank check below decides, silently
        warnings.simplefilter("ignore")
        fit = smf.ols("y ~ " + " + ".join(terms), data).fit()
    exog = fit.model.exog
    return fit if np.linalg.matrix_rank(exog) == exog.shape[1] < exog.shape[0] else None


@functools.lru_cache(maxsize=8)
def _permutations(blocks: tuple, n: int, seed) -> tuple[np.ndarray, str]:
    """(B, N) row orders that permute observations only among those of the same seed, the identity first, and the
    test's label: all of them when there are ≤ EXACT_LIMIT (exact), else the identity and `n` drawn at random."""
    groups = [np.flatnonzero(np.asarray(blocks) == b) for b in dict.fromkeys(blocks)]
    count = math.prod(math.factorial(len(g)) for g in groups)
    within = " within seeds" if len(groups) > 1 else ""
    if count <= EXACT_LIMIT:
        orders = np.empty((count, len(blocks)), dtype=int)
        per_group = [np.array(list(itertools.permutations(g))) for g in groups]  # each (k!, k), identity first
        picks = np.meshgrid(*(np.arange(len(p)) for p in per_group), indexing="ij")  # every combination of them
        for g, p, pick in zip(groups, per_group, picks):
            orders[:, g] = p[pick.ravel()]
        return orders, f"permutation{within}, exact ({count})"
    rng = np.random.default_rng(seed)
    orders = np.tile(np.arange(len(blocks)), (n + 1, 1))
    for g in groups:
        orders[1:, g] = rng.permuted(np.tile(g, (n, 1)), axis=1)
    return orders, f"permutation{within} ({n} random)"


def _freedman_lane(fit, term: str, orders: np.ndarray) -> dict:
    """`term`'s type-II test: df, F (against the full model's residual), p_anova (its normal-theory p), p_value
    (share of orders with F* ≥ F, F* the term's F on y* = the fit of the model without the term (and, for a main
    effect, its interactions) plus that model's residuals in the order) and p_floor (_least_p)."""
    from scipy import stats

    exog, y = fit.model.exog, fit.model.endog
    slices = fit.model.data.model_spec.term_name_slices
    factors = set(re.findall(r"x\d+", term))
    tested = np.zeros(exog.shape[1], dtype=bool)
    tested[slices[term]] = True
    dropped = np.zeros(exog.shape[1], dtype=bool)  # type II: the term and every term that contains its factors
    for name, s in slices.items():
        dropped[s] = factors <= set(re.findall(r"x\d+", name))
    order = np.concatenate([np.flatnonzero(~dropped), np.flatnonzero(tested), np.flatnonzero(dropped & ~tested)])
    basis = np.linalg.qr(exog[:, order])[0]  # nested: the reduced model's columns, then the term's, then the rest
    k, t = int((~dropped).sum()), int(tested.sum())
    fitted = basis[:, :k] @ (basis[:, :k].T @ y)
    permuted = (y - fitted)[orders]  # (B, N): y* = fitted + permuted, and |y*|² = |fitted|² + |r|² + 2 r*·fitted
    along = fitted @ basis + permuted @ basis  # (B, p): y* in the full model's basis
    total = fitted @ fitted + permuted[0] @ permuted[0] + 2 * permuted @ fitted
    residual = total - np.einsum("bp,bp->b", along, along)
    stat = np.einsum("bp,bp->b", along[:, k : k + t], along[:, k : k + t]) / np.maximum(residual, 1e-300)  # ∝ F*
    f = float(stat[0]) * fit.df_resid / t
    return {
        "df": t,
        "F": f,
        "p_anova": float(stats.f.sf(f, t, fit.df_resid)),
        "p_value": float(np.mean(stat >= stat[0] * (1 - 1e-9) - 1e-12)),
        "p_floor": _least_p(basis[:, k : k + t], orders),
    }


def _least_p(contrast: np.ndarray, orders: np.ndarray) -> float:
    """The least p a term can get, however large its effect: the share of orders that map its contrast (N, t:
    orthonormal columns, the term's columns less the reduced model) onto itself, as those give F* = F or more
    for an effect far above the noise. One seed of a 2×2×2: a main effect's 4 + 4 split, 1152 of 8! orders."""
    overlap = sum(np.square(contrast[:, j][orders] @ contrast).sum(1) for j in range(contrast.shape[1]))  # (B,)
    return float(np.mean(overlap >= contrast.shape[1] - 1e-6))


def _not_testable(pair: tuple, names: list[str], reason: str) -> dict:
    """An interaction the model leaves out, listed with why and no p."""
    factors = [names[i] for i in pair]
    empty = dict.fromkeys(("df", "F", "p_value", "p_adjusted", "p_floor", "p_anova", "effect"))
    return {
        "term": " × ".join(factors),
        "factors": factors,
        **empty,
        "significant": False,
        "test": reason,
        "levels": [],
    }


def _grid(data, k: int):
    """Every combination of the factors' levels and the seeds, to average the model's predictions over."""
    import pandas as pd

    columns = [f"x{i}" for i in range(k)] + ["seed"]
    return pd.DataFrame(list(itertools.product(*(sorted(data[c].unique()) for c in columns))), columns=columns)


def _term(term: str, grid, data, names: list[str], points: float) -> dict:
    """A term's name, factors, level means and effect in points."""
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
        "levels": levels,
        "effect": float(effect) * points,
    }
