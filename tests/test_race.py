"""`--race` (ablate.study.race): the elimination rule on hand-made rows, then races through the real study loop and
storage (SQLite) on a simulated objective whose truth is known, and one tiny real sweep."""

import numpy as np
import optuna
import pytest
from helpers import STORAGE, write_sweep
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from test_until_decided import SimTarget, sim_sweep

from ablate.results.summary import show_results
from ablate.study.decide import PLAN, ROUND, first_look, look_alpha, plan_round
from ablate.study.engine import run_study
from ablate.study.race import eliminated, look, plan_race, race_summary, runs_of
from ablate.sweep import main as sweep

URL = "sqlite:///runs/race.db"
TRUTH = {
    "top": ("normal", 0.72, 0.004),
    "near": ("normal", 0.7195, 0.002),  # 0.05 points below: equivalent within the margin of 1 point
    "far": ("normal", 0.60, 0.004),  # 12 points below: out at the first look
    "mid": ("normal", 0.70, 0.006),  # 2 points below: out once a few seeds show it
    "bimodal": ("bimodal", 0.5, 0.75, 0.40, 0.01),
}


def row(variant: str, values) -> dict:
    return {
        "variant": variant,
        "seeds": {str(k): float(x) for k, x in enumerate(values)},
        "mean": float(np.mean(values)),
    }


def test_a_row_decided_worse_than_the_leader_leaves_the_field_and_the_p_is_the_paired_t():
    leader, worse = [0.70, 0.72, 0.71], [0.62, 0.65, 0.63]
    rows = [row("worse", worse), row("leader", leader)]
    best, field, out = look(rows, set(), margin=1.0, alpha=0.05, direction="maximize")
    assert best["variant"] == "leader" and out == ["worse"] and [r["variant"] for r in field] == ["leader"]
    assert rows[0]["p_value"] == pytest.approx(scipy_stats.ttest_rel(worse, leader).pvalue)  # one comparison
    assert rows[0]["delta"] == pytest.approx(100 * (np.mean(worse) - np.mean(leader)))


def test_the_leader_is_the_best_of_the_field_and_an_eliminated_row_never_comes_back():
    rows = [row("gone", [0.80, 0.80, 0.81]), row("a", [0.70, 0.72, 0.71]), row("b", [0.70, 0.719, 0.712])]
    best, field, out = look(rows, {"gone"}, margin=1.0, alpha=0.05, direction="maximize")
    assert best["variant"] == "b" and {r["variant"] for r in field} == {"a", "b"} and out == []
    assert "verdict" not in rows[0]  # not compared at all: out of the field
    best, _, _ = look(rows, {"gone"}, margin=1.0, alpha=0.05, direction="minimize")
    assert best["variant"] == "a"  # the leader follows the direction


def test_holm_runs_over_the_field_so_a_larger_field_eliminates_less():
    rng = np.random.default_rng(2)
    leader = 0.70 + rng.normal(0, 0.01, 4)
    marginal = leader - 0.02 + rng.normal(0, 0.008, 4)  # p between α / 4 and α
    p = scipy_stats.ttest_rel(marginal, leader).pvalue
    assert 0.05 / 4 < p < 0.05
    alone = [row("leader", leader), row("marginal", marginal)]
    assert look(alone, set(), margin=None, alpha=0.05, direction="maximize")[2] == ["marginal"]
    others = [row(f"null{i}", leader + 0.018 + rng.normal(0, 0.002, 4)) for i in range(3)]  # 0.2 points below
    crowd = [row("leader", leader + 0.02), row("marginal", marginal + 0.02), *others]
    best, field, out = look(crowd, set(), margin=None, alpha=0.05, direction="maximize")
    compared = [r for r in crowd if r is not best]
    assert [r["p_adjusted"] for r in compared] == pytest.approx(
        list(multipletests([r["p_value"] for r in compared], method="holm")[1])
    )  # Holm over the field of this look, whatever the test
    assert sorted(out) == sorted(r["variant"] for r in compared if r["p_adjusted"] < 0.05 and r["delta"] < 0)
    assert "marginal" not in out  # alone it was out


def test_equivalent_and_eliminated_rows_get_no_seed_open_ones_one_paired_with_the_leader():
    rows = [
        row("leader", [0.700, 0.720, 0.710]),
        row("same", [0.6999, 0.7199, 0.7099]),
        row("far", [0.50, 0.52, 0.51]),
        row("open", [0.69, 0.73, 0.70]),
    ]
    best, field, out = look(rows, set(), margin=1.0, alpha=0.05, direction="maximize")
    verdicts = {r["variant"]: r["verdict"] for r in rows}
    assert verdicts == {"leader": "baseline", "same": "equivalent", "far": "worse", "open": "undecided"}
    assert out == ["far"]
    used = {r["variant"]: {0, 1, 2} for r in rows}
    assert plan_round(field, best, used, 8, futility=False) == {"open": [3], "leader": [3]}


def test_the_race_ends_only_with_a_leader_on_max_seeds_seeds():
    rows = [row("lucky", [0.75, 0.76]), row("far", [0.40, 0.41]), row("close", [0.74, 0.752])]
    best, field, out = look(rows, set(), margin=5.0, alpha=0.05, direction="maximize")
    assert best["variant"] == "lucky" and all(r["verdict"] != "undecided" for r in field if r is not best)
    used = {r["variant"]: {0, 1} for r in rows}
    assert plan_round(field, best, used, 8) == {}  # nothing open ...
    assert plan_race(field, best, used, 8) == {"lucky": [2]}  # ... but a lead on 2 seeds may be luck
    assert plan_race(field, best, {**used, "lucky": set(range(8))}, 8) == {}


