"""Many workers on one study (SQLite and a real PostgreSQL server), dead workers, and DDP inside a trial."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import finished_run_info as run_info
from helpers import write_sweep as sweep_file
from optuna.trial import TrialState

WIDTHS = [8, 10, 12, 14, 16, 18, 20, 22]  # an 8-point grid: every point a different model


def write_sweep(n_trials, widths=WIDTHS, overrides=(), **study):
    """test_sweep's sweep file, over a grid of neck widths, one seed, study `w`."""
    return sweep_file(
        space={"model.neck.out_channels": {"choices": list(widths)}},
        n_trials=n_trials,
        seeds=(0,),
        overrides=overrides,
        name="w",
        **study,
    )


def sweep(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ablate.sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def study_trials(storage):
    from ablate.study.storage import read_storage

    return optuna.load_study(study_name="w", storage=read_storage(storage)).get_trials()


def fresh(storage: str) -> str:
    """The session's PostgreSQL database without a study `w` left by an earlier test."""
    if "w" in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name="w", storage=storage)
    return storage


def test_three_workers_on_postgresql_run_exactly_the_total_and_no_grid_point_twice(postgres_url):
    storage = fresh(postgres_url)
    proc = sweep(write_sweep(n_trials=6), "--storage", storage, "--workers", "3")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert out.count("started 3 workers") == 1 and out.count("study w: mean") == 1  # one table, at the end
    trials = study_trials(storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, out  # exactly the total, nothing running
    widths = [t.params["model.neck.out_channels"] for t in trials]
    assert len(set(widths)) == 6  # no grid point twice


def test_a_worker_killed_mid_trial_is_rerun_by_another(postgres_url):
    fresh(postgres_url)
    path = write_sweep(
        n_trials=3, widths=[8, 12, 16], overrides=["trainer.max_epochs=20"], heartbeat_interval=1, grace_period=4
    )
    victim = sweep(path, "--storage", postgres_url, start_new_session=True)
    deadline = time.time() + 300
    while not list(Path("runs/w").glob("t*-s0/hparams.yaml")) and time.time() < deadline:  # its fit has begun
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)  # at once, mid-fit; no handler runs: the trial stays RUNNING
    victim.wait()
    (running,) = [t for t in study_trials(postgres_url) if t.state == TrialState.RUNNING]
    survivor = sweep(path, "--storage", postgres_url)
    out, _ = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, out
    trials = {t.number: t for t in study_trials(postgres_url)}
    assert trials[running.number].state == TrialState.FAIL  # failed as stale by the survivor ...
    (rerun,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == running.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == running.params  # ... and run again
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and {t.params["model.neck.out_channels"] for t in complete} == {8, 12, 16}


def _claim_until_full(storage, path, barrier):
    """A worker with no training at all: take slots as fast as possible, complete each at once."""
    from ablate.study.space import load_sweep, suggest
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    sweep = load_sweep(path)
    study = open_study(sweep, storage)
    slots = Slots(storage, "w", sweep.n_trials)
    barrier.wait()
    while (trial := slots.claim(study)) is not None:
        suggest(trial, sweep.space)
        study.tell(trial, 0.5)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "journal"])
def test_workers_racing_for_slots_take_exactly_the_total(backend, request):
    """Six processes claim at the same moment, trials take no time: the lock alone keeps the total exact."""
    import multiprocessing

    storages = {"sqlite": "sqlite:///runs/w.db", "journal": "journal:///runs/w.log"}
    storage = storages.get(backend) or fresh(request.getfixturevalue("postgres_url"))
    path = write_sweep(n_trials=24, widths=list(range(8, 48)))
    from ablate.study.space import load_sweep
    from ablate.study.storage import open_study

    open_study(load_sweep(path), storage)  # the schema and the study exist before the race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_claim_until_full, args=(storage, path, barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * 6
    trials = study_trials(storage)
    assert len(trials) == 24 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["model.neck.out_channels"] for t in trials}) == 24  # no grid point twice
    assert not list(Path("runs").glob("*.log.*.lock"))  # a journal's slot locks all given back


