"""ablate.stats.factorial: permutation p-values worked out by hand, Holm over the terms, interactions only with
residual df to test them, and the table that prints which test each term used."""

import itertools
import math

import numpy as np
import pytest
from statsmodels.stats.anova import anova_lm

from ablate.results.formats import decidable_note
from ablate.stats import factorial
from ablate.stats.factorial import MIN_RESIDUAL_DF, factorial_effects
from ablate.stats.verdicts import holm


def factorial_rows(rng, effect, seeds=4, noise=0.015):
    """A 2×2×2 study over dotted keys; effect(settings) is the true mean of a cell."""
    rows = []
    for norm, fusion, pooling in itertools.product(("bn", "none"), ("concat", "sum"), ("true", "false")):
        variant = f"model.neck.norm={norm} model.neck.fusion={fusion} model.neck.image_pooling={pooling}"
        mean = effect({"norm": norm, "fusion": fusion, "pooling": pooling})
        rows.append({"variant": variant, "seeds": {str(s): float(mean + rng.normal(0, noise)) for s in range(seeds)}})
    return rows


def called_terms(terms: list[dict]) -> dict:
    return {t["term"]: t for t in terms if t["p_value"] is not None}


def test_a_paired_design_is_a_sign_flip_test_within_seeds_worked_by_hand():
    # a=1 vs a=2 on seeds 0 and 1 (shared, so the seed is a block): differences 2 and 4, paired t = 3, F = 9.
    # Within seeds the only orders swap the two runs of a seed or not: differences (±2, ±4), F = 9 when the signs
    # agree and 1/9 when not, so p = 2/4; and the two orders with agreeing signs map the contrast onto itself.
    rows = [{"variant": "a=1", "seeds": {"0": 1.0, "1": 2.0}}, {"variant": "a=2", "seeds": {"0": 3.0, "1": 6.0}}]
    (term,) = factorial_effects(rows)
    assert term["F"] == pytest.approx(9.0) and term["df"] == 1
    assert term["p_value"] == pytest.approx(0.5) and term["p_floor"] == pytest.approx(0.5)
    assert term["test"] == "permutation within seeds, exact (4)"


def test_unpaired_runs_are_a_two_sample_permutation_test_worked_by_hand():
    # seeds not shared: one block of 4 runs, 4! = 24 orders. {1, 2} vs {3, 6} is the most extreme of the 3 ways to
    # split 4 values 2 + 2 (F grows with the difference of the halves' means: 3 vs 2 and 1); the orders that give
    # this split or its mirror: 2 × 2! × 2! = 8 of 24.
    rows = [{"variant": "a=1", "seeds": {"0": 1.0, "1": 2.0}}, {"variant": "a=2", "seeds": {"2": 3.0, "3": 6.0}}]
    (term,) = factorial_effects(rows)
    assert term["p_value"] == pytest.approx(8 / 24) and term["p_floor"] == pytest.approx(8 / 24)
    assert term["test"] == "permutation, exact (24)"
    assert term["F"] == pytest.approx(((1.5 - 4.5) ** 2) / ((0.5 + 4.5) / 2))  # (Σ n (mean - grand)²) / (SSW / 2)


def test_one_seed_of_a_2x2x2_tests_main_effects_exactly_and_cannot_call_any():
    rows = factorial_rows(np.random.default_rng(3), lambda s: 0.70 + 0.18 * (s["norm"] == "bn"), seeds=1, noise=0.03)
    terms = factorial_effects(rows)
    main = called_terms(terms)
    assert set(main) == {"model.neck.norm", "model.neck.fusion", "model.neck.image_pooling"}
    assert {t["test"] for t in main.values()} == {f"permutation, exact ({math.factorial(8)})"}
    # a 4 + 4 split of 8 runs: the split and its mirror, 2 × 4! × 4! = 1152 of 8! orders, 1/35
    assert all(t["p_floor"] == pytest.approx(1 / 35) for t in main.values())
    assert main["model.neck.norm"]["p_anova"] < 0.05 / 3  # the normal-theory F would call it ...
    assert main["model.neck.norm"]["p_value"] >= 1 / 35 and not any(t["significant"] for t in terms)  # ... not this
    note = decidable_note(terms)
    assert "0.0286" in note and "Holm over 3 terms needs one below 0.0167" in note
    assert decidable_note(factorial_effects(factorial_rows(np.random.default_rng(3), lambda s: 0.7, seeds=2))) is None