@pytest.fixture(scope="module")
def raced(tmp_path_factory):
    """One race of TRUTH through the real loop on SQLite (built once for the module)."""
    root = tmp_path_factory.mktemp("raced")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        target = SimTarget(TRUTH)
        sweep = sim_sweep(tuple(TRUTH), max_seeds=10, until_decided=False, race=True, name="race")
        assert run_study(sweep, target, URL) == 0
        study = optuna.load_study(study_name="race", storage=URL)
        return {"root": root, "runs": target.runs, "study": study, "sweep": sweep}


def test_the_race_keeps_the_best_and_eliminates_the_worse(raced):
    out = eliminated(raced["study"])
    assert out["a=far"] == 1 and "a=mid" in out  # far at the first look, mid once its seeds show it
    assert "a=top" not in out and "a=near" not in out
    runs = [v for v, _, _ in raced["runs"]]
    assert runs.count("a=far") == 3  # the planned seeds, never one more
    assert runs.count("a=top") > 3  # the leader got seeds to pair the open rows
    assert raced["study"].user_attrs["verdicts"]["race"] is True


def test_an_eliminated_variant_gets_no_seed_after_its_look(raced):
    done = raced["study"].get_trials()
    for variant, k in eliminated(raced["study"]).items():
        assert not [t for t in done if t.user_attrs.get("variant") == variant and t.user_attrs.get(ROUND, 0) >= k]
    added = [t for t in done if ROUND in t.user_attrs]
    assert added and all(len(t.user_attrs[PLAN]) == 1 for t in added)  # one trial per added (variant, seed)
    counted = [t for t in done if ROUND not in t.user_attrs]
    assert len(counted) == len(TRUTH)  # added seeds never count towards n_trials


def test_the_race_looks_at_the_alpha_per_look_of_until_decided(raced):
    v = raced["study"].user_attrs["verdicts"]
    assert v["looks"] == [first_look(3), 10] and v["look_alpha"] == look_alpha(0.05, 3, 10)


def test_the_sweep_end_names_the_leader_the_equivalents_and_what_each_eliminated_variant_cost(
    raced, capsys, monkeypatch
):
    monkeypatch.chdir(raced["root"])
    show_results(raced["study"], raced["root"] / "runs/race", URL)
    text = capsys.readouterr().out
    assert "race: leader " in text and "--until-decided left" not in text
    summary = race_summary(raced["study"])
    leader = summary.splitlines()[0]
    assert "a=top" in leader or "a=near" in leader
    runs = runs_of(raced["study"].get_trials())
    assert f"a=far ({runs['a=far']} runs, look 1)" in summary and runs["a=far"] == 3
    assert f"runs: {len(raced['runs'])} in all" in summary  # every run the target trained


def test_a_larger_n_trials_adds_new_variants_and_prunes_a_draw_of_an_eliminated_one(raced, monkeypatch):
    monkeypatch.chdir(raced["root"])
    study = raced["study"]
    params = next(t.params for t in study.get_trials() if t.user_attrs.get("variant") == "a=far")
    study.enqueue_trial(params)  # the sampler drawing an eliminated variant again
    target = SimTarget(TRUTH)
    sweep = raced["sweep"]
    more = type(sweep)(**{**sweep.__dict__, "n_trials": sweep.n_trials + 1})
    assert run_study(more, target, URL) == 0
    assert "a=far" not in [v for v, _, _ in target.runs]  # no seed trained for it
    again = [t for t in optuna.load_study(study_name="race", storage=URL).get_trials() if t.params == params]
    assert again[-1].state == optuna.trial.TrialState.PRUNED
    assert again[-1].user_attrs["fail_reason"] == "eliminated from the race at look 1"


def test_race_with_until_decided_or_a_flag_that_is_not_a_bool_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_sweep()
    assert sweep([path, "--race", "--until-decided"]) == 2
    err = capsys.readouterr().err
    assert "study.race (--race) and study.until_decided (--until-decided)" in err and "choose one" in err
    assert sweep([write_sweep("bad.yaml", race="yes")]) == 2
    assert "study.race must be true or false; got 'yes'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before any study or run


def test_a_tiny_real_sweep_races_and_ends_with_the_race(tmp_path, monkeypatch, capsys):
    """A real Trainer, real runs: 2 variants x 2 seeds, then the race's rounds up to 3 seeds a variant."""
    monkeypatch.chdir(tmp_path)
    path = write_sweep(seeds=(0, 1))
    assert sweep([path, "--race", "--max-seeds", "3", "--margin", "1", "--storage", STORAGE]) == 0
    out = capsys.readouterr().out
    assert "race: leader model.neck.fusion=" in out or "race: leader fusion=" in out
    study = optuna.load_study(study_name="t", storage=STORAGE)
    assert study.user_attrs["verdicts"]["race"] is True
    per_variant = {}
    for t in study.get_trials():
        per_variant.setdefault(t.user_attrs["variant"], []).extend(t.user_attrs["seeds"])
    assert all(2 <= len(s) <= 3 and len(set(s)) == len(s) for s in per_variant.values())
