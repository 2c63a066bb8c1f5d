"""`--until-decided` and the tables' verdicts on a simulated objective whose truth is known, run through the real study
loop and storage (SQLite; PostgreSQL with workers): no training, a run is a draw from a known distribution."""

import json
import multiprocessing
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from scipy import stats as scipy_stats

from ablate.results.formats import fmt_needed
from ablate.results.summary import left_open, show_results
from ablate.stats.verdicts import annotate
from ablate.study.decide import PLAN, ROUND, first_look, look_alpha, plan_round, seeds_in_use
from ablate.study.engine import run_study
from ablate.study.space import StudyConfig, SweepConfig, validate_sweep, variant_label
from ablate.study.variants import add_deltas, rows_of, study_verdicts
from ablate.table import main as table

URL = "sqlite:///runs/sim.db"
# truth per variant of `a`: ("normal", mean, sd) or ("bimodal", p_learn, high, low, sd); the baseline is a=base
TRUTH = {
    "base": ("normal", 0.70, 0.004),
    "far": ("normal", 0.60, 0.004),
    "same": ("normal", 0.7005, 0.003),
    "up": ("normal", 0.725, 0.006),
    "bimodal": ("bimodal", 0.5, 0.75, 0.40, 0.01),
}
ROWS = len(TRUTH) - 1  # the rows compared with the baseline: what the α per look is calibrated for


class SimTarget:
    """A study target without training: the value of (variant, seed) is a seeded draw from TRUTH, plus a shift the
    seed gives every variant alike (a seed fixes the data order); the same (variant, seed) always gives the same."""

    metric = "val/mIoU"

    def __init__(self, truth=TRUTH, interrupt_at: int | None = None):
        self.truth, self.interrupt_at, self.runs = truth, interrupt_at, []

    def config(self, params: dict) -> dict:
        return {"params": dict(params)}

    def check(self) -> None:
        pass

    def fit(self, config: dict, seed: int, output: Path, *, callbacks: list, wandb_run: dict | None) -> dict:
        if self.interrupt_at is not None and len(self.runs) == self.interrupt_at:
            raise KeyboardInterrupt("simulated Ctrl-C")
        variant = variant_label(config["params"])
        self.runs.append((variant, seed, wandb_run))
        kind, *p = self.truth[next(iter(config["params"].values()))]  # the first swept key's value
        rng = np.random.default_rng([seed, zlib.crc32(variant.encode())])
        value = (
            rng.normal(p[0], p[1])
            if kind == "normal"
            else (p[1] if rng.random() < p[0] else p[2]) + rng.normal(0, p[3])
        )
        value += np.random.default_rng(seed).normal(0, 0.01)
        return {"val/mIoU": float(value), "val/mIoU_best": float(value)}


def sim_sweep(
    variants=tuple(TRUTH), seeds=(0, 1, 2), max_seeds=10, margin=1.0, until_decided=True, name="sim", key="a", **study
) -> SweepConfig:
    sweep = SweepConfig(
        base={},
        space={key: {"choices": list(variants)}},
        n_trials=len(variants),
        seeds=tuple(seeds),
        baseline={key: variants[0]},
        study=StudyConfig(
            name=name,
            sampler="grid",
            pruner="none",
            margin=margin,
            until_decided=until_decided,
            max_seeds=max_seeds,
            **study,
        ),
    )
    validate_sweep(sweep)
    return sweep


def trials(name="sim", url=URL):
    return optuna.load_study(study_name=name, storage=url).get_trials()


def final_rows(name="sim", url=URL):
    study = optuna.load_study(study_name=name, storage=url)
    rows, v = rows_of(study), study_verdicts(study)
    add_deltas(rows, {"a": "base"}, margin=v["margin"], alpha=v["alpha"], moderate=v["moderate"])
    return {r["variant"].removeprefix("a="): r for r in rows}


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """One --until-decided study of TRUTH through the real loop on SQLite (built once for the module)."""
    root = tmp_path_factory.mktemp("decided")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        target = SimTarget()
        assert run_study(sim_sweep(), target, URL) == 0
        return {"root": root, "runs": target.runs, "trials": trials(), "rows": final_rows()}


