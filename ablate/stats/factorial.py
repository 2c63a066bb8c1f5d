"""Main effects and interactions of a factorial study: OLS with categorical factors, type-II F, p-values by
permutation of reduced-model residuals (Freedman & Lane 1983) within seeds, Holm (1979) over the terms."""

from __future__ import annotations

import functools
import itertools
import math
import re

import numpy as np
from scipy import stats

from ablate.stats.verdicts import holm

MIN_RESIDUAL_DF = 4  # pairwise interactions only when the model with them leaves this many residual df
PERMUTATIONS = 9999  # random permutations (within seeds) when there are more distinct ones than EXACT_LIMIT
EXACT_LIMIT = 50_000  # every permutation when there are at most this many: 8 runs of one seed have 8! = 40320
BLOCK = "seed"  # the seed as a block term: seeds are shared across variants, as the verdicts pair them


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
    blocked = BLOCK in fit["slices"]  # seeds shared: permute only within a seed
    orders, test = _permutations(tuple(data["seed"] if blocked else [""] * len(data["y"])), permutations, seed)
    grid = _grid(data, len(names))
    grid["y"] = _design(grid, [t for t in fit["slices"] if t != "Intercept"], data)[0] @ fit["beta"]
    names_in_fit = [t for t in fit["slices"] if t not in ("Intercept", BLOCK)]
    terms = [
        {**_term(t, grid, data, names, 100 / metric_scale), **_freedman_lane(fit, t, orders), "test": test}
        for t in names_in_fit
    ]
    for term, adjusted in zip(terms, holm([t["p_value"] for t in terms])):
        term.update(p_adjusted=adjusted, significant=adjusted < alpha)
    return terms + [_not_testable(pair, names, reason) for pair, reason in untested]


def _observations(rows: list[dict]) -> tuple[dict, list[str]]:
    """One observation per seed value, as columns {x0, x1, …: level names (the varied settings, renamed for the
    model), seed, y}, and the factor names. A row's settings are read from its label "key=value key=value"
    (ablate.study.space.variant_label)."""
    parsed = [(dict(s.partition("=")[::2] for s in r["variant"].split(" ") if s), r["seeds"]) for r in rows]
    parsed = [(settings, values) for settings, values in parsed if values]
    keys = sorted({k for settings, _ in parsed for k in settings})
    names = [k for k in keys if len({settings.get(k, "") for settings, _ in parsed}) > 1]
    records = [(settings, s, v) for settings, values in parsed for s, v in values.items()]
    data = {f"x{i}": np.array([settings.get(k, "") for settings, _, _ in records]) for i, k in enumerate(names)}
    data["seed"] = np.array([str(s) for _, s, _ in records])
    data["y"] = np.array([float(v) for _, _, v in records])
    return data, names


def _fit(data: dict, k: int, block: list[str] | None = None) -> tuple:
    """(OLS fit, interactions left out as [((i, j), reason)]): pairwise interactions when estimable with
    MIN_RESIDUAL_DF residual df left, else main effects; without the seed block when a seed of its own makes
    the model inestimable; (None, []) when not even main effects are estimable."""
    main = [f"x{i}" for i in range(k)]
    pairs = list(itertools.combinations(range(k), 2))
    if block is None:
        seeds = data["seed"]
        block = [BLOCK] if len(set(seeds)) > 1 and len(set(seeds)) < len(seeds) else []
    full = _ols(data, main + block + [f"x{i}:x{j}" for i, j in pairs])
    if full is not None and full["df_resid"] >= MIN_RESIDUAL_DF:
        return full, []
    reason = (
        f"not testable: leaves {full['df_resid']:.0f} residual df (needs {MIN_RESIDUAL_DF})"
        if full is not None
        else "not testable: not estimable from these runs"
    )
    fit = _ols(data, main + block)
    if fit is None and block:
        return _fit(data, k, [])
    return fit, ([(pair, reason) for pair in pairs] if fit is not None else [])


def _design(data: dict, terms: list[str], levels_from: dict) -> tuple[np.ndarray, dict]:
    """(N, p) design matrix of an intercept and `terms` ("x0", "seed", "x0:x1") in treatment coding (the first of a
    factor's sorted levels in `levels_from` is the reference; an interaction the products of its factors'
    columns), and each term's column slice."""

    def dummies(column: str) -> np.ndarray:  # (N, levels - 1)
        levels = np.unique(levels_from[column])
        return (np.asarray(data[column])[:, None] == levels[None, 1:]).astype(float)

    columns, slices = [np.ones((len(data["y"] if "y" in data else data["seed"]), 1))], {"Intercept": slice(0, 1)}
    for term in terms:
        parts = [dummies(c) for c in term.split(":")]
        block = (
            parts[0] if len(parts) == 1 else (parts[0][:, :, None] * parts[1][:, None, :]).reshape(len(parts[0]), -1)
        )
        start = sum(c.shape[1] for c in columns)
        slices[term] = slice(start, start + block.shape[1])
        columns.append(block)
    return np.hstack(columns), slices


def _ols(data: dict, terms: list[str]) -> dict | None:
    """The least-squares fit of y on `terms` ({X, y, beta, slices, df_resid}), or None when the design matrix is
    rank-deficient or leaves no residual df."""
    x, slices = _design(data, terms, data)
    if not np.linalg.matrix_rank(x) == x.shape[1] < x.shape[0]:
        return None
    beta = np.linalg.lstsq(x, data["y"], rcond=None)[0]
    return {"X": x, "y": data["y"], "beta": beta, "slices": slices, "df_resid": x.shape[0] - x.shape[1]}


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
    exog, y, slices = fit["X"], fit["y"], fit["slices"]
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
    f = float(stat[0]) * fit["df_resid"] / t
    return {
        "df": t,
        "F": f,
        "p_anova": float(stats.f.sf(f, t, fit["df_resid"])),
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


def _grid(data: dict, k: int) -> dict:
    """Every combination of the factors' levels and the seeds (as columns), to average the model's predictions over."""
    columns = [f"x{i}" for i in range(k)] + ["seed"]
    cells = list(itertools.product(*(np.unique(data[c]) for c in columns)))
    return {c: np.array([cell[i] for cell in cells]) for i, c in enumerate(columns)}


def _term(term: str, grid: dict, data: dict, names: list[str], points: float) -> dict:
    """A term's name, factors, level means (of the model's predictions over the grid) and effect in points."""
    columns = term.split(":")
    keys = list(itertools.product(*(np.unique(data[c]) for c in columns)))

    def where(table: dict, key: tuple) -> np.ndarray:
        return np.logical_and.reduce([table[c] == v for c, v in zip(columns, key)])

    means = np.array([grid["y"][where(grid, key)].mean() for key in keys])
    levels = [
        {"value": " / ".join(key), "mean": float(m), "n": int(where(data, key).sum())} for key, m in zip(keys, means)
    ]
    if len(columns) == 1:
        effect = np.ptp(means)
    else:  # the largest difference of differences over two levels of each factor
        cells = means.reshape(len(np.unique(data[columns[0]])), -1)
        diffs = cells[:, :, None] - cells[:, None, :]
        effect = np.nanmax(np.abs(diffs[:, None] - diffs[None, :]))
    factors = [names[int(c[1:])] for c in columns]
    return {
        "term": " × ".join(factors),
        "factors": factors,
        "levels": levels,
        "effect": float(effect) * points,
    }
