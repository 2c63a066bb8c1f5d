"""Moderated t across a study's rows: limma's empirical Bayes variances (Smyth 2004), robust to outlying rows.

Every row of a study is compared with the same baseline on the same seeds, data and budget, so the rows measure one
kind of noise. Each row's variance s² (of the paired differences, on d = n − 1 degrees of freedom) is shrunk toward
a prior s0² fitted to all rows, s̃² = (d0·s0² + d·s²) / (d0 + d), and its t uses s̃² on d0 + d degrees of freedom:
- **The prior** (`fit_f_dist`) is limma's fitFDist: s² ~ s0²·F(d, d0), fitted by moments of log s²; d0 from the
  inverse of the trigamma function (`trigamma_inverse`, scipy's Newton); where d0 = inf, s0² is the mean s² (as
  limma). Each row's prior is fitted to the other rows (leave one out): with a few rows, a row's own s² in its prior
  would make its t too large by chance.
- **Robust** (`fit_prior`): a simpler rule than limma's robust=TRUE (Phipson et al. 2016, winsorized and per-row
  d0): a row whose s² is too large for the prior fitted to the other rows (upper F tail p below OUTLIER_P / rows,
  the largest first, while more than MIN_ROWS rows remain) is an outlier: it keeps its own s² and the plain t
  (d0 = 0), and the prior is fitted without it. An outlier can neither borrow strength nor lend its spread.
- **Few rows**: limma fits thousands of genes; we fit 3 to 30 rows, so d0 is capped at the information the other
  rows hold: their summed df, less for sharing one baseline (differences of runs with alike noise to one baseline
  correlate 1/2, their variances 1/4: SHARED). Where a row's fit gives d0 = inf (so d0 is the cap), its s0² is the
  finite fit's limit (`fit_f_dist(limit=True)`), not limma's mean s²: it moves smoothly as d0 crosses to inf, and
  with the mean s² the capped t rejects up to 7% of nulls at 5% (6 rows on 2 seeds, benchmarks/moderated_null.py;
  3–5% with the limit). With identical spreads and many rows the moderated t tends to the t of the pooled
  variance. Fewer than MIN_ROWS rows, or d0 < MIN_PRIOR_DF: no prior, the plain t.
Arrays are (..., rows): the benchmark fits many studies at once; `mask` says which rows take part.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, special

MIN_ROWS = 3  # rows with a test of one kind (paired, or Welch) before a prior is fitted to them
MIN_PRIOR_DF = 1.0  # a prior worth less than one degree of freedom is not used (the row keeps its plain t)
SHARED = 0.25  # correlation of two rows' variances of differences to one baseline when all runs' noise is alike
OUTLIER_P = 0.05  # a row whose upper F tail p against the others' prior is below OUTLIER_P / rows is an outlier
REWEIGHT = 1  # blocked_t's weighted refits after least squares


def trigamma_inverse(y):
    """x > 0 with trigamma(x) = y (y > 0), as limma's trigammaInverse (start 0.5 + 1/y; 1/√y above y = 1e7, 1/y
    below 1e-6): scipy.optimize.newton, elementwise on arrays, on log trigamma(x) = log y in u = log x (nearly
    linear there, so a relative tolerance in x)."""
    y = np.asarray(y, float)
    inner = np.clip(y, 1e-6, 1e7).ravel()
    u = (
        optimize.newton(
            lambda u: np.log(special.polygamma(1, np.exp(u)) / inner),
            np.log(0.5 + 1 / inner),
            fprime=lambda u: np.exp(u) * special.polygamma(2, np.exp(u)) / special.polygamma(1, np.exp(u)),
            tol=1e-12,
            maxiter=100,
        )
        if inner.size
        else inner
    )
    return np.where(y > 1e7, 1 / np.sqrt(y), np.where(y < 1e-6, 1 / y, np.exp(u).reshape(y.shape)))


def fit_f_dist(var, df, mask=True, *, limit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(d0, s0²) with var ~ s0²·F(df, d0) over the rows in `mask` (last axis), as limma's fitFDist; d0 = inf when
    the log-variances vary no more than sampling alone would, and then s0² is the rows' mean variance as limma's
    (with `limit`, exp(mean e), the finite fit's s0² as d0 → inf). Zero variances are raised to 1e-5 × the median
    of all the rows given."""
    var, df = np.broadcast_arrays(np.asarray(var, float), np.asarray(df, float))
    median = np.median(var, -1, keepdims=True)
    var = np.maximum(var, 1e-5 * np.where(median > 0, median, 1))
    e = np.log(var) - special.digamma(df / 2) + np.log(df / 2)
    e, trigamma, var, mask = np.broadcast_arrays(e, special.polygamma(1, df / 2), var, mask)  # (..., rows)
    k = mask.sum(-1)
    mean = np.sum(np.where(mask, e, 0), -1) / k
    spread = np.sum(np.where(mask, (e - mean[..., None]) ** 2, 0), -1) / (k - 1)
    spread -= np.sum(np.where(mask, trigamma, 0), -1) / k
    ok = spread > 0
    d0 = np.full(spread.shape, np.inf)
    d0[ok] = 2 * trigamma_inverse(spread[ok])
    finite = np.isfinite(d0)
    half = np.where(finite, d0 / 2, 1)
    s0 = np.exp(mean + np.where(finite, special.digamma(half) - np.log(half), 0))  # the limit where d0 = inf
    return d0, np.where(finite | limit, s0, np.sum(np.where(mask, var, 0), -1) / k)


