"""ablate.stats.verdicts on simulated truth: normal runs with a known Δ and bimodal runs like the built-in data."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ablate.stats.verdicts import (
    MAX_SEEDS,
    ROW_FIELDS,
    annotate,
    check_margin,
    compare,
    holm,
    seeds_needed,
    seeds_to_separate,
    verdict,
)


def paired_runs(rng, delta, seeds, seed_sd=0.03, noise=0.01):
    """(row, baseline) {seed: value}: a seed moves both variants alike (init, data order), then noise."""
    shared = rng.normal(0.7, seed_sd, len(seeds))
    base = {str(s): float(v + rng.normal(0, noise)) for s, v in zip(seeds, shared)}
    row = {str(s): float(v + delta + rng.normal(0, noise)) for s, v in zip(seeds, shared)}
    return row, base


def bimodal_runs(rng, q, seeds):
    """Like our data: with probability q a run learns the scene (~0.75), else it stays near 0.40."""
    return {str(s): float(np.where(rng.random() < q, 0.75, 0.40) + rng.normal(0, 0.01)) for s in seeds}


def decide(row, base, *, margin=None, direction="maximize"):
    result = compare(row, base, margin=margin)
    return result, verdict(result, result["p_value"], direction=direction)


def test_holm_matches_a_hand_step_down():
    p = [0.01, 0.04, 0.03, None, 0.005]
    tested = sorted((v, i) for i, v in enumerate(p) if v is not None)
    m, running, expected = len(tested), 0.0, list(p)
    for rank, (v, i) in enumerate(tested):  # step down: (m - rank) * p, never below the previous, at most 1
        running = max(running, min(1.0, (m - rank) * v))
        expected[i] = running
    got = holm(p)
    assert got[3] is None
    assert all(abs(g - e) < 1e-12 for g, e in zip(got, expected) if e is not None)
    assert expected == [0.03, 0.06, 0.06, None, 0.02]  # the hand calculation itself, written out
    assert holm([]) == [] and holm([None]) == [None]
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 7, 30):  # ties and products above 1 included
        q = list(np.round(rng.random(m) ** 3, 2))
        assert holm(q) == pytest.approx(list(multipletests(q, method="holm")[1]), abs=1e-12)


@pytest.mark.parametrize(
    "row_seeds, test",
    [(range(5), "paired"), (range(2), "paired"), (range(4, 9), "welch"), (range(10, 15), "welch")]
    + [(range(4, 7), "welch")],
)
def test_paired_exactly_when_two_seeds_are_shared(row_seeds, test):
    rng = np.random.default_rng(0)
    base = {str(s): float(rng.normal(0.7, 0.02)) for s in range(5)}
    row = {str(s): float(rng.normal(0.72, 0.02)) for s in row_seeds}
    result = compare(row, base, margin=1.0)
    assert result["test"] == test
    x, y = np.array(list(row.values())) * 100, np.array(list(base.values())) * 100
    if test == "paired":
        shared = sorted(set(row) & set(base))
        diffs = [100 * (row[s] - base[s]) for s in shared]
        assert result["p_value"] == pytest.approx(scipy_stats.ttest_1samp(diffs, 0).pvalue, rel=1e-12)
        assert result["delta"] == pytest.approx(np.mean(diffs)) and result["n_pairs"] == len(shared)
    else:
        assert result["p_value"] == pytest.approx(scipy_stats.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-12)
        from statsmodels.stats.weightstats import CompareMeans, DescrStatsW  # the reference for Welch's df

        assert result["df"] == pytest.approx(CompareMeans(DescrStatsW(x), DescrStatsW(y)).dof_satt(), rel=1e-12)
        assert result["delta"] == pytest.approx(x.mean() - y.mean()) and result["n_pairs"] == 0


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    for _ in range(50):
        result = compare(*paired_runs(rng, 0.004, range(6)), margin=1.0)
        lo, hi = result["ci"]
        assert (result["p_equivalence"] < 0.05) == (-1.0 < lo and hi < 1.0)
        assert lo < result["delta"] < hi


@pytest.mark.parametrize(
    "delta, direction, expected",
    [
        (0.05, "maximize", "better"),
        (-0.05, "maximize", "worse"),
        (0.05, "minimize", "worse"),
        (-0.05, "minimize", "better"),
    ],
)
def test_a_large_true_difference_is_decided_with_8_seeds(delta, direction, expected):
    rng = np.random.default_rng(1)
    assert decide(*paired_runs(rng, delta, range(8)), direction=direction)[1] == expected
    q_row, q_base = (0.9, 0.1) if delta > 0 else (0.1, 0.9)
    row, base = bimodal_runs(rng, q_row, range(8)), bimodal_runs(rng, q_base, range(8, 16))
    assert decide(row, base, direction=direction)[1] == expected


def test_identical_distributions_with_many_seeds_are_equivalent():
    rng = np.random.default_rng(2)
    result, decision = decide(*paired_runs(rng, 0.0, range(30)), margin=1.0)
    assert decision == "equivalent" and result["test"] == "paired"
    assert decide(*paired_runs(rng, 0.0, range(30)))[1] == "undecided"  # without a margin nothing shows sameness


def test_tiny_n_is_undecided_with_a_finite_seed_estimate():
    rng = np.random.default_rng(4)
    row, base = bimodal_runs(rng, 0.6, range(3)), bimodal_runs(rng, 0.4, range(3, 6))
    result, decision = decide(row, base, margin=1.0)
    needed = seeds_needed(result, margin=1.0)
    assert decision == "undecided" and result["test"] == "welch"
    assert isinstance(needed, int) and 3 < needed <= MAX_SEEDS
    assert seeds_needed(result | {"delta": 0.0}) is None  # Δ = 0 and no margin: nothing could be shown


@pytest.mark.parametrize("kind", ["paired normal", "welch bimodal", "paired bimodal"])
def test_false_verdicts_on_a_null_comparison_stay_near_alpha(kind):
    rng, reps, wrong = np.random.default_rng(5), 400, 0
    for _ in range(reps):
        if kind == "paired normal":
            row, base = paired_runs(rng, 0.0, range(5))
        else:
            row, base = bimodal_runs(rng, 0.5, range(5)), bimodal_runs(rng, 0.5, range(5 if "paired" in kind else 9))
        wrong += decide(row, base, margin=1.0)[1] in ("better", "worse")
    assert wrong / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)  # α plus three binomial sds


@pytest.mark.parametrize("delta, margin", [(0.02, None), (0.0, 1.0)])
def test_seeds_needed_reaches_the_promised_power(delta, margin):
    """With the truth equal to the estimate, a study of seeds_needed seeds decides about 80 % of the time."""
    rng, spread = np.random.default_rng(6), 100 * 0.016 * math.sqrt(2)  # sd of a difference, points
    truth = {"test": "paired", "delta": 100 * delta, "sd": spread, "n_pairs": 3, "n": 3, "n_base": 3}
    n = seeds_needed(truth, margin=margin)
    decided = [
        decide(*paired_runs(rng, delta, range(n), noise=0.016), margin=margin)[1] != "undecided" for _ in range(300)
    ]
    assert 0.8 - 0.1 < np.mean(decided) < 0.8 + 0.12  # the TOST power is a lower bound: slack above


def test_annotate_sets_every_field_and_corrects_over_the_non_baseline_rows():
    rng = np.random.default_rng(7)
    runs = [paired_runs(rng, d, range(6)) for d in (0.05, 0.01, 0.0)]
    rows = [{"variant": "a=0", "seeds": runs[0][1]}] + [
        {"variant": f"a={i + 1}", "seeds": r} for i, (r, _) in enumerate(runs)
    ]
    rows.append({"variant": "a=9", "seeds": {"0": 0.5}})  # one seed: no test, still a verdict
    annotate(rows, rows[0], margin=1.0, alpha=0.05)
    assert all(set(ROW_FIELDS) <= set(r) for r in rows)
    assert rows[0]["verdict"] == "baseline" and rows[0]["delta"] == 0.0
    assert [r["p_adjusted"] for r in rows[1:]] == holm([r["p_value"] for r in rows[1:]])
    assert rows[1]["verdict"] == "better" and rows[1]["test"] == "paired, moderated"  # 3 rows: moderated
    assert rows[-1]["verdict"] == "undecided" and rows[-1]["test"] is None and rows[-1]["seeds_needed"] is None
    assert all(r["seeds_needed"] is None for r in rows if r["verdict"] != "undecided")


@pytest.mark.parametrize("margin", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_a_margin_that_is_not_positive_is_a_clear_error(margin):
    with pytest.raises(ValueError, match=r"margin must be a positive number of points .* got " + repr(margin)[:3]):
        check_margin(margin)
    with pytest.raises(ValueError, match="margin must be a positive number"):
        annotate([{"variant": "a=1", "seeds": {"0": 0.5, "1": 0.6}}], {"variant": "a=1", "seeds": {}}, margin=margin)


def test_seeds_to_separate_a_variant_from_a_race_leader_worked_by_hand():
    """Δ −2.5, se 1 on 2 seeds each, normal df, two-sided α 0.002: the se at k seeds each is √(2/k), and the power
    Φ(Δ/se − z) with z = Φ⁻¹(0.999) = 3.0902 is Φ(2.5·√2 − 3.0902) = Φ(0.446) = 0.67 at 4, Φ(0.862) = 0.81 at 5."""
    assert seeds_to_separate(-2.5, 1.0, 1e9, 2, 2, alpha=0.002) == 5
    assert seeds_to_separate(2.5, 1.0, 1e9, 2, 2, alpha=0.002) == 5  # a lead on fewer seeds: told apart alike
    # the leader keeps its 8 seeds: se 1 at (2, 8) makes se √((1/k + 1/8) / 0.625) at k, √0.4 = 0.632 at 8, and
    # Φ(2.5/0.632 − 3.0902) = Φ(0.863) = 0.806, where at 7 Φ(2.5/0.655 − 3.0902) = 0.77; Δ −2 needs the leader to
    # grow too: se √((2/k) / 0.625), Φ(2/0.516 − 3.0902) = 0.78 at 12, Φ(2/0.496 − 3.0902) = 0.83 at 13
    assert seeds_to_separate(-2.5, 1.0, 1e9, 2, 8, alpha=0.002) == 8
    assert seeds_to_separate(-2.0, 1.0, 1e9, 2, 8, alpha=0.002) == 13
    assert seeds_to_separate(-0.01, 1.0, 30, 2, 2, alpha=0.002) == MAX_SEEDS  # out of reach: "that many or more"
    assert seeds_to_separate(-2.5, float("nan"), 30, 2, 2, alpha=0.002) is None  # no se: unknown


def test_the_seeds_estimate_scales_the_seed_blocked_se_as_the_t_does():
    """The estimate assumes the contrast's variance goes as 1/n + 1/n_leader: measured on blocked_t itself, over
    many fields of 6 alike variants sharing seed shifts, a variant on 2 seeds against a leader on 8, then on 8; not
    smaller than it is (that would stop seeding a variant the t could still put out)."""
    from ablate.stats.moderated import blocked_t

    rng = np.random.default_rng(8)

    def mean_se2(seeds: int) -> float:
        se2 = []
        for _ in range(400):
            x = rng.normal(0, 1, 8) + rng.normal(0, 1, (6, 8))
            x[1, seeds:] = np.nan
            se2.append(blocked_t(x, 0, moderate=False)[3][1] ** 2)
        return float(np.mean(se2))

    projected = (1 / 8 + 1 / 8) / (1 / 2 + 1 / 8)  # 0.4; measured 0.36: the estimate errs towards more seeds
    assert 0.8 * projected < mean_se2(8) / mean_se2(2) < 1.05 * projected
