"""Statistics that let a table decide: paired/Welch t, BCa bootstrap (Efron 1987), Holm (1979), TOST (Schuirmann 1987).

Every non-baseline row is compared with the baseline row, Δ in points (100 × difference of means) for a fraction
such as mIoU, in the metric's own units otherwise (`scale`, ablate.stats.directions.points):
- **paired** when the two share ≥ 2 seeds (a seed fixes init and data order, so per-seed differences
  remove that noise): t-test of the differences over the shared seeds; Δ = their mean. Otherwise
  **Welch** (unequal variances) on all seeds of each; Δ = difference of the means.
- **Verdicts rest on t.** better / worse: Holm-adjusted two-sided p < α (Holm over the non-baseline
  rows with a test), the sign of Δ read with the direction. equivalent: TOST at α with ±margin, which
  is exactly "the (1−2α) t interval of Δ lies inside ±margin"; that interval (90 % at α = 0.05) is
  `ci_low`/`ci_high`, so a forest plot of it against the margin shows the equivalence test. A row
  both significant and shown equivalent is *equivalent* (the difference is real but smaller than
  the margin); a significant row not shown equivalent is decided by its sign. Equivalence is not
  corrected for multiplicity (each claim is about one row), differences are.
- The **bootstrap** interval (`boot_low`/`boot_high`, same level, BCa; percentile for 2 values, where
  BCa's bias correction is undefined) is shown, not used: with 3–8 seeds it ignores the t quantile
  and is too narrow to decide with.
- `seeds_needed` (undecided rows): seeds per variant at which, if the observed Δ and spread were
  the truth, a test would decide with power 0.8: the t-test at Holm's next threshold α / (open rows)
  or TOST (noncentral-t approximation), whichever needs fewer. An estimate, not a promise.
- Main effects and interactions of a factorial study: `ablate.stats.factorial`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from ablate.stats import MAX_SEEDS, ROW_FIELDS
from ablate.stats.moderated import MIN_ROWS, fit_prior, squeeze

VERDICTS = ("better", "worse", "equivalent", "undecided", "baseline")
DIRECTIONS = ("maximize", "minimize")
POWER = 0.8
BOOTSTRAP_RESAMPLES = 2000  # an interval wants ≥ 1000 (Efron & Tibshirani 1993); this one is only shown


def check_margin(margin: float | None) -> float | None:
    """None (no equivalence test) or a positive, finite number of points; anything else raises ValueError."""
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf:
        raise ValueError(
            f"margin must be a positive number of points (e.g. 1.0 for ±1 point of mIoU), "
            f"or None for no equivalence test; got {margin!r}"
        )
    return float(margin)


def _check(alpha: float, direction: str) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be between 0 and 0.5 (e.g. 0.05); got {alpha!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")


def compare(
    row_seeds: dict, base_seeds: dict, *, margin: float | None, alpha: float = 0.05, rng_seed: int = 0, scale=100.0
) -> dict:
    """Δ of a row vs the baseline in points (values × `scale`: 100 for a fraction, 1 to keep the metric's units):
    paired over the shared seeds when ≥ 2 are shared, else Welch.

    Returns test ("paired" | "welch" | None when a side has < 2 seeds), delta, ci ((1−2α) t interval),
    ci_boot (bootstrap, same level), p_value (two-sided t) and p_value_plain (the same here; `compare_rows` may
    moderate p_value), p_equivalence (TOST; None without margin), df (the t's), prior_df (0: no moderation),
    sd (points: of the differences, or the root mean square of the two sds), var (the variance the t reads on the
    scale of one seed's difference: sd² paired, s_x² + s_y² at equal seeds Welch), n_pairs, n, n_base.
    """
    margin = check_margin(margin)
    shared = sorted(set(row_seeds) & set(base_seeds))
    paired = len(shared) >= 2
    x, y = (scale * np.array([s[k] for k in (shared if paired else s)], float) for s in (row_seeds, base_seeds))
    if min(len(x), len(y)) < 2:
        delta = float(x.mean() - y.mean()) if len(x) and len(y) else None
        out = dict.fromkeys(("test", "ci", "ci_boot", "p_value", "p_equivalence", "sd", "var", "df"), None)
        out.update(delta=delta, p_value_plain=None, prior_df=0.0)
    else:
        out = (_paired if paired else _welch)(x, y, margin, alpha)
        out.update(ci_boot=_bootstrap_ci(x, y, paired, 1 - 2 * alpha, rng_seed), p_value_plain=out["p_value"])
    return out | {"n_pairs": len(shared) if paired else 0, "n": len(row_seeds), "n_base": len(base_seeds)}


def t_fields(delta: float, se: float, df: float, margin: float | None, alpha: float) -> dict:
    """The t-test of Δ with standard error `se` on `df` degrees of freedom: two-sided p, the (1−2α) interval and
    TOST's p (the larger of the two one-sided p at ±margin; None without margin)."""
    if se == 0:  # no spread at all (runs identical to the bit): Δ is known exactly
        p_eq = None if margin is None else float(abs(delta) >= margin)
        return {"ci": (delta, delta), "p_value": float(delta == 0), "p_equivalence": p_eq}
    half = stats.t.ppf(1 - alpha, df) * se
    p_eq = (
        None
        if margin is None
        else float(max(stats.t.sf((delta + margin) / se, df), stats.t.cdf((delta - margin) / se, df)))
    )
    return {
        "ci": (delta - half, delta + half),
        "p_value": float(2 * stats.t.sf(abs(delta) / se, df)),
        "p_equivalence": p_eq,
    }


def _paired(x: np.ndarray, y: np.ndarray, margin: float | None, alpha: float) -> dict:
    d = x - y
    delta, sd, n = float(d.mean()), float(d.std(ddof=1)), len(d)
    out = {"test": "paired", "delta": delta, "sd": sd, "var": sd**2, "df": float(n - 1), "prior_df": 0.0}
    return out | t_fields(delta, sd / math.sqrt(n), n - 1, margin, alpha)


def _welch(x: np.ndarray, y: np.ndarray, margin: float | None, alpha: float) -> dict:
    delta, sd = float(x.mean() - y.mean()), math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    a, b = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = a + b  # Welch–Satterthwaite df below (tests/test_stats.py checks it against statsmodels)
    df = float(se2**2 / (a**2 / (len(x) - 1) + b**2 / (len(y) - 1))) if se2 else float(len(x) + len(y) - 2)
    var = se2 / welch_factor(len(x), len(y))
    out = {"test": "welch", "delta": delta, "sd": sd, "var": var, "df": df, "prior_df": 0.0}
    return out | t_fields(delta, math.sqrt(se2), df, margin, alpha)


def welch_factor(n_x: int, n_y: int) -> float:
    """se² = var × this for Welch's Δ, with var on the scale of one seed's difference (s_x² + s_y² at equal n)."""
    return (1 / n_x + 1 / n_y) / 2


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, paired: bool, level: float, rng_seed: int) -> tuple | None:
    """Bootstrap interval of Δ (points): BCa, percentile for 2 values or when BCa gives no finite bound."""
    data = (x - y,) if paired else (x, y)
    if all(np.ptp(s) == 0 for s in data):
        return (float(np.mean(x) - np.mean(y)),) * 2
    statistic = np.mean if paired else (lambda a, b, axis: a.mean(axis) - b.mean(axis))
    for method in ("BCa", "percentile")[min(len(s) for s in data) < 3 :]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples: we fall back below
            ci = stats.bootstrap(
                data,
                statistic,
                n_resamples=BOOTSTRAP_RESAMPLES,
                confidence_level=level,
                method=method,
                random_state=rng_seed,
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return None


def compare_rows(
    rows_seeds: list[dict],
    base_seeds: dict,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
    moderate: bool = True,
    rng_seed: int = 0,
    scale: float = 100.0,
) -> list[dict]:
    """`compare` of each row's {seed: value} with the baseline's, then, with `moderate`, the moderated t of every row
    of a kind (paired, Welch) with at least MIN_ROWS rows of it (ablate.stats.moderated): its test says
    "paired, moderated", p_value / ci / p_equivalence / df / sd are the moderated t's, prior_df its d0 and
    p_value_plain the plain t's p. Rows an outlier or without a usable prior keep the plain t (prior_df 0)."""
    results = [compare(s, base_seeds, margin=margin, alpha=alpha, rng_seed=rng_seed, scale=scale) for s in rows_seeds]
    for kind in ("paired", "welch") if moderate else ():
        group = [r for r in results if r["test"] == kind]
        if len(group) < MIN_ROWS:
            continue
        var, df = np.array([r["var"] for r in group]), np.array([r["df"] for r in group])
        prior_df, s0, _ = fit_prior(var, df, np.ones(len(group), bool))  # (rows,) each
        for r, d0, moderated in zip(group, prior_df, squeeze(var, df, prior_df, s0)):
            if d0 > 0:
                r.update(_moderated(r, float(d0), float(moderated), margin, alpha))
    return results


def _moderated(result: dict, prior_df: float, var: float, margin: float | None, alpha: float) -> dict:
    """A compare() result's t fields with the moderated variance on its df + prior_df."""
    paired, df = result["test"] == "paired", result["df"] + prior_df
    factor = 1 / result["n_pairs"] if paired else welch_factor(result["n"], result["n_base"])
    fields = t_fields(result["delta"], math.sqrt(var * factor), df, margin, alpha)
    sd = math.sqrt(var if paired else var / 2)  # as compare's: of the differences, or the rms of the two sds
    return fields | {"test": f"{result['test']}, moderated", "df": df, "prior_df": prior_df, "sd": sd, "var": var}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of the family of given p-values; None entries pass through.

    The i-th smallest of m is multiplied by m − i (i from 0), then made non-decreasing in that order and capped at 1:
    statsmodels' multipletests(method="holm") gives the same (tests/test_stats.py), but runs gc.collect() on every
    call (statsmodels 0.15), 80-300 ms in a process holding a test session, once per look of a race."""
    out = list(p_values)
    tested = [i for i, p in enumerate(p_values) if p is not None]
    p = np.array([p_values[i] for i in tested], float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    for i, value in zip(np.array(tested)[order], adjusted):
        out[int(i)] = float(value)
    return out


def holm_open(adjusted: list[float | None], alpha: float) -> int:
    """The rows Holm has not rejected at α among `adjusted` (at least 1): α over it is Holm's next threshold, the
    level a seeds estimate aims at."""
    return max(1, sum(p is not None and p >= alpha for p in adjusted))


def verdict(result: dict, p_adjusted: float | None, *, alpha: float = 0.05, direction: str = "maximize") -> str:
    """'equivalent' (TOST p < α), else 'better' / 'worse' (adjusted p < α; sign of Δ, direction), else 'undecided'."""
    _check(alpha, direction)
    if result["p_equivalence"] is not None and result["p_equivalence"] < alpha:
        return "equivalent"
    if p_adjusted is not None and p_adjusted < alpha:
        return "better" if (result["delta"] > 0) == (direction == "maximize") else "worse"
    return "undecided"


def seeds_needed(
    result: dict,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
    power: float = POWER,
    family: int = 1,
    difference: bool = True,
) -> int | None:
    """Seeds per variant that would decide with `power` if the observed Δ and sd were the truth.

    The smaller of: the t-test at α / family (Holm's threshold with `family` rows still open) showing
    a difference, and TOST at α showing equivalence within ±margin. At least one more than now,
    at most MAX_SEEDS ("that many or more"); None when unknown (< 2 seeds) or Δ = 0 and no margin.
    `difference` False: TOST's alone (a race shows differences by another t, `seeds_to_separate`).
    """
    margin = check_margin(margin)
    if result["test"] is None or not result["sd"] or (difference and not result["delta"] and margin is None):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    curves = [_difference_power(result, n, alpha / family)] if result["delta"] and difference else []
    if margin is not None:
        curves.append(_equivalence_power(result, n, margin, alpha))
    reached = [int(n[np.argmax(c >= power)]) for c in curves if (c >= power).any()]
    now = result["n_pairs"] or min(result["n"], result["n_base"])
    return max(min(reached), now + 1) if reached else MAX_SEEDS


def seeds_to_separate(
    delta: float, se: float, df: float, n: int, n_leader: int, *, alpha: float, power: float = POWER
) -> int | None:
    """Seeds per variant at which a race's seed-blocked t (ablate.stats.moderated.blocked_t) would tell a variant
    from the leader with `power`, were its Δ and the variances the truth: a variant below the leader is then put out;
    one above it (the leader ahead on fewer seeds) overtakes it as the leader's seeds come in.

    The contrast's variance scales as 1/n + 1/n_leader (alike variances, as the moderation assumes; the leader
    keeps its seeds where it has more than n), its df stay as now (the field's, which only grow), two-sided at
    `alpha` (Holm's next threshold). At least one more than now, at most MAX_SEEDS ("that many or more"); None
    when unknown (no se).
    """
    if not (np.isfinite(delta) and np.isfinite(se) and np.isfinite(df)) or se <= 0:
        return None
    t = stats.t.isf(alpha / 2, df)

    def reached(k: int) -> bool:  # grows with k (the se shrinks, the df are held): bisect
        scale = math.sqrt((1 / k + 1 / max(n_leader, k)) / (1 / n + 1 / n_leader))
        return stats.nct.sf(t, df, abs(delta) / (se * scale)) >= power

    low, high = n + 1, MAX_SEEDS
    if not reached(high):
        return MAX_SEEDS
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if reached(middle) else (middle + 1, high)
    return low


def _difference_power(result: dict, n: np.ndarray, alpha: float) -> np.ndarray:
    """Power of the two-sided t at n seeds (Welch: df 2(n − 1), equal n), a moderated row keeping its prior df."""
    effect = abs(result["delta"]) / result["sd"]  # Cohen's d (of the differences when paired)
    paired = result["test"].startswith("paired")
    df = (n - 1 if paired else 2 * (n - 1)) + result.get("prior_df", 0.0)
    nc = effect * np.sqrt(n if paired else n / 2)
    t = stats.t.isf(alpha / 2, df)
    # scipy's noncentral t gives NaN far in its lower tail, a term below α/2 here (effect >= 0): 0 then
    return stats.nct.sf(t, df, nc) + np.nan_to_num(stats.nct.cdf(-t, df, nc))


def _equivalence_power(result: dict, n: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """TOST power ≈ P(lower test rejects) + P(upper test rejects) − 1, each a noncentral t tail.

    P(A and B) ≥ P(A) + P(B) − 1, the usual approximation (as in Chow, Shao & Wang 2008, ch. 3); Welch
    df taken as 2(n − 1) (equal n, similar spread). A lower bound of the exact power; ≈ 0 when |Δ| ≥ margin.
    """
    paired = result["test"].startswith("paired")
    se = result["sd"] / np.sqrt(n) if paired else result["sd"] * np.sqrt(2 / n)
    df = (n - 1 if paired else 2 * (n - 1)) + result.get("prior_df", 0.0)
    t = stats.t.ppf(1 - alpha, df)
    delta = abs(result["delta"])
    both = stats.nct.sf(t, df, (margin - delta) / se) + stats.nct.sf(t, df, (margin + delta) / se) - 1
    return np.clip(both, 0, 1)


def annotate(
    rows: list[dict],
    baseline_row: dict,
    *,
    margin: float | None = None,
    alpha: float = 0.05,
    direction: str = "maximize",
    rng_seed: int = 0,
    moderate: bool = True,
    difference_needed: bool = True,
    scale: float = 100.0,
) -> None:
    """Compare every row with `baseline_row` (by `seeds`, `compare_rows`) and set on each row the fields of ROW_FIELDS.

    delta (points, or the metric's units: `scale` as for `compare`), ci_low / ci_high ((1−2α) t interval, the one
    TOST reads), boot_low / boot_high
    (bootstrap, same level, for display), test ("paired" | "welch", ", moderated" when moderated, None),
    p_value (raw: the moderated t's when moderated), p_value_plain (the plain t's), df (the t's), prior_df (d0),
    p_adjusted (Holm over the non-baseline rows with a p), p_equivalence (TOST, None without margin),
    verdict (better | worse | equivalent | undecided | baseline), seeds_needed (undecided rows only; TOST's alone
    with `difference_needed` False, `seeds_needed`).
    """
    margin = check_margin(margin)
    _check(alpha, direction)
    others = [r for r in rows if r["variant"] != baseline_row["variant"]]
    results = compare_rows(
        [r["seeds"] for r in others],
        baseline_row["seeds"],
        margin=margin,
        alpha=alpha,
        moderate=moderate,
        rng_seed=rng_seed,
        scale=scale,
    )
    adjusted = holm([res["p_value"] for res in results])
    family = holm_open(adjusted, alpha)
    for row, res, p_adj in zip(others, results, adjusted):
        decision = verdict(res, p_adj, alpha=alpha, direction=direction)
        row.update(_fields(res, p_adj, decision))
        if decision == "undecided":
            row["seeds_needed"] = seeds_needed(
                res, margin=margin, alpha=alpha, family=family, difference=difference_needed
            )
    baseline_row.update(dict.fromkeys(ROW_FIELDS), delta=0.0, verdict="baseline")


def _fields(result: dict, p_adjusted: float | None, decision: str) -> dict:
    ci, boot = result["ci"] or (None, None), result["ci_boot"] or (None, None)
    return {
        "delta": result["delta"],
        "ci_low": ci[0],
        "ci_high": ci[1],
        "boot_low": boot[0],
        "boot_high": boot[1],
        "test": result["test"],
        "p_value": result["p_value"],
        "p_value_plain": result["p_value_plain"],
        "df": result["df"],
        "prior_df": result["prior_df"],
        "p_adjusted": p_adjusted,
        "p_equivalence": result["p_equivalence"],
        "verdict": decision,
        "seeds_needed": None,
    }
