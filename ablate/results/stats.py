"""Statistics that let a table decide: paired/Welch t, BCa bootstrap (Efron 1987), Holm (1979), TOST (Schuirmann 1987).

Every non-baseline row is compared with the baseline row, Δ in points (100 × difference of means):
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
- Main effects and interactions of a factorial study: `ablate.results.factorial`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from ablate.results.formats import ROW_FIELDS

VERDICTS = ("better", "worse", "equivalent", "undecided", "baseline")
DIRECTIONS = ("maximize", "minimize")
POWER = 0.8
MAX_SEEDS = 1000  # seeds_needed is capped here: "at least this many"
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


def compare(row_seeds: dict, base_seeds: dict, *, margin: float | None, alpha: float = 0.05, rng_seed: int = 0) -> dict:
    """Δ of a row vs the baseline in points: paired over the shared seeds when ≥ 2 are shared, else Welch.

    Returns test ("paired" | "welch" | None when a side has < 2 seeds), delta, ci ((1−2α) t interval),
    ci_boot (bootstrap, same level), p_value (two-sided t), p_equivalence (TOST; None without margin),
    sd (points: of the differences, or the root mean square of the two sds), n_pairs, n, n_base.
    """
    margin = check_margin(margin)
    shared = sorted(set(row_seeds) & set(base_seeds))
    paired = len(shared) >= 2
    x, y = (100 * np.array([s[k] for k in (shared if paired else s)], float) for s in (row_seeds, base_seeds))
    if min(len(x), len(y)) < 2:
        delta = float(x.mean() - y.mean()) if len(x) and len(y) else None
        out = {
            "test": None,
            "delta": delta,
            "ci": None,
            "ci_boot": None,
            "p_value": None,
            "p_equivalence": None,
            "sd": None,
        }
    else:
        out = (_paired if paired else _welch)(x, y, margin, alpha)
        out["ci_boot"] = _bootstrap_ci(x, y, paired, 1 - 2 * alpha, rng_seed)
    return out | {"n_pairs": len(shared) if paired else 0, "n": len(row_seeds), "n_base": len(base_seeds)}


def _paired(x: np.ndarray, y: np.ndarray, margin: float | None, alpha: float) -> dict:
    from statsmodels.stats.weightstats import DescrStatsW, ttost_paired  # statsmodels (and pandas): when used

    d = x - y
    delta, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return _exact("paired", delta, margin)
    return {
        "test": "paired",
        "delta": delta,
        "sd": sd,
        "ci": tuple(map(float, DescrStatsW(d).tconfint_mean(alpha=2 * alpha))),
        "p_value": float(stats.ttest_rel(x, y).pvalue),
        "p_equivalence": None if margin is None else float(ttost_paired(x, y, -margin, margin)[0]),
    }


def _welch(x: np.ndarray, y: np.ndarray, margin: float | None, alpha: float) -> dict:
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

    delta, sd = float(x.mean() - y.mean()), math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    if sd == 0:
        return _exact("welch", delta, margin)
    ci = CompareMeans(DescrStatsW(x), DescrStatsW(y)).tconfint_diff(alpha=2 * alpha, usevar="unequal")
    p_eq = None if margin is None else float(ttost_ind(x, y, -margin, margin, usevar="unequal")[0])
    return {
        "test": "welch",
        "delta": delta,
        "sd": sd,
        "ci": tuple(map(float, ci)),
        "p_value": float(stats.ttest_ind(x, y, equal_var=False).pvalue),
        "p_equivalence": p_eq,
    }


def _exact(test: str, delta: float, margin: float | None) -> dict:
    """No spread at all (runs identical to the bit): Δ is known exactly."""
    return {
        "test": test,
        "delta": delta,
        "sd": 0.0,
        "ci": (delta, delta),
        "p_value": float(delta == 0),
        "p_equivalence": None if margin is None else float(abs(delta) >= margin),
    }


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


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of the family of given p-values; None entries pass through."""
    from statsmodels.stats.multitest import multipletests

    out = list(p_values)
    tested = [i for i, p in enumerate(p_values) if p is not None]
    if tested:
        adjusted = multipletests([p_values[i] for i in tested], method="holm")[1]
        for i, p in zip(tested, adjusted):
            out[i] = float(p)
    return out