def test_interactions_need_min_residual_df_else_they_are_listed_not_testable():
    one_seed = factorial_effects(factorial_rows(np.random.default_rng(1), lambda s: 0.7, seeds=1))
    untested = [t for t in one_seed if t["p_value"] is None]
    assert [t["term"] for t in untested] == [
        "model.neck.fusion × model.neck.image_pooling",
        "model.neck.fusion × model.neck.norm",
        "model.neck.image_pooling × model.neck.norm",
    ]
    assert {t["test"] for t in untested} == {f"not testable: leaves 1 residual df (needs {MIN_RESIDUAL_DF})"}
    assert all(t["F"] is None and t["p_adjusted"] is None and not t["significant"] for t in untested)
    # a 2×2 with 2 runs a cell: shared seeds spend one df on the seed block, 8 - 4 - 1 = 3 < 4: not testable;
    # every run its own seed (no block): 8 - 4 = 4 residual df, tested
    cells = [{"a": a, "b": b} for a, b in itertools.product("xy", "pq")]
    shared = [
        {"variant": f"a={c['a']} b={c['b']}", "seeds": {"0": i + 0.1, "1": i * i + 0.5}} for i, c in enumerate(cells)
    ]
    own = [{**r, "seeds": {f"{i}{s}": v for s, v in r["seeds"].items()}} for i, r in enumerate(shared)]
    assert "a × b" not in called_terms(factorial_effects(shared)) and "a × b" in called_terms(factorial_effects(own))
    assert [t["test"] for t in factorial_effects(shared) if t["term"] == "a × b"] == [
        "not testable: leaves 3 residual df (needs 4)"
    ]


def test_a_variant_on_seeds_of_its_own_drops_the_seed_block_instead_of_the_table():
    rows = [
        {"variant": "a=1", "seeds": {"0": 0.1, "1": 0.2}},
        {"variant": "a=2", "seeds": {"0": 0.5, "1": 0.7}},
        {"variant": "a=3", "seeds": {"2": 0.4}},  # its only run's seed is nobody else's: a block would absorb it
    ]
    (term,) = factorial_effects(rows)
    assert term["test"] == "permutation, exact (120)" and term["df"] == 2


def test_holm_over_the_terms_decides_which_are_significant():
    rows = factorial_rows(np.random.default_rng(5), lambda s: 0.70 + 0.012 * (s["norm"] == "bn"), seeds=3)
    terms = called_terms(factorial_effects(rows, alpha=0.05))
    assert len(terms) == 6  # 24 runs: 3 main effects and 3 interactions
    p = [t["p_value"] for t in terms.values()]
    assert [t["p_adjusted"] for t in terms.values()] == pytest.approx(holm(p))
    assert [t["significant"] for t in terms.values()] == [t["p_adjusted"] < 0.05 for t in terms.values()]
    norm = terms["model.neck.norm"]
    assert norm["p_value"] < 0.05 < norm["p_adjusted"]  # called alone, not once corrected over the six
    loose = called_terms(factorial_effects(rows, alpha=0.5))
    assert loose["model.neck.norm"]["significant"] and loose["model.neck.norm"]["p_value"] == norm["p_value"]


def test_the_permutation_p_is_reproducible_and_close_to_the_f_test_on_normal_runs():
    rows = factorial_rows(np.random.default_rng(6), lambda s: 0.70 + 0.01 * (s["fusion"] == "sum"), seeds=5)
    first, again = factorial_effects(rows), factorial_effects(rows)
    assert first == again  # a fixed RNG: the same table every time
    assert {t["test"] for t in first} == {f"permutation within seeds ({factorial.PERMUTATIONS} random)"}
    for t in first:  # normal noise, 40 runs: the permutation p and the F p agree within Monte Carlo error
        assert t["p_value"] == pytest.approx(t["p_anova"], abs=0.02 + 0.2 * t["p_anova"])
    assert all(t["p_floor"] == pytest.approx(1 / (factorial.PERMUTATIONS + 1)) for t in first)


def test_the_seed_block_removes_a_shift_every_variant_shares():
    rng = np.random.default_rng(8)
    rows = factorial_rows(rng, lambda s: 0.70 + 0.01 * (s["norm"] == "bn"), seeds=4, noise=0.003)
    shift = {str(s): float(rng.normal(0, 0.05)) for s in range(4)}  # a seed's data order moves every variant
    shifted = [{**r, "seeds": {s: v + shift[s] for s, v in r["seeds"].items()}} for r in rows]
    norm = called_terms(factorial_effects(shifted))["model.neck.norm"]
    assert norm["significant"] and norm["effect"] == pytest.approx(1.0, abs=0.3)
    assert {lv["value"]: lv["mean"] for lv in norm["levels"]}["bn"] == pytest.approx(
        np.mean([v for r in shifted if "norm=bn" in r["variant"] for v in r["seeds"].values()])
    )  # level means averaged over the seeds too