def test_the_verdicts_match_the_truth(decided):
    rows = decided["rows"]
    assert rows["far"]["verdict"] == "worse" and rows["up"]["verdict"] == "better"
    assert rows["same"]["verdict"] == "equivalent" and rows["base"]["verdict"] == "baseline"
    assert rows["far"]["n"] == rows["up"]["n"] == 3  # decided at the planned seeds: never a seed more
    assert rows["same"]["n"] > 3  # equivalence took added seeds
    bimodal = rows["bimodal"]  # truth: 57.5 vs 70, but a run lands at 0.40 or 0.75: 10 seeds cannot tell yet
    assert bimodal["verdict"] == "undecided" and bimodal["seeds_needed"] > 10 and bimodal["n"] == 3  # not pursued
    assert all(r["test"] == "paired, moderated" for v, r in rows.items() if v not in ("base", "bimodal"))
    assert bimodal["test"] == "paired" and bimodal["prior_df"] == 0  # its spread is an outlier: its own plain t


def test_each_round_adds_exactly_the_seeds_that_plan_round_asks_for(decided):
    """Replay the study: before round r, the rows of the trials of earlier rounds give exactly round r's trials."""
    done, alpha = decided["trials"], look_alpha(0.05, first_look(3), 10, ROWS)
    rounds = sorted({t.user_attrs[ROUND] for t in done if ROUND in t.user_attrs})
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    for r in [*rounds, rounds[-1] + 1]:
        before = [t for t in done if t.user_attrs.get(ROUND, 0) < r]
        rows = rows_of_trials(before)
        base = next(x for x in rows if x["variant"] == "a=base")
        annotate(rows, base, margin=1.0, alpha=alpha)
        plan = plan_round(rows, base, seeds_in_use(before), 10)
        added = {}
        for t in done:
            if t.user_attrs.get(ROUND) == r:
                added.setdefault(t.user_attrs["variant"], []).extend(t.user_attrs[PLAN])
        assert {v: sorted(s) for v, s in added.items()} == {v: sorted(s) for v, s in plan.items()}, r
        decided_rows = {x["variant"] for x in rows if x["verdict"] in ("better", "worse", "equivalent")}
        assert not decided_rows & set(added)  # a decided row gets no seed
    assert {t.user_attrs["variant"] for t in done if ROUND in t.user_attrs} == {"a=same", "a=base"}


def rows_of_trials(trials_: list) -> list[dict]:
    from ablate.study.variants import study_rows

    return study_rows(trials_)


def test_added_seeds_are_ordinary_runs_counted_apart_and_never_repeated(decided):
    done, runs = decided["trials"], decided["runs"]
    planned = [t for t in done if ROUND not in t.user_attrs]
    assert len(planned) == len(TRUTH) and all(t.user_attrs["seeds"] == [0, 1, 2] for t in planned)
    assert all(t.state == TrialState.COMPLETE for t in done)
    pairs = [(t.user_attrs["variant"], s) for t in done for s in t.user_attrs["seeds"]]
    assert len(pairs) == len(set(pairs)) == len(runs)  # each (variant, seed) trained once
    for t in done:
        for s in t.user_attrs["seeds"]:
            wandb_run = next(w for v, seed, w in runs if v == t.user_attrs["variant"] and seed == s)
            assert wandb_run["name"] == f"t{t.number}-s{s}" and wandb_run["group"] == t.user_attrs["variant"]
    for r in decided["rows"].values():  # lowest integers, each variant's own, shared with the baseline
        assert sorted(map(int, r["seeds"])) == list(range(r["n"]))
        assert r["n"] <= decided["rows"]["base"]["n"] <= 10


