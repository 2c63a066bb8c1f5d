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
from ablate.study.race import eliminate, eliminated, look, plan_race, race_summary, runs_of
from ablate.study.variants import study_rows
from ablate.sweep import main as sweep

URL = "sqlite:///runs/race.db"
TRUTH = {
    "top": ("normal", 0.72, 0.004),
    "near": ("normal", 0.7195, 0.002),  # 0.05 points below: equivalent within the margin of 1 point
    "far": ("normal", 0.60, 0.004),  # 12 points below: out at the first look
    "mid": ("normal", 0.70, 0.006),  # 2 points below: out once a few seeds show it
    "bimodal": ("bimodal", 0.5, 0.75, 0.40, 0.01),
}
# alike noise in every row, two rows 2.5 and 3 points below the best: the moderated t's prior (the field's common
# spread) decides them on fewer seeds than each row's own t on n - 1 degrees of freedom
FIELD = {
    "top": ("normal", 0.72, 0.004),
    "near": ("normal", 0.7195, 0.004),
    "low": ("normal", 0.695, 0.004),
    "lower": ("normal", 0.69, 0.004),
    "far": ("normal", 0.60, 0.004),
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
    best, field, out = look(rows, set(), margin=1.0, alpha=0.05, direction="maximize", moderate=True)
    assert best["variant"] == "leader" and out == ["worse"] and [r["variant"] for r in field] == ["leader"]
    assert rows[0]["p_value"] == pytest.approx(scipy_stats.ttest_rel(worse, leader).pvalue)  # one comparison
    assert rows[0]["race_p"] == pytest.approx(rows[0]["p_value"])  # two variants: the seed-blocked t is the paired t
    assert rows[0]["delta"] == pytest.approx(100 * (np.mean(worse) - np.mean(leader)))


def test_the_leader_is_the_best_of_the_field_and_an_eliminated_row_never_comes_back():
    rows = [row("gone", [0.80, 0.80, 0.81]), row("a", [0.70, 0.72, 0.71]), row("b", [0.70, 0.719, 0.712])]
    best, field, out = look(rows, {"gone"}, margin=1.0, alpha=0.05, direction="maximize", moderate=True)
    assert best["variant"] == "b" and {r["variant"] for r in field} == {"a", "b"} and out == []
    assert "verdict" not in rows[0]  # not compared at all: out of the field
    best, _, _ = look(rows, {"gone"}, margin=1.0, alpha=0.05, direction="minimize", moderate=True)
    assert best["variant"] == "a"  # the leader follows the direction


def test_holm_runs_over_the_field_so_a_larger_field_eliminates_less():
    rng = np.random.default_rng(2)
    leader = 0.70 + rng.normal(0, 0.01, 4)
    marginal = leader - 0.02 + rng.normal(0, 0.008, 4)  # p between α / 4 and α
    p = scipy_stats.ttest_rel(marginal, leader).pvalue
    assert 0.05 / 4 < p < 0.05
    alone = [row("leader", leader), row("marginal", marginal)]
    assert look(alone, set(), margin=None, alpha=0.05, direction="maximize", moderate=True)[2] == ["marginal"]
    others = [row(f"null{i}", leader + 0.018 + rng.normal(0, 0.002, 4)) for i in range(3)]  # 0.2 points below
    crowd = [row("leader", leader + 0.02), row("marginal", marginal + 0.02), *others]
    best, field, out = look(crowd, set(), margin=None, alpha=0.05, direction="maximize", moderate=True)
    compared = [r for r in crowd if r is not best]
    assert [r["race_p_adjusted"] for r in compared] == pytest.approx(
        list(multipletests([r["race_p"] for r in compared], method="holm")[1])
    )  # Holm over the field of this look
    assert sorted(out) == sorted(r["variant"] for r in compared if r["race_p_adjusted"] < 0.05 and r["delta"] < 0)
    assert "marginal" not in out  # alone it was out


def test_the_seed_blocked_t_eliminates_on_two_seeds_what_the_paired_t_leaves_open():
    """12 variants on 2 seeds, 1 point of run noise and 1 a seed shares; one 6 points below the leader. Its paired
    difference to the leader has 1 df and a moderated prior near 4, so Holm over 11 rows leaves it open; the field's
    seed-blocked t has the field's df and puts it out, and the paired verdict of a row stays its table's."""
    rng = np.random.default_rng(4)
    x = np.array([0.72] + [0.715] * 10 + [0.66])[:, None] + rng.normal(0, 0.01, 2) + rng.normal(0, 0.01, (12, 2))
    rows = [row(f"v{i}", x[i]) for i in range(12)]
    best, field, out = look(rows, set(), margin=1.0, alpha=0.01, direction="maximize", moderate=True)
    assert out == ["v11"] and rows[11]["race_p_adjusted"] < 0.01 and rows[11]["verdict"] == "worse"
    assert rows[11]["p_adjusted"] > 0.05 and rows[11]["test"] == "paired, moderated"  # the paired t: open
    assert all(r["race_p_adjusted"] > 0.01 for r in rows[:11] if r is not best)


def test_equivalent_and_eliminated_rows_get_no_seed_open_ones_one_paired_with_the_leader():
    rows = [
        row("leader", [0.700, 0.720, 0.710]),
        row("same", [0.6999, 0.7199, 0.7099]),
        row("far", [0.50, 0.52, 0.51]),
        row("open", [0.69, 0.73, 0.70]),
    ]
    best, field, out = look(rows, set(), margin=1.0, alpha=0.05, direction="maximize", moderate=True)
    verdicts = {r["variant"]: r["verdict"] for r in rows}
    assert verdicts == {"leader": "baseline", "same": "equivalent", "far": "worse", "open": "undecided"}
    assert out == ["far"]
    used = {r["variant"]: {0, 1, 2} for r in rows}
    assert plan_round(field, best, used, 8, futility=False) == {"open": [3], "leader": [3]}


def test_the_race_ends_only_with_a_leader_on_max_seeds_seeds():
    rows = [row("lucky", [0.75, 0.76]), row("far", [0.40, 0.41]), row("close", [0.74, 0.752])]
    best, field, out = look(rows, set(), margin=5.0, alpha=0.05, direction="maximize", moderate=True)
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


def test_the_race_looks_at_the_alpha_per_look_of_its_seed_blocked_t(raced):
    v = raced["study"].user_attrs["verdicts"]
    assert v["looks"] == [first_look(3), 10] and v["rows"] == len(TRUTH) - 1
    assert v["race_alpha"] == look_alpha(0.05, 3, 10, len(TRUTH) - 1, blocked=True)
    assert v["look_alpha"] == look_alpha(0.05, 3, 10, len(TRUTH) - 1)  # the tables' verdicts stay paired


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


@pytest.fixture(scope="module")
def moderated_and_plain(tmp_path_factory):
    """FIELD raced twice through the real loop on SQLite: study.moderate true (the default) and false
    (--no-moderation): {moderate: (the study, the runs its target trained)}."""
    root, out = tmp_path_factory.mktemp("moderated"), {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for moderate in (True, False):
            target, name = SimTarget(FIELD), f"field-{moderate}"
            sweep = sim_sweep(tuple(FIELD), max_seeds=10, until_decided=False, race=True, name=name, moderate=moderate)
            assert run_study(sweep, target, URL) == 0
            out[moderate] = optuna.load_study(study_name=name, storage=URL), target.runs
    return out


def replay(study, k: int, moderate: bool) -> list[str]:
    """The variants look k of `study` eliminates, taken again by `look` from the trials before round k."""
    before = [t for t in study.get_trials() if t.user_attrs.get(ROUND, 0) < k]
    alpha = look_alpha(0.05, first_look(3), 10, len(FIELD) - 1, moderated=moderate, blocked=True)
    rows = study_rows(before)
    return look(rows, eliminated(study, k), margin=1.0, alpha=alpha, direction="maximize", moderate=moderate)[2]


def test_the_moderated_race_eliminates_on_fewer_seeds_than_the_plain_one(moderated_and_plain):
    """Both races through the real loop: 12 points below is out at the first look either way, and each race looks at
    its own t's α. On 300 draws of FIELD at the first look (3 seeds), the moderated t puts the rows 2.5 and 3 points
    below out far more often than each variant's own residual variance does (1.6 df each): seen 3 times as often."""
    (moderated, runs), (plain, plain_runs) = moderated_and_plain[True], moderated_and_plain[False]
    assert eliminated(moderated)["a=far"] == eliminated(plain)["a=far"] == 1
    assert len(runs) <= len(plain_runs)
    for study, moderate in ((moderated, True), (plain, False)):
        alpha = look_alpha(0.05, 3, 10, len(FIELD) - 1, moderated=moderate, blocked=True)
        assert study.user_attrs["verdicts"]["race_alpha"] == alpha
    rng, out = np.random.default_rng(0), {True: 0, False: 0}
    alphas = {m: look_alpha(0.05, 3, 10, len(FIELD) - 1, moderated=m, blocked=True) for m in (True, False)}
    for _ in range(300):
        shift = rng.normal(0, 0.01, 3)  # as SimTarget: a seed moves every variant alike
        rows = [row(v, rng.normal(m, sd, 3) + shift) for v, (_, m, sd) in FIELD.items()]
        leader = max(rows, key=lambda r: r["mean"])
        for moderate, alpha in alphas.items():
            got = eliminate(rows, leader, alpha=alpha, direction="maximize", moderate=moderate)
            out[moderate] += ("low" in got) + ("lower" in got)
    assert out[True] > 2 * out[False]


def test_every_look_of_either_race_is_the_look_of_its_own_t(moderated_and_plain):
    """Replayed from the stored trials, each race's looks eliminate exactly what it recorded, and only by its t."""
    for moderate, (study, _) in moderated_and_plain.items():
        recorded = eliminated(study)
        for k in range(1, 1 + max(t.user_attrs.get(ROUND, 0) for t in study.get_trials())):
            assert sorted(replay(study, k, moderate)) == sorted(v for v, at in recorded.items() if at == k)
    plain = moderated_and_plain[False][0]
    rows = study_rows([t for t in plain.get_trials() if t.user_attrs.get(ROUND, 0) < 1])
    leader = look(rows, set(), margin=1.0, alpha=0.05, direction="maximize", moderate=False)[0]
    for r in rows:  # --no-moderation: each row's own paired t-test over the seeds it shares with the leader
        if r is not leader:
            pair = [(r["seeds"][s], leader["seeds"][s]) for s in sorted(r["seeds"])]
            assert r["test"] == "paired" and r["p_value"] == pytest.approx(scipy_stats.ttest_rel(*zip(*pair)).pvalue)
    summary = race_summary(plain)  # the sweep's end reads the stored moderate too
    assert summary.splitlines()[0].startswith("race: leader a=top") or "a=near" in summary.splitlines()[0]


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


def test_a_row_the_seed_blocked_t_cannot_tell_from_the_leader_within_max_seeds_gets_no_seed():
    """8 variants on 2 seeds as the default grid draws them (two best, two 3 points below, four far below). The
    paired t's estimate would give the first row 3 points below a seed (5 seeds would decide it); the t that
    eliminates needs 18, beyond max_seeds 8, and TOST cannot show it equivalent: it stays open without a seed, and
    the race goes on with the leader's own seeds only."""
    from ablate.stats.verdicts import annotate

    rng = np.random.default_rng(0)
    truth = np.array([0.73, 0.73, 0.70, 0.70, 0.54, 0.54, 0.54, 0.54])
    x = truth[:, None] + rng.normal(0, 0.01, 2) + rng.normal(0, 0.015, (8, 2))
    rows = [row(f"v{i}", x[i]) for i in range(8)]
    paired = [dict(r) for r in rows]
    annotate(paired, max(paired, key=lambda r: r["mean"]), margin=1.0, alpha=0.002)
    assert paired[2]["verdict"] == "undecided" and paired[2]["seeds_needed"] <= 8  # the paired estimate: 5
    best, field, out = look(rows, set(), margin=1.0, alpha=0.002, direction="maximize", moderate=True)
    assert out == ["v3", "v4", "v5", "v6", "v7"] and rows[2]["verdict"] == "undecided"
    assert rows[2]["seeds_needed"] == rows[2]["race_seeds_needed"] > 8
    used = {r["variant"]: {0, 1} for r in rows}
    assert plan_round(field, best, used, 8) == {}
    assert plan_race(field, best, used, 8) == {best["variant"]: [2]}