def upper_tail(var, df, d0, s0) -> np.ndarray:
    """P(F(df, d0) > var / s0²): how surprising a row's variance is under a prior (chi²/df when d0 is inf)."""
    ratio = np.asarray(var, float) / s0
    finite = np.isfinite(d0)
    return np.where(finite, special.fdtrc(df, np.where(finite, d0, 1), ratio), special.chdtrc(df, df * ratio))


def fit_prior(var, df, mask, shared: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d0, s0², kept), each per row: row i's prior is fitted to the other rows in `mask` less the outlying ones.

    d0 is 0 (and s0² 1) for a row outside `mask`, an outlier, or without a usable prior (module docstring); else at
    most the other kept rows' effective df: their summed df / (1 + (others − 1)·`shared`), `shared` the correlation
    of two rows' variances (None: SHARED, for differences to one baseline; 0 for `blocked_t`'s residuals). `kept`:
    the rows the priors are fitted to (none when under MIN_ROWS)."""
    var, df, kept = np.broadcast_arrays(np.asarray(var, float), np.asarray(df, float), mask)
    kept, var = kept.copy(), floor_zero(var, kept)
    with np.errstate(all="ignore"):  # fits of fewer than two rows are NaN, and never used
        for _ in range(var.shape[-1] - MIN_ROWS):
            d0, s0 = _leave_one_out(var, df, kept)
            p = np.where(kept, upper_tail(var, df, d0, s0), np.inf)
            count, worst = kept.sum(-1), np.argmin(p, -1)[..., None]
            drop = (count > MIN_ROWS) & (np.take_along_axis(p, worst, -1)[..., 0] < OUTLIER_P / np.maximum(count, 1))
            if not drop.any():
                break
            np.put_along_axis(kept, worst, np.take_along_axis(kept, worst, -1) & ~drop[..., None], -1)
        kept &= (kept.sum(-1) >= MIN_ROWS)[..., None]
        d0, s0 = _leave_one_out(var, df, kept)
    others = np.sum(kept, -1, keepdims=True) - 1
    shared = SHARED if shared is None else shared
    cap = (np.sum(np.where(kept, df, 0), -1, keepdims=True) - df) / (1 + (others - 1) * shared)
    d0 = np.where(kept, np.minimum(d0, cap), 0.0)
    d0 = np.where(d0 >= MIN_PRIOR_DF, d0, 0.0)
    return d0, np.where(d0 > 0, s0, 1.0), kept


def floor_zero(var, mask) -> np.ndarray:
    """`var` with (near-)zero variances raised to 1e-5 × the median of the rows in `mask` (last axis), as fit_f_dist
    raises them, so that rows outside the fit (a baseline compared with itself) never move the floor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no row in mask: the floor 1e-5
        median = np.nanmedian(np.where(mask, var, np.nan), -1, keepdims=True)
    return np.maximum(var, 1e-5 * np.where(median > 0, median, 1))


def _leave_one_out(var, df, kept) -> tuple[np.ndarray, np.ndarray]:
    """(d0, s0²) per row (..., rows): `fit_f_dist` of the kept rows other than that row, with s0² the limit where
    d0 = inf (module docstring)."""
    others = kept[..., None, :] & ~np.eye(var.shape[-1], dtype=bool)  # (..., rows, rows)
    return fit_f_dist(var[..., None, :], df[..., None, :], others, limit=True)


def squeeze(var, df, d0, s0) -> np.ndarray:
    """The moderated variance per row, (d0·s0² + df·var) / (d0 + df): var itself where d0 is 0, s0² where d0 is inf."""
    with np.errstate(invalid="ignore"):  # inf / inf where d0 is inf
        return np.where(np.isinf(d0), s0, (d0 * s0 + df * var) / (d0 + df))


