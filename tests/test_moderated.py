"""The moderated t across rows (ablate.stats.moderated) against values worked out here by another route."""

import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

from ablate.stats import moderated
from ablate.stats.moderated import SHARED, fit_f_dist, fit_prior, trigamma_inverse
from ablate.stats.verdicts import annotate, compare_rows, holm


def bisect_trigamma_inverse(y: float) -> float:
    """trigamma is decreasing on (0, inf): halve a bracket in log x until it is 1e-13 wide."""
    lo, hi = -30.0, 30.0
    while hi - lo > 1e-13:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if special.polygamma(1, math.exp(mid)) > y else (lo, mid)
    return math.exp((lo + hi) / 2)


@pytest.mark.parametrize("y", [1e-5, 0.01, 0.3, 1.0, 1.6449, 7.5, 1e4, 1e6])
def test_trigamma_inverse_agrees_with_bisection(y):
    assert trigamma_inverse(y) == pytest.approx(bisect_trigamma_inverse(y), rel=1e-9)


def by_hand_f_fit(var: list[float], df: float, limit: bool = False) -> tuple[float, float]:
    """limma's fitFDist written out for one df: moments of e = log s² − ψ(d/2) + log(d/2); where d0 = inf, s0² is
    the mean s² (limma since 2017), or with `limit` exp(mean e) (fit_prior's)."""
    e = [math.log(v) - special.digamma(df / 2) + math.log(df / 2) for v in var]
    mean = sum(e) / len(e)
    spread = sum((x - mean) ** 2 for x in e) / (len(e) - 1) - special.polygamma(1, df / 2)
    if spread <= 0:
        return math.inf, math.exp(mean) if limit else sum(var) / len(var)
    d0 = 2 * bisect_trigamma_inverse(spread)
    return d0, math.exp(mean + special.digamma(d0 / 2) - math.log(d0 / 2))


def test_fit_f_dist_recovers_the_prior_of_many_rows_and_matches_the_hand_fit():
    rng = np.random.default_rng(0)
    var = 2.0 * rng.f(4, 10, 20000)  # s² ~ s0² F(d, d0) with s0² = 2, d = 4, d0 = 10
    d0, s0 = fit_f_dist(var, 4)
    assert d0 == pytest.approx(10, rel=0.1) and s0 == pytest.approx(2.0, rel=0.02)
    few = [0.8, 2.5, 1.1, 9.0, 1.7]
    assert np.allclose(fit_f_dist(few, 2), by_hand_f_fit(few, 2), rtol=1e-9)
    assert fit_f_dist([1.0, 1.0, 1.0], 2)[0] == math.inf  # no spread beyond sampling: all the weight on the prior
    for limit in (False, True):  # d0 = inf: limma's mean variance, or the limit of the finite fit
        assert np.allclose(fit_f_dist([1.0, 1.1, 1.2], 2, limit=limit), by_hand_f_fit([1.0, 1.1, 1.2], 2, limit))


# A study of 5 variants on 4 seeds; the baseline "b" first. Values in mIoU (0-1).
SEEDS = {
    "b": [0.700, 0.690, 0.720, 0.705],
    "r1": [0.731, 0.712, 0.741, 0.742],
    "r2": [0.688, 0.671, 0.716, 0.690],
    "r3": [0.705, 0.702, 0.726, 0.702],
    "r4": [0.716, 0.712, 0.735, 0.722],
}


def as_seeds(values: list[float]) -> dict:
    return {str(s): v for s, v in enumerate(values)}


