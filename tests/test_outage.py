"""Storage outages under a running study: a real PostgreSQL server stopped and started mid-trial (pg_ctl), real
worker processes; SQLite locked beyond its busy timeout; a result that comes back after its trial was retried."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
from helpers import write_sweep as sweep_file
from optuna.trial import TrialState

from ablate.study.check import check_study


def write_sweep(n_trials, widths, **study):
    return sweep_file(
        space={"model.neck.out_channels": {"choices": list(widths)}},
        n_trials=n_trials,
        seeds=(0,),
        overrides=["trainer.max_epochs=4", "data.train_size=32"],
        name="o",
        **study,
    )


def fresh(storage: str) -> str:
    if "o" in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name="o", storage=storage)
    return storage


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def test_a_server_stopped_8_s_mid_trial_is_waited_out_and_the_study_finishes_in_one_command(postgres):
    storage = fresh(postgres.url)
    path = write_sweep(4, [8, 10, 12, 14], heartbeat_interval=1, grace_period=30, pruner="none")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ablate.sweep", path, "--storage", storage, "--workers", "2", "--storage-timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: len(list(Path("runs/o").glob("t*-s0/hparams.yaml"))) >= 2)  # both workers train
        running = {
            t.number for t in optuna.load_study(study_name="o", storage=storage).trials if not t.state.is_finished()
        }
        postgres.stop()
        time.sleep(8)
    finally:
        postgres.start()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert out.count("storage unreachable") == 2 and out.count("storage back after") == 2, out  # one each worker
    trials = optuna.load_study(study_name="o", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, out  # the exact total; nothing RUNNING
    assert running <= {t.number for t in trials}  # the trials in flight finished as themselves, not as retries
    assert len({t.params["model.neck.out_channels"] for t in trials}) == 4
    assert check_study(optuna.load_study(study_name="o", storage=storage), Path("runs")) == []


def test_a_storage_away_longer_than_the_bound_stops_the_worker_and_the_same_command_finishes(postgres):
    storage = fresh(postgres.url)
    path = write_sweep(2, [8, 10], heartbeat_interval=1, grace_period=4, pruner="none")
    command = [sys.executable, "-m", "ablate.sweep", path, "--storage", storage, "--storage-timeout", "3"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: list(Path("runs/o").glob("t0-s0/hparams.yaml")))
        postgres.stop()
        out, _ = proc.communicate(timeout=300)
    finally:
        postgres.start()
    assert proc.returncode == 75, out
    assert "error: the storage did not answer for 3 s (" in out and "run the same command once" in out, out
    (left,) = optuna.load_study(study_name="o", storage=storage).get_trials()
    assert left.state == TrialState.RUNNING  # untouched: the heartbeat retry takes it
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = optuna.load_study(study_name="o", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == left.params  # the stale trial, run again with its parameters
    assert check_study(optuna.load_study(study_name="o", storage=storage), Path("runs")) == []


def test_a_server_away_while_a_trial_picks_its_seeds_is_waited_out_not_a_failed_trial(postgres):
    """A trial's seeds are chosen under the slot lock, on a connection of its own (not the storage's): a server
    away when the lock is taken is waited out like any storage call (the chaos test once failed a trial here)."""
    from ablate.study.decide import PLAN, seeds_for
    from ablate.study.space import load_sweep
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    storage = fresh(postgres.url)
    study = open_study(load_sweep(write_sweep(1, [8], storage_timeout=60)), storage)
    slots = Slots(storage, "o", 1)
    trial = slots.claim(study)
    assert PLAN not in trial.user_attrs  # read now: the lock is the first thing that meets the outage
    postgres.stop()
    back = threading.Timer(3, postgres.start)
    back.start()
    try:
        seeds = seeds_for(trial, "out_channels=8", (0, 1), slots.locked)
    finally:
        back.join()
    assert seeds == [0, 1]
    assert optuna.load_study(study_name="o", storage=storage).trials[0].user_attrs[PLAN] == [0, 1]


def test_a_lost_race_to_create_the_tables_of_a_new_database_is_retried_not_an_error():
    """Machines that start together on a new PostgreSQL database race to create Optuna's tables; the loser gets
    IntegrityError (duplicate pg_type row) and, once the winner has made them, connects as usual."""
    from sqlalchemy.exc import IntegrityError

    from ablate.study.storage import connect

    attempts = []

    def make():
        attempts.append(1)
        if len(attempts) < 3:
            raise IntegrityError(
                "CREATE TABLE studies", {}, Exception("duplicate key value violates unique constraint")
            )
        return "storage"

    assert connect(make, "postgresql+psycopg2://u:p@h/db") == "storage" and len(attempts) == 3
