"""Sweeps on real storages with a real Trainer and real W&B offline files."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, STORAGE, trials, write_sweep
from helpers import finished_run_info as run_info
from optuna.trial import TrialState

from ablate.config import ConfigError
from ablate.study.space import load_sweep
from ablate.study.targets import make_target
from ablate.sweep import main


def test_trials_times_seeds_give_complete_trials_and_one_wandb_run_each():
    path = write_sweep(overrides=["wandb.mode=offline"])
    assert main([path, "--storage", STORAGE]) == 0
    done = trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    runs = {info["name"]: info for info in map(run_info, Path("runs/wandb").glob("offline-run-*"))}
    assert len(runs) == 4
    for t in done:
        assert t.user_attrs["seeds"] == [0, 1] and t.value == pytest.approx(sum(t.user_attrs["values"]) / 2)
        for seed, value in zip(t.user_attrs["seeds"], t.user_attrs["values"]):
            info = runs[f"t{t.number}-s{seed}"]
            assert info["summary"]["val/mIoU_best"] == pytest.approx(value)
            assert info["group"] == t.user_attrs["variant"] and info["job_type"] == "trial"
            assert info["tags"] == ["t"] and info["config"]["trial"] == t.number and info["config"]["study"] == "t"
            assert info["config"]["seed"] == seed and info["exit_code"] == 0
    md = Path("runs/t/table.md").read_text()
    assert md.startswith("**Conclusion on val/mIoU") and "\n| model.neck.fusion |" in md
    assert "\n| concat |" in md and "\n| sum |" in md
    raw = b"".join(p.read_bytes() for p in Path("runs/wandb").rglob("*") if p.is_file())
    assert b"test.db" not in raw and b"--storage" not in raw  # neither the storage nor argv reach W&B


def test_resume_runs_only_the_missing_trials(capsys):
    path = write_sweep(n_trials=1, seeds=(0,))
    assert main([path, "--storage", STORAGE]) == 0
    first = trials()[0]
    assert main([path, "--storage", STORAGE]) == 0  # finished: only prints the table
    out, err = capsys.readouterr()
    assert len(trials()) == 1 and "fusion" in out and first.params["model.neck.fusion"] in out, out
    assert f"  python -m ablate.report --study t --storage {STORAGE}   # one HTML" in out  # one line, to copy
    assert main([path, "--storage", STORAGE, "--n-trials", "2"]) == 0
    after = trials()
    assert len(after) == 2 and after[0].datetime_complete == first.datetime_complete
    assert {t.params["model.neck.fusion"] for t in after} == {"concat", "sum"}  # the grid: no point twice


def test_a_diverging_trial_fails_with_its_reason_and_the_study_goes_on():
    space = {"optim.lr": {"choices": [0.001, 1e12]}}
    path = write_sweep(space=space, seeds=(0,), overrides=["optim.schedule=none", "wandb.mode=offline"])
    assert main([path, "--storage", STORAGE]) == 0
    by_lr = {t.params["optim.lr"]: t for t in trials()}
    assert by_lr[0.001].state == TrialState.COMPLETE
    bad = by_lr[1e12]
    assert bad.state == TrialState.FAIL and bad.value is None
    assert "FloatingPointError" in bad.user_attrs["fail_reason"] and "values" not in bad.user_attrs
    runs = {info["name"]: info for info in map(run_info, Path("runs/wandb").glob("offline-run-*"))}
    assert runs[f"t{bad.number}-s0"]["exit_code"] == 1  # the failed seed's W&B run is marked failed
    assert runs[f"t{by_lr[0.001].number}-s0"]["exit_code"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_trial_fails_it_and_the_rerun_finishes(sig):
    path = write_sweep(n_trials=1, seeds=(0,), overrides=["trainer.max_epochs=30"])  # long enough to interrupt
    cmd = [sys.executable, "-m", "ablate.sweep", path, "--storage", STORAGE]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not Path("runs/t/t0-s0/hparams.yaml").exists() and time.time() < deadline:  # fit has started
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    first, queued = trials()
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"] is True
    assert queued.state == TrialState.WAITING  # the same parameters, queued for the rerun
    assert main([path, "--storage", STORAGE]) == 0  # the same command finishes the study
    after = trials()
    assert [t.state for t in after] == [TrialState.FAIL, TrialState.COMPLETE]
    assert after[1].params == first.params  # the interrupted variant ran again


def test_reusing_a_study_name_with_another_space_shows_both():
    assert main([write_sweep(n_trials=1, seeds=(0,)), "--storage", STORAGE]) == 0
    other = write_sweep("other.yaml", space={"model.neck.norm": {"choices": ["bn", "none"]}})
    with pytest.raises(ConfigError, match="another search space") as e:
        from ablate.study.storage import open_study

        open_study(load_sweep(other), STORAGE)
    assert "model.neck.fusion" in str(e.value) and "model.neck.norm" in str(e.value)


@pytest.mark.parametrize(
    "space, words",
    [
        ({"model.neck.rates": {"choices": [[6, 12, 18]]}}, ["not a scalar", '"6,12,18"']),
        ({"model.neck.rates": {"choices": ["2,4,16"]}}, ["degenerate", "16", "16x16"]),
        ({"model.neck.rates": {"rates": 3, "low": 1, "high": 16}}, ["degenerate"]),
        ({"model.neck.fusoin": {"choices": ["sum"]}}, ["model.neck.fusoin", "fusion"]),
        ({"model.neck.norm": {"choices": ["bn", "batch"]}}, ["'batch'", "'gn'"]),
        ({"optim.lr": {"low": 0.1, "high": 0.01}}, ["low=0.1"]),
        ({"optim.lr": [0.1]}, ["choices"]),
    ],
)
def test_bad_spaces_are_refused_before_training(space, words):
    path = write_sweep(space=space, sampler="tpe", overrides=["data.image_size=128"])
    with pytest.raises(ConfigError) as e:
        make_target(load_sweep(path))
    for word in words:
        assert word in str(e.value), str(e.value)


def test_dry_run_prints_space_and_a_sample_config_and_trains_nothing(capsys):
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "space:" in out and "# sample trial:" in out and "model:" in out
    assert not Path("runs").exists()


def test_two_workers_on_a_fresh_sqlite_file_both_finish():
    path = write_sweep(n_trials=2, seeds=(0,), sampler="random")
    cmd = [sys.executable, "-m", "ablate.sweep", path, "--storage", STORAGE]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [t.state for t in trials()] == [TrialState.COMPLETE] * 2  # exactly the total, not one per worker


def test_a_study_whose_first_trials_all_fail_the_same_way_stops(capsys):
    space = {"optim.lr": {"choices": [1e12, 1e13, 1e14, 1e15]}}
    path = write_sweep(space=space, n_trials=4, seeds=(0,), overrides=["optim.schedule=none"])
    assert main([path, "--storage", STORAGE]) == 1
    assert [t.state for t in trials()] == [TrialState.FAIL] * 2  # stopped after two, not four
    assert capsys.readouterr().err.count("the first 2 trials all failed with") == 1


def test_a_trial_behind_the_median_is_pruned_on_its_first_seed():
    from optuna.distributions import CategoricalDistribution

    from ablate.study.storage import open_study

    path = write_sweep(n_trials=3, seeds=(0, 1), sampler="random", pruner="median", overrides=["trainer.max_epochs=4"])
    study = open_study(load_sweep(path), STORAGE)
    for _ in range(2):  # two finished trials far ahead at every epoch
        study.add_trial(
            optuna.trial.create_trial(
                params={"model.neck.fusion": "sum"},
                distributions={"model.neck.fusion": CategoricalDistribution(["concat", "sum"])},
                value=0.99,
                intermediate_values={e: 0.99 for e in range(4)},
            )
        )
    assert main([path, "--storage", STORAGE]) == 0
    last = trials()[-1]
    assert last.state == TrialState.PRUNED
    assert max(last.intermediate_values) < 3  # stopped before the last epoch
    assert not Path(f"runs/t/t{last.number}-s1").exists()  # the second seed never started


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid_and_dry_run(path, capsys):
    sweep = load_sweep(path)
    assert sweep.n_trials >= 1 and sweep.seeds
    assert main([str(path), "--dry-run"]) == 0
    sample = yaml.safe_load(capsys.readouterr().out.split("# sample trial:")[1].split("\n", 1)[1])
    rates = sample["model"]["neck"]["rates"]
    assert rates == sorted(rates) and len(set(rates)) == len(rates) and max(rates) < 16  # valid on 16x16