def _other_worker_runs_the_last_trial():
    """A 2-trial study (heartbeat every 1 s, grace 4 s) in a real SQLite file: (study, slots, sweep, the trial that
    another worker took and beat once); this worker takes the other slot."""
    import ablate.study.engine  # noqa: F401  (imported before the clock starts: Lightning takes seconds)
    from ablate.study.space import load_sweep
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    sweep = load_sweep(write_sweep(n_trials=2, widths=[8, 10], heartbeat_interval=1, grace_period=4))
    study = open_study(sweep, "sqlite:///runs/w.db")
    slots = Slots("sqlite:///runs/w.db", "w", 2)
    other = slots.claim(study)
    study._storage.record_heartbeat(other._trial_id)
    return study, slots, sweep, other


def _run_trials(study, slots, sweep) -> None:
    """This worker's loop (ablate.study.engine.run_trials), each trial it takes finished at once."""
    from ablate.study.engine import StopOnRepeatedFailure, run_trials

    run_trials(study, lambda trial: 0.5, slots, [], StopOnRepeatedFailure(), sweep.study)


def test_a_worker_with_nothing_left_says_which_trials_other_workers_are_finishing(capsys):
    import threading

    from ablate.study.progress import finishing
    from ablate.study.workers import Heartbeat

    study, slots, sweep, other = _other_worker_runs_the_last_trial()
    with Heartbeat(study._storage, other._trial_id, 1):  # the other worker, alive: it beats, then finishes
        threading.Timer(5, lambda: study.tell(other, 0.4)).start()
        _run_trials(study, slots, sweep)
    err = capsys.readouterr().err
    assert "no trial left to start: the last trial, 0, is finishing in another worker" in err
    assert "heartbeat" not in err and "dead" not in err and "queued again" not in err  # nothing is wrong
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    three = "no trial left to start: the last trials, 3, 5 and 7, are finishing in other workers"
    assert finishing([3, 5, 7]) == three


def test_a_worker_waiting_for_a_silent_worker_says_so_and_runs_its_trial_after_the_grace_period(capsys):
    study, slots, sweep, other = _other_worker_runs_the_last_trial()  # its worker dies after its first beat
    _run_trials(study, slots, sweep)
    err = capsys.readouterr().err
    assert re.search(
        r"  trial 0: its worker has sent no heartbeat for \d+ s \(one is due every 1 s\); if it died, "
        r"the trial is queued again once silent for 4 s, and a worker still here runs it",
        err,
    ), err
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[-1].system_attrs.get("failed_trial") == 0
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 2  # its copy, run here


DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]


def test_ddp_trials_run_the_same_config_on_both_ranks_and_log_once():
    path = write_sweep(n_trials=2, overrides=[*DDP, "wandb.mode=offline"])
    proc = sweep(path, "--storage", "sqlite:///runs/w.db")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    trials = study_trials("sqlite:///runs/w.db")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # one trial per DDP job, not one per rank
    for t in trials:  # rank 1 trained exactly the config rank 0 drew (the second one arrives by broadcast)
        (digest,) = re.findall(rf"  trial {t.number} seed 0: .* \(config (\w+)\)", out)
        assert re.search(rf"rank 1: trial {t.number} seed 0: .* \(config {digest}\)", out), out
    runs = [run_info(p) for p in Path("runs/wandb").glob("offline-run-*")]
    assert sorted(r["name"] for r in runs) == ["t0-s0", "t1-s0"]  # rank 0 alone logs to W&B
    assert all(r["exit_code"] == 0 for r in runs)


def test_a_ddp_trial_is_pruned_on_every_rank():
    from optuna.distributions import CategoricalDistribution

    from ablate.study.space import load_sweep
    from ablate.study.storage import open_study

    path = write_sweep(
        n_trials=3, widths=[8, 12], overrides=[*DDP, "trainer.max_epochs=4"], sampler="random", pruner="median"
    )
    study = open_study(load_sweep(path), "sqlite:///runs/w.db")
    for _ in range(2):  # two finished trials far ahead at every epoch
        study.add_trial(
            optuna.trial.create_trial(
                params={"model.neck.out_channels": 8},
                distributions={"model.neck.out_channels": CategoricalDistribution([8, 12])},
                value=0.99,
                intermediate_values={e: 0.99 for e in range(4)},
            )
        )
    proc = sweep(path, "--storage", "sqlite:///runs/w.db")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out  # both ranks stopped together: no hang, no error
    last = study_trials("sqlite:///runs/w.db")[-1]
    assert last.state == TrialState.PRUNED and max(last.intermediate_values) < 3, out