def test_moderated_t_equals_a_worked_example():
    """Every step by hand: differences, each row's prior from the other three rows, the cap, s̃², t, p, interval."""
    rows = ["r1", "r2", "r3", "r4"]
    diffs = {r: [100 * (a - b) for a, b in zip(SEEDS[r], SEEDS["b"])] for r in rows}
    n, d = 4, 3
    var = {r: float(np.var(diffs[r], ddof=1)) for r in rows}
    got = compare_rows([as_seeds(SEEDS[r]) for r in rows], as_seeds(SEEDS["b"]), margin=1.0, alpha=0.05)
    for r, res in zip(rows, got):
        d0, s0 = by_hand_f_fit([var[o] for o in rows if o != r], d, limit=True)
        d0 = min(d0, 3 * d / (1 + 2 * SHARED))  # three other rows: their 9 df, less for sharing the baseline
        s2 = (d0 * s0 + d * var[r]) / (d0 + d)
        mean, se = float(np.mean(diffs[r])), math.sqrt(s2 / n)
        assert res["test"] == "paired, moderated" and res["prior_df"] == pytest.approx(d0, rel=1e-9)
        assert res["df"] == pytest.approx(d0 + d, rel=1e-9) and res["delta"] == pytest.approx(mean)
        assert res["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(mean) / se, d0 + d), rel=1e-8)
        assert res["p_value_plain"] == pytest.approx(scipy_stats.ttest_1samp(diffs[r], 0).pvalue, rel=1e-9)
        half = scipy_stats.t.ppf(0.95, d0 + d) * se
        assert res["ci"] == pytest.approx((mean - half, mean + half), rel=1e-8)
        lower, upper = scipy_stats.t.sf((mean + 1) / se, d0 + d), scipy_stats.t.cdf((mean - 1) / se, d0 + d)
        assert res["p_equivalence"] == pytest.approx(max(lower, upper), rel=1e-8)


def test_with_identical_spreads_the_moderated_t_tends_to_the_pooled_t(monkeypatch):
    """Many rows of one true spread: the prior is the pooled variance; with independent rows (no shared baseline,
    SHARED 0) the prior outweighs each row's own variance and every t is the pooled t."""
    rng = np.random.default_rng(1)
    diffs = rng.normal(0, 2.0, (400, 3)) + np.linspace(0, 3, 400)[:, None]  # 400 rows, 3 paired seeds each
    var, mean = diffs.var(-1, ddof=1), diffs.mean(-1)
    pooled = var.mean()
    monkeypatch.setattr(moderated, "SHARED", 0.0)
    d0, s0, kept = fit_prior(var, 2.0, np.ones(400, bool))
    assert kept.all() and np.allclose(s0, pooled, rtol=0.05) and (d0 > 100).all()
    base = {str(s): 0.5 for s in range(3)}
    got = compare_rows([{str(s): 0.5 + v / 100 for s, v in enumerate(row)} for row in diffs], base)
    pooled_t = mean / np.sqrt(pooled / 3)
    moderated_t = np.array([r["delta"] / math.sqrt(r["var"] / 3) for r in got])
    plain_t = mean / np.sqrt(var / 3)
    assert np.abs(moderated_t - pooled_t).max() < 0.1 * np.abs(plain_t - pooled_t).max()
    assert np.allclose(moderated_t, pooled_t, rtol=0.06, atol=0.05)


def test_one_shared_baseline_caps_the_prior_at_what_it_allows():
    """Differences to one baseline share its noise: the others' df count less (4 d as the rows grow), so a row's
    own variance keeps weight d / (d + d0) however many rows there are."""
    shape = np.array([-1.0, 0.0, 1.0])
    base = {str(s): 0.5 for s in range(3)}
    for k in (3, 10, 200):
        rows = [
            {str(s): 0.5 + (dl + v) / 100 for s, v in enumerate(shape * (1 + 0.01 * i))}
            for i, dl in enumerate(np.linspace(0.5, 2, k))
        ]
        cap = (k - 1) * 2 / (1 + (k - 2) * SHARED)
        assert [r["prior_df"] for r in compare_rows(rows, base)] == pytest.approx([cap] * k)
    assert cap == pytest.approx(8, rel=0.02)  # 200 rows: (199·2)/(1 + 197/4) ≈ 4·2


def shifted_study(rng, outlier: bool) -> tuple[list[dict], dict]:
    """Four rows +4 points with 1.5 points of noise per difference, 3 seeds; with `outlier`, a fifth row whose runs
    swing by ±15 points (a bimodal row)."""
    base = {str(s): 0.7 for s in range(3)}
    rows = [{str(s): 0.7 + (4 + e) / 100 for s, e in enumerate(rng.normal(0, 1.5, 3))} for _ in range(4)]
    if outlier:
        rows.append({str(s): 0.7 + v / 100 for s, v in enumerate([15.0, -15.0, 12.0])})
    return rows, base


def verdicts(rows: list[dict], base: dict) -> list[str]:
    table = [{"variant": "a=base", "seeds": base}] + [{"variant": f"a={i}", "seeds": r} for i, r in enumerate(rows)]
    annotate(table, table[0], alpha=0.05)
    return [r["verdict"] for r in table[1:]], table[1:]


def test_one_outlying_row_does_not_make_the_others_undecided(monkeypatch):
    rng = np.random.default_rng(0)
    rows, base = shifted_study(rng, outlier=True)
    decided, table = verdicts(rows, base)
    assert decided[:4] == ["better"] * 4
    assert table[4]["test"] == "paired" and table[4]["prior_df"] == 0  # the outlier keeps its own t
    assert all(r["test"] == "paired, moderated" for r in table[:4])
    monkeypatch.setattr(moderated, "OUTLIER_P", 0.0)  # without the robust fit the outlier drags every prior
    assert verdicts(rows, base)[0][:4].count("better") < 4


def test_moderation_decides_what_the_plain_t_leaves_open_on_the_same_rows():
    rows, base = shifted_study(np.random.default_rng(0), outlier=False)
    plain = compare_rows(rows, base, moderate=False)
    assert all(r["test"] == "paired" and r["p_value"] == r["p_value_plain"] for r in plain)
    assert max(holm([r["p_value"] for r in plain])) > 0.05  # 3 seeds, 2 df: the plain t leaves a row open
    assert verdicts(rows, base)[0] == ["better"] * 4


def test_fewer_than_three_rows_keep_the_plain_t():
    got = compare_rows([as_seeds(SEEDS[r]) for r in ("r1", "r2")], as_seeds(SEEDS["b"]))
    assert [r["test"] for r in got] == ["paired", "paired"] and all(r["prior_df"] == 0 for r in got)


def test_holm_and_tost_read_the_moderated_p_values():
    table = [{"variant": f"a={r}", "seeds": as_seeds(v)} for r, v in SEEDS.items()]
    annotate(table, table[0], margin=3.0, alpha=0.05)
    others = table[1:]
    assert all(r["test"] == "paired, moderated" for r in others)
    assert [r["p_adjusted"] for r in others] == holm([r["p_value"] for r in others])
    assert any(r["p_value"] != r["p_value_plain"] for r in others)
    for r in others:
        inside = -3.0 < r["ci_low"] and r["ci_high"] < 3.0
        assert (r["p_equivalence"] < 0.05) == inside
        assert (r["verdict"] == "equivalent") == inside


def test_welch_rows_are_moderated_with_welch_rows():
    rng = np.random.default_rng(3)
    base = {str(s): float(rng.normal(0.7, 0.01)) for s in range(4)}
    rows = [{str(s): float(rng.normal(0.72, 0.01)) for s in range(10, 14)} for _ in range(3)]
    got = compare_rows(rows, base)
    assert all(r["test"] == "welch, moderated" and r["prior_df"] > 0 for r in got)
    for r, x in zip(got, rows):
        a, b = 100 * np.array(list(x.values())), 100 * np.array(list(base.values()))
        assert r["p_value_plain"] == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_fit_prior_marks_the_outlier_and_fits_many_studies_at_once():
    var = np.array([[1.0, 1.2, 0.9, 1.1, 60.0], [1.0, 1.2, 0.9, 1.1, 1.3]])
    d0, s0, kept = fit_prior(var, 2.0, np.ones(5, bool))
    assert kept.tolist() == [[True, True, True, True, False], [True] * 5]
    assert d0[0, 4] == 0 and (d0[0, :4] > 0).all() and (d0[1] > 0).all()
    one = fit_prior(var[0], 2.0, np.ones(5, bool))
    assert np.allclose(one[0], d0[0]) and np.allclose(one[1], s0[0])


def race_table(rng, effects, sds, seeds) -> np.ndarray:
    """(variants, 8) runs of a race: variant i has its first seeds[i] seeds (NaN after), a shift each seed gives
    every variant (sd 3), and noise of its own sd."""
    shift = rng.normal(0, 3.0, 8)
    x = np.asarray(effects, float)[:, None] + shift + rng.normal(0, 1, (len(effects), 8)) * np.asarray(sds)[:, None]
    x[np.arange(8) >= np.asarray(seeds)[:, None]] = np.nan
    return x


def test_the_seed_blocked_t_of_two_variants_is_the_paired_t():
    leader, worse = [0.70, 0.72, 0.71, 0.69], [0.62, 0.65, 0.63, 0.64]
    delta, p, df, se = moderated.blocked_t(np.array([worse, leader]), 1)
    assert p[0] == pytest.approx(scipy_stats.ttest_rel(worse, leader).pvalue, rel=1e-9) and df[0] == pytest.approx(3)
    assert se[0] == pytest.approx(np.std(np.subtract(worse, leader), ddof=1) / 2, rel=1e-9) and np.isnan(se[1])
    assert delta[0] == pytest.approx(np.mean(worse) - np.mean(leader)) and np.isnan(p[1])


def test_the_seed_blocked_t_equals_a_weighted_least_squares_fit_worked_out_with_statsmodels():
    """An unbalanced race table with a noisy variant: Δ from statsmodels' WLS on variant + seed dummies, weighted
    1 / max(a variant's moderated variance, the median one's) and refitted REWEIGHT times from OLS; each variant's
    variance its
    residuals' squares over Σ (1 − leverage) (statsmodels' hat matrix); the contrast's variance Σ g² s_j² over the
    runs, g the contrast's weights on the runs; Satterthwaite's df; unmoderated."""
    import statsmodels.api as sm

    rng = np.random.default_rng(5)
    x = race_table(rng, [0.0, -1.0, -3.0, 0.5], [1.0, 0.5, 6.0, 1.0], [6, 3, 4, 4])
    variant, seed = np.nonzero(~np.isnan(x))
    y = x[variant, seed]
    dummies = np.column_stack([variant == v for v in range(4)] + [seed == s for s in range(1, 6)]).astype(float)
    weight = np.ones(4)
    for _ in range(moderated.REWEIGHT + 1):
        fit = sm.WLS(y, dummies, weights=weight[variant]).fit()
        hat = np.einsum("ij,jk,ik->i", fit.model.wexog, fit.normalized_cov_params, fit.model.wexog)
        df = np.array([np.sum(1 - hat[variant == v]) for v in range(4)])
        var = np.array([np.sum(fit.resid[variant == v] ** 2) for v in range(4)]) / df
        d0, s0, _ = fit_prior(var, df, np.ones(4, bool), shared=0.0)
        shrunk = (d0 * s0 + df * var) / (d0 + df)
        weight = 1 / np.maximum(shrunk, np.median(shrunk))
    assert weight[2] < weight.max() / 4  # the noisy variant weighs little in the seed shifts
    delta, p, df_t, se = moderated.blocked_t(x, 0, moderate=False)
    for i in (1, 2, 3):
        c = np.zeros(dummies.shape[1])
        c[[i, 0]] = 1, -1
        g = fit.model.weights * (dummies @ fit.normalized_cov_params @ c)  # c'β̂ = g'y
        parts = np.array([np.sum(g[variant == v] ** 2) * var[v] for v in range(4)])
        satterthwaite = parts.sum() ** 2 / np.sum(parts**2 / df)
        t = (c @ fit.params) / np.sqrt(parts.sum())
        assert delta[i] == pytest.approx(c @ fit.params, rel=1e-9)
        assert df_t[i] == pytest.approx(satterthwaite, rel=1e-9) and se[i] == pytest.approx(np.sqrt(parts.sum()))
        assert p[i] == pytest.approx(2 * scipy_stats.t.sf(abs(t), satterthwaite), rel=1e-8)
    assert df.sum() == pytest.approx(len(y) - 4 - 5)  # the residual df, shared out


def test_a_variant_on_seeds_no_other_ran_is_left_undecided_and_the_others_are_judged_as_without_it():
    rng = np.random.default_rng(0)
    x = np.full((6, 10), np.nan)
    x[:5, :3] = rng.normal(0, 1, (5, 3)) - np.array([[0], [0], [0], [0], [10]])
    alone = moderated.blocked_t(x[:5, :3], 0)
    x[5, 7:9] = [0.5, 0.7]  # two seeds of its own: its effect is confounded with theirs
    with_it = moderated.blocked_t(x, 0)
    assert np.isnan(with_it[1][5]) and np.isnan(with_it[0][5])
    for got, want in zip(with_it, alone):
        assert np.allclose(got[:5], want, equal_nan=True)
    assert with_it[1][4] < 1e-6  # 10 below: still decided


@pytest.mark.parametrize("moderate", [False, True])
def test_the_seed_blocked_t_holds_its_level_on_unbalanced_tables_with_seed_shifts(moderate):
    """2000 null race tables (no variant differs; seed shifts of sd 3; the leader on 6 seeds, the rest on 2 to 4):
    the t of each variant against the first rejects at 0.05 and at 0.01 in at most that share of comparisons (plus
    3 standard errors), and not far fewer (Satterthwaite's df on 2 seeds are a little conservative). The run noise
    is alike across variants for the moderated t (what moderation assumes), sd 0.7 to 1.5 by variant for each
    variant's own variance."""
    rng = np.random.default_rng(11)
    sds = [1.0] * 8 if moderate else [1.0, 0.7, 1.5, 1.0, 1.2, 0.8, 1.0, 1.3]
    seeds = [6, 2, 3, 4, 2, 3, 2, 4]
    p = np.array([moderated.blocked_t(race_table(rng, [0.0] * 8, sds, seeds), 0, moderate)[1][1:] for _ in range(2000)])
    for level in (0.05, 0.01):
        assert level * 0.6 < np.mean(p < level) < level + 3 * np.sqrt(level * (1 - level) / p.size)


def test_the_seed_blocked_prior_grows_with_the_field_where_a_paired_one_stops_near_four():
    """Alike variants on 2 seeds: a paired difference to the leader has 1 df and its moderated prior at most about
    4 whatever the field (SHARED); the seed-blocked residuals hardly share anything, so their t's df grow with it."""
    rng = np.random.default_rng(2)
    for k in (6, 24):
        x = race_table(rng, [0.0] * k, [1.0] * k, [2] * k)
        paired = moderated.moderate_paired(np.var(x[1:] - x[0], -1, ddof=1), 2)[2]
        assert paired.max() < 4
        assert np.nanmin(moderated.blocked_t(x, 0)[2]) > (4 if k == 6 else 16)


LIMMA_SCRIPT = """
if (!suppressPackageStartupMessages(requireNamespace("limma", quietly = TRUE))) quit(status = 77)
args <- commandArgs(trailingOnly = TRUE)
rows <- read.csv(args[1])
fits <- lapply(split(rows, rows$study), function(s) suppressWarnings({
  fit <- limma::fitFDist(s$var, s$df)
  sprintf("%d,%.17g,%.17g,%.17g", s$study, fit$df2, fit$scale, limma::squeezeVar(s$var, s$df)$var.post)
}))
writeLines(unlist(fits), args[2])
"""


def random_studies(rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """(var, df) of 3 to 30 rows on 1 to 6 df (one df for all rows, or one each): variances of pure sampling noise
    (often d0 = inf), of a prior s0²·F(df, d0) with d0 1 to 8 (finite d0), all equal (d0 = inf), some exactly zero."""
    studies = []
    for i in range(40):
        rows = int(rng.integers(3, 31))
        df = np.full(rows, float(rng.integers(1, 7))) if i % 2 else rng.integers(1, 7, rows).astype(float)
        scale = float(rng.uniform(0.1, 10))
        kind = i % 4
        if kind == 0:
            var = scale * rng.chisquare(df) / df
        elif kind == 3:
            var = np.full(rows, scale)
        else:
            var = scale * rng.f(df, rng.uniform(1, 8))
        if i % 3 == 0:
            var[rng.choice(rows, int(rng.integers(1, (rows + 1) // 2)), replace=False)] = 0.0
        studies.append((var, df))
    return studies


def missing(what: str) -> None:
    """Skip where R's limma is not installed, except in CI (.ci/run installs it): there its absence is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; .ci/run installs it")
    pytest.skip(what)


def limma_fits(studies, tmp_path) -> dict[int, tuple[float, float, np.ndarray]]:
    """{study: (df2, scale, var.post)} from limma's fitFDist and squeezeVar, all studies in one Rscript call."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        missing("Rscript is not installed (Debian: r-base-core r-bioc-limma)")
    lines = ["study,var,df"] + [f"{i},{v:.17g},{d:g}" for i, (var, df) in enumerate(studies) for v, d in zip(var, df)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "limma.R").write_text(LIMMA_SCRIPT)
    args = [rscript, tmp_path / "limma.R", tmp_path / "rows.csv", tmp_path / "fits.csv"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode == 77:
        missing("R's limma package is not installed (Debian: r-bioc-limma)")
    assert done.returncode == 0, done.stderr
    fits = {}
    for line in (tmp_path / "fits.csv").read_text().split():
        study, df2, scale, post = line.split(",")
        got = fits.setdefault(int(study), (float(df2), float(scale), []))
        got[2].append(float(post))
    return {i: (df2, scale, np.array(post)) for i, (df2, scale, post) in fits.items()}


def test_fit_f_dist_and_the_moderated_variances_equal_limma(tmp_path):
    """40 random studies against R's limma itself: fitFDist's (df2, scale), squeezeVar's var.post (s0² itself
    where d0 = inf), one study at a time and all at once (padded rows outside `mask` hold the study's median, which
    leaves the zero floor where limma puts it)."""
    studies = random_studies(np.random.default_rng(31))
    want = limma_fits(studies, tmp_path)
    padded = np.array([np.pad(var, (0, 30 - len(var)), constant_values=np.median(var)) for var, _ in studies])
    dfs = np.array([np.pad(df, (0, 30 - len(df)), constant_values=1.0) for _, df in studies])
    mask = np.arange(30) < np.array([len(var) for var, _ in studies])[:, None]
    all_d0, all_s0 = fit_f_dist(padded, dfs, mask)
    for i, (var, df) in enumerate(studies):
        df2, scale, post = want[i]
        d0, s0 = fit_f_dist(var, df)
        np.testing.assert_allclose(
            [d0, s0, all_d0[i], all_s0[i]], [df2, scale, df2, scale], rtol=1e-10, err_msg=f"study {i}"
        )
        np.testing.assert_allclose(moderated.squeeze(var, df, d0, s0), post, rtol=1e-10, err_msg=f"study {i}")
    d0s = np.array([want[i][0] for i in range(len(studies))])
    assert np.isinf(d0s).sum() >= 10 and np.isfinite(d0s).sum() >= 10  # both branches of fitFDist
    assert sum((var == 0).any() for var, _ in studies) >= 10