def verdict(result: dict, p_adjusted: float | None, *, alpha: float = 0.05, direction: str = "maximize") -> str:
    """'equivalent' (TOST p < α), else 'better' / 'worse' (adjusted p < α; sign of Δ, direction), else 'undecided'."""
    _check(alpha, direction)
    if result["p_equivalence"] is not None and result["p_equivalence"] < alpha:
        return "equivalent"
    if p_adjusted is not None and p_adjusted < alpha:
        return "better" if (result["delta"] > 0) == (direction == "maximize") else "worse"
    return "undecided"


def seeds_needed(
    result: dict, *, margin: float | None = None, alpha: float = 0.05, power: float = POWER, family: int = 1
) -> int | None:
    """Seeds per variant that would decide with `power` if the observed Δ and sd were the truth.

    The smaller of: the t-test at α / family (Holm's threshold with `family` rows still open) showing
    a difference, and TOST at α showing equivalence within ±margin. At least one more than now,
    at most MAX_SEEDS ("that many or more"); None when unknown (< 2 seeds) or Δ = 0 and no margin.
    """
    margin = check_margin(margin)
    if result["test"] is None or not result["sd"] or (not result["delta"] and margin is None):
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    curves = [_difference_power(result, n, alpha / family)] if result["delta"] else []
    if margin is not None:
        curves.append(_equivalence_power(result, n, margin, alpha))
    reached = [int(n[np.argmax(c >= power)]) for c in curves if (c >= power).any()]
    now = result["n_pairs"] or min(result["n"], result["n_base"])
    return max(min(reached), now + 1) if reached else MAX_SEEDS


def _difference_power(result: dict, n: np.ndarray, alpha: float) -> np.ndarray:
    from statsmodels.stats.power import TTestIndPower, TTestPower

    effect = abs(result["delta"]) / result["sd"]  # Cohen's d (of the differences when paired)
    if result["test"] == "paired":
        power, df, nc = TTestPower().power(effect_size=effect, nobs=n, alpha=alpha), n - 1, effect * np.sqrt(n)
    else:
        power = TTestIndPower().power(effect_size=effect, nobs1=n, alpha=alpha, ratio=1.0)
        df, nc = 2 * (n - 1), effect * np.sqrt(n / 2)
    # scipy's noncentral t gives NaN far in its lower tail, a term below α/2 here (effect >= 0): the upper tail
    return np.where(np.isnan(power), stats.nct.sf(stats.t.isf(alpha / 2, df), df, nc), power)


def _equivalence_power(result: dict, n: np.ndarray, margin: float, alpha: float) -> np.ndarray:
    """TOST power ≈ P(lower test rejects) + P(upper test rejects) − 1, each a noncentral t tail.

    P(A and B) ≥ P(A) + P(B) − 1, the usual approximation (as in Chow, Shao & Wang 2008, ch. 3); Welch
    df taken as 2(n − 1) (equal n, similar spread). A lower bound of the exact power; ≈ 0 when |Δ| ≥ margin.
    """
    paired = result["test"] == "paired"
    se = result["sd"] / np.sqrt(n) if paired else result["sd"] * np.sqrt(2 / n)
    df = n - 1 if paired else 2 * (n - 1)
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
) -> None:
    """Compare every row with `baseline_row` (by `seeds`) and set on each row the fields of ROW_FIELDS.

    delta (points), ci_low / ci_high ((1−2α) t interval, the one TOST reads), boot_low / boot_high
    (bootstrap, same level, for display), test ("paired" | "welch" | None), p_value (raw),
    p_adjusted (Holm over the non-baseline rows with a p), p_equivalence (TOST, None without margin),
    verdict (better | worse | equivalent | undecided | baseline), seeds_needed (undecided rows only).
    """
    margin = check_margin(margin)
    _check(alpha, direction)
    others = [r for r in rows if r["variant"] != baseline_row["variant"]]
    results = [
        compare(r["seeds"], baseline_row["seeds"], margin=margin, alpha=alpha, rng_seed=rng_seed) for r in others
    ]
    adjusted = holm([res["p_value"] for res in results])
    family = max(1, sum(p is not None and p >= alpha for p in adjusted))  # rows Holm has not rejected
    for row, res, p_adj in zip(others, results, adjusted):
        decision = verdict(res, p_adj, alpha=alpha, direction=direction)
        row.update(_fields(res, p_adj, decision))
        if decision == "undecided":
            row["seeds_needed"] = seeds_needed(res, margin=margin, alpha=alpha, family=family)
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
        "p_adjusted": p_adjusted,
        "p_equivalence": result["p_equivalence"],
        "verdict": decision,
        "seeds_needed": None,
    }