def test_factorial_finds_the_main_effect_and_not_the_others():
    rows = factorial_rows(np.random.default_rng(11), lambda s: 0.70 + 0.05 * (s["norm"] == "bn"))
    terms = called_terms(factorial_effects(rows))
    assert terms["model.neck.norm"]["p_adjusted"] < 0.01 and terms["model.neck.norm"]["significant"]
    assert terms["model.neck.norm"]["effect"] == pytest.approx(5.0, abs=1.5)
    assert {lv["value"]: lv["n"] for lv in terms["model.neck.norm"]["levels"]} == {"bn": 16, "none": 16}
    assert not any(t["significant"] for name, t in terms.items() if name != "model.neck.norm")
    assert "model.neck.fusion × model.neck.image_pooling" in terms  # 32 runs: room for pairwise interactions


def test_factorial_detects_an_injected_interaction():
    sum_without_pooling = lambda s: 0.70 + 0.06 * (s["fusion"] == "sum" and s["pooling"] == "false")  # noqa: E731
    terms = called_terms(factorial_effects(factorial_rows(np.random.default_rng(9), sum_without_pooling)))
    interaction = terms["model.neck.fusion × model.neck.image_pooling"]
    assert interaction["significant"] and interaction["effect"] == pytest.approx(6.0, abs=2.0)
    assert not terms["model.neck.norm"]["significant"]
    assert not terms["model.neck.fusion × model.neck.norm"]["significant"]


def test_factorial_without_room_for_interactions_keeps_the_main_effects():
    rows = factorial_rows(np.random.default_rng(10), lambda s: 0.7, seeds=1)[:4]  # 2×2 cells, one run each
    terms = factorial_effects(rows)
    assert list(called_terms(terms)) == ["model.neck.fusion", "model.neck.image_pooling"]
    assert "model.neck.fusion × model.neck.image_pooling" in {t["term"] for t in terms}  # listed, not testable
    assert "No term can be called" in decidable_note(terms)  # 4 runs: 24 orders, a split is 8 of them
    assert factorial_effects(rows[:1]) == []  # one cell: nothing varies


def test_the_type_ii_f_is_statsmodels_anova():
    rows = factorial_rows(np.random.default_rng(12), lambda s: 0.7 + 0.02 * (s["pooling"] == "true"), seeds=3)
    import pandas as pd
    import statsmodels.formula.api as smf

    data, names = factorial._observations(rows)  # statsmodels' own OLS and type-II ANOVA of the same model
    fit = smf.ols("y ~ C(x0) + C(x1) + C(x2) + C(seed) + C(x0):C(x1) + C(x0):C(x2) + C(x1):C(x2)", pd.DataFrame(data))
    anova = anova_lm(fit.fit(), typ=2)
    terms = called_terms(factorial_effects(rows)).values()
    assert len(terms) == 6
    for t in terms:
        term = ":".join(f"C(x{names.index(f)})" for f in t["factors"])
        assert t["F"] == pytest.approx(anova.loc[term, "F"]) and t["p_anova"] == pytest.approx(
            anova.loc[term, "PR(>F)"]
        )


def test_the_sweep_end_shows_main_effects_interactions_and_the_test_of_each(capsys, monkeypatch):
    from ablate.cli import make_console
    from ablate.results.terminal import print_effects

    monkeypatch.setenv("COLUMNS", "200")  # every column fits (tests/test_table.py: narrower terminals)
    rows = [
        {"variant": f"a={a} b={b}", "seeds": {"0": v0, "1": v1, "2": v2}}
        for (a, b, v0, v1, v2) in [(1, "x", 0.1, 0.2, 0.15), (1, "y", 0.3, 0.4, 0.3), (2, "x", 0.5, 0.6, 0.5)]
        + [(2, "y", 0.7, 0.9, 0.8)]
    ]
    terms = {t["term"]: t for t in factorial_effects(rows)}
    assert set(terms) == {"a", "b", "a × b"} and terms["a × b"]["p_value"] is not None  # 12 runs: 6 residual df
    assert {lv["value"]: lv["mean"] for lv in terms["a"]["levels"]} == pytest.approx(
        {"1": (0.15 + 1.0 / 3) / 2, "2": (1.6 / 3 + 0.8) / 2}
    )  # level means averaged evenly over b
    print_effects(make_console(stderr=False), list(terms.values()), "val/mIoU", 0.05)
    out = capsys.readouterr().out
    assert "a × b" in out and f"{terms['a']['p_value']:.3g}" in out and f"{terms['a']['effect']:.2f}" in out
    assert "permutation" in out and "Freedman" in out and "Holm" in out