def test_the_table_shows_holm_adjusted_p_values_that_match_a_hand_calculation(decided, capsys):
    url = f"sqlite:///{decided['root']}/runs/sim.db"
    assert table(["--study", "sim", "--storage", url, "--format", "json"]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    base = rows["a=base"]["seeds"]
    others = [v for v in rows if v != "a=base"]
    for v in others:  # the plain p beside the moderated one: a paired t-test over the shared seeds
        shared = sorted(set(rows[v]["seeds"]) & set(base), key=int)
        diffs = [100 * (rows[v]["seeds"][s] - base[s]) for s in shared]
        assert rows[v]["p_value_plain"] == pytest.approx(scipy_stats.ttest_1samp(diffs, 0).pvalue, rel=1e-9)
        assert rows[v]["test"].startswith("paired") and rows[v]["delta"] == pytest.approx(np.mean(diffs))
        df = rows[v]["df"]  # the p the verdict reads is the t of the interval shown, on its df
        se = (rows[v]["ci_high"] - rows[v]["delta"]) / scipy_stats.t.ppf(1 - look_alpha(0.05, 3, 10, ROWS), df)
        assert rows[v]["p_value"] == pytest.approx(2 * scipy_stats.t.sf(abs(rows[v]["delta"]) / se, df), rel=1e-6)
    ranked = sorted(others, key=lambda v: rows[v]["p_value"])
    m, running = len(ranked), 0.0
    for i, v in enumerate(ranked):  # Holm's step-down by hand
        running = max(running, min(1.0, (m - i) * rows[v]["p_value"]))
        assert rows[v]["p_adjusted"] == pytest.approx(running, rel=1e-9)
    alpha = look_alpha(0.05, 3, 10, ROWS)  # the study's α per look, which the table uses by default
    assert rows["a=up"]["p_adjusted"] < alpha and rows["a=far"]["verdict"] == "worse"
    for key in ("ci_low", "ci_high", "boot_low", "boot_high", "p_equivalence", "seeds_needed", "verdict"):
        assert key in rows["a=up"]


def test_markdown_shows_the_interval_the_verdicts_and_how_they_were_reached(decided, capsys):
    url = f"sqlite:///{decided['root']}/runs/sim.db"
    assert table(["--study", "sim", "--storage", url]) == 0
    md = capsys.readouterr().out
    alpha = look_alpha(0.05, 3, 10, ROWS)
    level = f"{100 * (1 - 2 * alpha):.3g} % CI"
    assert f"| Δ (points) [{level}] | p | Holm p (decides < {alpha:.2g}) | test | verdict |" in md
    assert "▲ better" in md and "▼ worse" in md and "≈ equivalent" in md and "| paired |" in md
    assert "α per look of --until-decided, 3 to 10 seeds" in md and "inside ±1 points (TOST)" in md
    r = decided["rows"]["up"]
    assert f"{r['delta']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]" in md
    assert table(["--study", "sim", "--storage", url, "--alpha", "0.05", "--format", "latex"]) == 0
    assert r"90 \% CI" in capsys.readouterr().out  # --alpha overrides the study's α per look


def test_the_sweep_end_names_the_rows_left_open_and_a_larger_max_seeds_goes_on(decided, tmp_path, monkeypatch, capsys):
    shutil.copytree(decided["root"] / "runs", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    study = optuna.load_study(study_name="sim", storage=URL)
    show_results(study, tmp_path / "out", URL, {"a": "base"})
    needed = decided["rows"]["bimodal"]["seeds_needed"]
    out = capsys.readouterr().out
    left = "left 1 row(s) undecided: 1 whose estimate is above 10 seeds, so none were added"
    left += f" (a=bimodal {fmt_needed(needed)})"
    assert left in out
    assert left_open([r for r in decided["rows"].values() if r["verdict"] != "undecided"], 10) is None
    assert run_study(sim_sweep(max_seeds=needed + 6), SimTarget(), URL) == 0  # α per look shrinks: estimates grow
    rows = final_rows()
    assert rows["bimodal"]["n"] > 3 and rows["far"]["n"] == 3  # seeds only where still open
    assert len(trials()) > len(decided["trials"])


def test_paired_exactly_when_the_rows_share_seeds():
    """A variant trained on other seeds than the baseline (a second run with other --seeds) is compared by Welch."""
    from ablate.study.storage import open_study

    sweep = sim_sweep(variants=("base", "up", "far"), until_decided=False)
    study = open_study(sweep, URL)
    for variant in ("base", "up"):
        study.enqueue_trial({"a": variant})
    assert run_study(replace(sweep, n_trials=2), SimTarget(), URL) == 0
    study.enqueue_trial({"a": "far"})  # the next trial, with other --seeds
    assert run_study(replace(sweep, n_trials=3, seeds=(5, 6, 7)), SimTarget(), URL) == 0
    rows, third, other = final_rows(), "far", "up"
    assert rows[third]["seeds"].keys() == {"5", "6", "7"} and rows[other]["seeds"].keys() == {"0", "1", "2"}
    assert rows[third]["test"] == "welch" and rows[other]["test"] == "paired"
    x, y = np.array(list(rows[third]["seeds"].values())), np.array(list(rows["base"]["seeds"].values()))
    assert rows[third]["p_value"] == pytest.approx(scipy_stats.ttest_ind(x, y, equal_var=False).pvalue, rel=1e-9)


def replace(sweep, **changes):
    import dataclasses

    return dataclasses.replace(sweep, **changes)


def test_a_seed_already_run_for_a_variant_is_never_run_again():
    sweep = sim_sweep(variants=("base", "up"), until_decided=False)
    assert run_study(sweep, SimTarget(), URL) == 0
    target = SimTarget()
    assert run_study(replace(sweep, n_trials=4, seeds=(0, 1, 2)), target, URL) == 0  # the grid repeats both points
    assert len(target.runs) == 6 and min(s for _, s, _ in target.runs) == 3  # 0, 1, 2 are taken: the next ones
    rows = final_rows()
    assert sum(r["n"] for r in rows.values()) == 12  # no (variant, seed) twice
    assert all(sorted(map(int, r["seeds"])) == list(range(r["n"])) for r in rows.values())  # the lowest unused


def test_an_interrupted_study_finishes_with_the_same_command_as_if_never_stopped():
    reference = SimTarget()
    assert run_study(sim_sweep(name="ref"), reference, URL) == 0
    planned = 3 * len(TRUTH)
    first_round = sum(1 for t in trials("ref") if t.user_attrs.get(ROUND) == 1)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C as round 2 starts
        run_study(sim_sweep(), SimTarget(interrupt_at=planned + first_round), URL)
    stopped = trials()
    assert max(t.user_attrs.get(ROUND, 0) for t in stopped) == 2
    assert [t.state for t in stopped].count(TrialState.WAITING) >= 1  # the interrupted one, queued again
    assert run_study(sim_sweep(), SimTarget(), URL) == 0  # the same command
    assert seeds_by_variant(trials()) == seeds_by_variant(trials("ref"))
    assert {v: r["verdict"] for v, r in final_rows().items()} == {v: r["verdict"] for v, r in final_rows("ref").items()}
    again = SimTarget()  # finished: the same command again trains nothing
    assert run_study(sim_sweep(), again, URL) == 0 and again.runs == []


def seeds_by_variant(trials_) -> dict:
    return {v: sorted(s) for v, s in seeds_in_use([t for t in trials_ if t.state == TrialState.COMPLETE]).items()}


def _worker(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raise SystemExit(run_study(sim_sweep(heartbeat_interval=1, grace_period=5), SimTarget(), url))


def test_three_workers_on_postgresql_add_exactly_the_seeds_one_worker_adds(postgres_url, tmp_path):
    if "sim" in optuna.get_all_study_names(postgres_url):
        optuna.delete_study(study_name="sim", storage=postgres_url)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(postgres_url,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert run_study(sim_sweep(name="one"), SimTarget(), URL) == 0
    many, one = trials(url=postgres_url), trials("one")
    assert all(t.state == TrialState.COMPLETE for t in many)
    assert len([t for t in many if ROUND not in t.user_attrs]) == len(TRUTH)  # exactly n_trials planned trials
    assert seeds_by_variant(many) == seeds_by_variant(one)  # the same seeds, none twice
    assert sum(len(t.user_attrs["seeds"]) for t in many) == sum(len(t.user_attrs["seeds"]) for t in one)


def test_a_margin_that_is_not_positive_is_refused_before_anything_runs(capsys):
    from test_sweep import write_sweep

    from ablate.sweep import main as sweep

    for margin in ("0", "-1"):
        assert sweep([write_sweep(), "--storage", URL, "--margin", margin]) == 2
        assert "margin must be a positive number of points" in capsys.readouterr().err
    assert not Path("runs/sim.db").exists() or optuna.get_all_study_names(URL) == []
    assert run_study(sim_sweep(until_decided=False), SimTarget(), URL) == 0
    assert table(["--study", "sim", "--storage", URL, "--margin", "0"]) == 2
    assert "--margin: margin must be a positive number" in capsys.readouterr().err
    with pytest.raises(Exception, match="study.margin"):
        sim_sweep(margin=-0.5)


def test_max_seeds_below_the_seeds_already_run_is_refused_and_nothing_is_lost(capsys):
    from test_sweep import write_sweep

    from ablate.sweep import main as sweep

    fusion = "model.neck.fusion"  # a key the built-in target of the command line knows
    truth = {"concat": TRUTH["base"], "sum": TRUTH["up"]}
    sim = sim_sweep(variants=("concat", "sum"), until_decided=False, name="t", key=fusion)
    assert run_study(sim, SimTarget(truth), URL) == 0
    before = [(t.number, t.state, t.user_attrs["seeds"]) for t in trials("t")]
    path = write_sweep(space=sim.space, n_trials=2, seeds=(0,))
    assert sweep([path, "--storage", URL, "--until-decided", "--max-seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert re.search(
        rf"--max-seeds 2 is below the seeds already run: {fusion}=(concat|sum) has 3 \(0, 1, 2\); give "
        r"--max-seeds 3 or more \(nothing was run or changed\)",
        err,
    )
    assert sweep([path, "--storage", URL, "--until-decided", "--max-seeds", "2", "--seeds", "0,1,2"]) == 2
    assert "below the 3 seeds every trial runs" in capsys.readouterr().err
    assert [(t.number, t.state, t.user_attrs["seeds"]) for t in trials("t")] == before


def test_a_baseline_matching_no_row_or_several_rows_is_a_clear_error(capsys):
    sweep = SweepConfig(
        base={},
        space={"a": {"choices": ["x", "y"]}, "b": {"choices": ["p", "q"]}},
        n_trials=4,
        seeds=(0, 1),
        study=StudyConfig(name="sim", sampler="grid", pruner="none"),
    )
    assert run_study(sweep, SimTarget(truth={"x": TRUTH["base"], "y": TRUTH["up"]}), URL) == 0
    for baseline, count in (("a=z", 0), ("a=x", 2)):
        assert table(["--study", "sim", "--storage", URL, "--baseline", baseline]) == 2
        err = capsys.readouterr().err
        assert f"matches {count} rows, not one; rows: " in err and "a=x b=p; " in err
    assert len(trials()) == 4


def test_no_moderation_shows_the_plain_t_at_the_plain_alpha_per_look(decided, capsys):
    url = f"sqlite:///{decided['root']}/runs/sim.db"
    assert table(["--study", "sim", "--storage", url, "--format", "json", "--no-moderation"]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    assert all(r["test"] == "paired" and r["p_value"] == r["p_value_plain"] for r in rows.values() if r["test"])
    assert all(r["prior_df"] == 0 for r in rows.values() if r["test"])
    assert table(["--study", "sim", "--storage", url, "--no-moderation"]) == 0
    md = capsys.readouterr().out
    assert (
        f"{100 * (1 - 2 * look_alpha(0.05, 3, 10, ROWS, moderated=False)):.3g} % CI" in md
        and "(plain, not moderated)" in md
    )
    assert look_alpha(0.05, 3, 10, ROWS, moderated=False) != look_alpha(0.05, 3, 10, ROWS)


def test_study_moderate_false_is_stored_and_must_be_a_boolean():
    from ablate.errors import ConfigError

    sweep = sim_sweep(variants=("base", "up", "far", "same"), until_decided=False, moderate=False)
    assert run_study(sweep, SimTarget(), URL) == 0
    assert optuna.load_study(study_name="sim", storage=URL).user_attrs["verdicts"]["moderate"] is False
    assert all(r["test"] in ("paired", None) for r in final_rows().values())
    with pytest.raises(ConfigError, match="study.moderate must be true or false; got 'no'"):
        sim_sweep(moderate="no")


@pytest.mark.parametrize("rows", [2, 6])
@pytest.mark.parametrize("moderated", [True, False])
def test_the_alpha_per_look_holds_a_null_study_of_its_rows_to_alpha_with_normal_and_bimodal_runs(moderated, rows):
    """Fresh null studies (a stream other than the calibration's) of as many rows as the α per look was calibrated
    for, tested by Holm at every look 3..6, call any row better or worse in at most α of studies (plus three standard
    errors of Monte Carlo noise), whether runs are normal or bimodal like the built-in data's; at twice the level,
    bimodal runs exceed α, so the bimodal calibration is what holds them."""
    from ablate.study.decide import NULL_PATHS, _null_study

    alpha, bound = look_alpha(0.05, 3, 6, rows, moderated=moderated), 0.05 + 3 * np.sqrt(0.05 * 0.95 / NULL_PATHS)
    holm = {shape: _null_study(3, 6, moderated, shape, rows, seed=7) for shape in ("normal", "bimodal")}
    assert np.mean(holm["normal"] < alpha) <= bound and np.mean(holm["bimodal"] < alpha) <= bound
    assert np.mean(holm["bimodal"] < 2 * alpha) > 0.05