def moderate_paired(var, n, mask=True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(moderated variance, the t's df, d0) per row (..., rows) of paired differences with variance `var` (ddof 1)
    over `n` seeds each, the rows in `mask` with 2 or more seeds fitted together (var itself where no prior is used)."""
    df = np.asarray(n, float) - 1
    d0, s0, _ = fit_prior(var, df, np.asarray(mask) & (df >= 1))
    return squeeze(var, df, d0, s0), df + d0, d0


def blocked_t(x, leader: int, moderate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Δ, p, df, se) of every variant against variant `leader`, from the seed-blocked model of the whole field (a
    race's eliminations, ablate.study.race): x is (variants, seeds), NaN where a variant has not run a seed.

    - **The model**: x = variant + seed + noise of the variant's own variance, fitted by weighted least squares to
      every run of the field, so a seed's shift (the data order and split it fixes for every variant) is estimated
      from all variants, not from the leader's run alone as a paired difference does. Δ is a variant's effect less
      the leader's. The weights (`variant_weights` of the moderated variances below, REWEIGHT refits from least
      squares) keep an outlying variant (a bimodal one) from carrying its swings into the seed shifts, and no
      variant from weighing more than a typical one; alike variants weigh alike (moderated variances barely differ
      where raw ones on 1 or 2 df scatter by chance).
    - **Each variant's variance** is its residuals' sum of squares over their degrees of freedom, Σ (1 − leverage)
      over its runs (so the field's residual df, runs − variants − seeds + 1, are shared out, and E s² = σ² when
      the weights are right), moderated across the field as `moderate_paired` does (fit_prior, robust to outlying
      variants), with shared = 0: residuals of different variants hardly correlate, so the prior's df grow with
      the field, where differences to one leader cap them near 4.
    - **The t** of the contrast's estimate, whose variance is Σ g² s̃_j² over the runs (g: the contrast's weights
      on each run, variant j's), on Satterthwaite's df (Welch's t for a full table; with two variants exactly the
      paired t).
    A variant with fewer than 2 runs or no residual df (its seeds shared with no other variant), and the leader
    itself, get NaN (never decided). se: the contrast's standard error (what a race's seeds estimate scales)."""
    x = np.asarray(x, float)
    delta, p, df_t, se = (np.full(len(x), np.nan) for _ in range(4))
    fitted = np.flatnonzero((~np.isnan(x)).sum(1) >= 2)
    if leader not in fitted or len(fitted) < 2:
        return delta, p, df_t, se
    sub = x[fitted]
    variant, seed = np.nonzero(~np.isnan(sub))
    seed, y, k = np.unique(seed, return_inverse=True)[1], sub[variant, seed], len(fitted)
    design = np.zeros((len(y), k + seed.max()))
    design[np.arange(len(y)), variant] = 1
    design[seed > 0, k + seed[seed > 0] - 1] = 1  # seed 0's shift is absorbed by the variant effects
    weight = np.ones(k)
    for _ in range(REWEIGHT + 1):
        w = weight[variant]
        inverse = np.linalg.pinv(design.T @ (design * w[:, None]))
        beta = inverse @ design.T @ (w * y)
        residual = y - design @ beta
        df = np.bincount(variant, 1 - w * np.einsum("ij,jk,ik->i", design, inverse, design), k)
        ok = df > 1e-9  # a variant whose runs the fit meets exactly (its seeds no other variant ran) has no variance
        df = np.where(ok, df, 1.0)
        var = np.where(ok, np.bincount(variant, residual**2, k) / df, 0.0)
        d0, s0, _ = fit_prior(var, df, ok, shared=0.0)
        weight = np.where(ok, variant_weights(np.where(ok, squeeze(var, df, d0, s0), np.nan)), 1.0)
    if moderate:
        var, df = squeeze(var, df, d0, s0), df + d0
    at = int(np.flatnonzero(fitted == leader)[0])
    contrast = np.eye(k, design.shape[1]) - np.eye(k, design.shape[1])[at]  # (variants, params): b_i − b_leader
    g = (design * w[:, None]) @ inverse @ contrast.T  # (runs, variants): Δ_i = Σ g[:, i] y
    a = np.stack([np.bincount(variant, g[:, i] ** 2, k) for i in range(k)])  # (variants, their runs' variants)
    se2 = a @ var
    with np.errstate(invalid="ignore", divide="ignore"):
        dfs = se2**2 / ((a * var) ** 2 / df).sum(1)
        ps = 2 * special.stdtr(dfs, -np.abs(contrast @ beta) / np.sqrt(se2))
    effect = contrast @ beta
    untestable = ~ok | ~ok[at]
    ps[untestable], dfs[untestable], effect[untestable], se2[untestable] = np.nan, np.nan, np.nan, np.nan
    ps[at], dfs[at], se2[at] = np.nan, np.nan, np.nan
    delta[fitted], p[fitted], df_t[fitted], se[fitted] = effect, ps, dfs, np.sqrt(se2)
    return delta, p, df_t, se


def variant_weights(var) -> np.ndarray:
    """Weights of `blocked_t`'s refits, per variant (last axis): 1 / its (moderated) residual variance, no larger
    than 1 / the median variant's."""
    scale = np.maximum(var, np.nanmedian(var, -1, keepdims=True))  # NaN: a variant without a variance
    with np.errstate(divide="ignore"):
        return np.where(scale > 0, 1 / scale, 1.0)  # all variances 0: equal weights
