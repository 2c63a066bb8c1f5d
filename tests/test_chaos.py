"""A chaos test, Jepsen-style: a 3-worker study on a real PostgreSQL server while a driver SIGKILLs random workers
and restarts the server, restarting the killed workers; at the end every invariant holds and the total is exact.
The same on a journal file (no server to restart: the faults are all kills).

Bounded (tiny runs, a 1 s heartbeat, a 3 s grace period; about 100 s on 2 cores, a 600 s deadline for a loaded
machine) and on loopback only. The driver's random stream is seeded; CHAOS_SEED picks another one (the failure
message prints the seed and the events)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep
from optuna.trial import TrialState

from ablate.study.check import check_study
from ablate.study.engine import done_trials
from ablate.study.storage import read_storage

N_TRIALS, WIDTHS = 6, [8, 10, 12, 14, 16, 18]


def start(path: str, storage: str, i: int) -> subprocess.Popen:
    log = open(f"worker{i}.log", "a")
    command = [sys.executable, "-m", "ablate.sweep", path, "--storage", storage, "--storage-timeout", "120"]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def logs() -> str:
    return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(Path().glob("worker*.log")))


@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_killed_workers_and_server_restarts_lose_nothing_and_count_nothing_twice(kind, request):
    seed = int(os.environ.get("CHAOS_SEED", 0))
    rng, events = random.Random(seed), []
    postgres = request.getfixturevalue("postgres") if kind == "postgresql" else None
    storage = postgres.url if postgres else "journal:///runs/chaos.log"
    if postgres and "chaos" in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name="chaos", storage=storage)
    path = write_sweep(
        space={"model.neck.out_channels": {"choices": WIDTHS}},
        n_trials=N_TRIALS,
        seeds=(0,),
        overrides=["trainer.max_epochs=4"],  # long enough on an idle fast machine for 4 faults to land mid-study
        name="chaos",
        heartbeat_interval=1,
        grace_period=3,
        pruner="none",
    )
    workers = {i: start(path, storage, i) for i in range(3)}
    since = dict.fromkeys(workers, time.time())  # journal: kill only workers that have had time to take a trial
    deadline, faults = time.time() + 600, 0
    try:
        while not list(Path("runs/chaos").glob("t*-s0/hparams.yaml")) and time.time() < deadline:
            time.sleep(0.2)  # the faults begin once a trial trains
        while any(p.poll() is None for p in workers.values()) and time.time() < deadline:
            time.sleep(rng.uniform(0.5, 2))
            live = [i for i, p in workers.items() if p.poll() is None and (postgres or time.time() - since[i] > 6)]
            if not postgres and not live:
                continue
            if faults < 4 and live and (not postgres or rng.random() < 0.5):  # SIGKILL a worker, start it again
                i = rng.choice(live)
                os.killpg(workers[i].pid, signal.SIGKILL)
                workers[i].wait()
                events.append(f"{time.strftime('%X')} kill worker {i}")
                time.sleep(rng.uniform(0.5, 2))
                workers[i], since[i] = start(path, storage, i), time.time()
            elif faults < 4 and postgres:  # restart the server: every connection dropped
                postgres.stop()
                events.append(f"{time.strftime('%X')} server stopped")
                time.sleep(rng.uniform(1, 4))
                postgres.start()
            faults += 1
            for i, p in workers.items():  # one that started while the server was down: started again
                if p.poll() == 2 and "cannot reach the server" in Path(f"worker{i}.log").read_text():
                    events.append(f"{time.strftime('%X')} restart worker {i} (started during an outage)")
                    workers[i] = start(path, storage, i)
    finally:
        for p in workers.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    story = f"CHAOS_SEED={seed}; events: {events}\n{logs()}"
    assert all(p.returncode == 0 for p in workers.values()), story
    study = optuna.load_study(study_name="chaos", storage=read_storage(storage))
    trials = study.get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], story
    done = done_trials(study)
    assert len(done) == N_TRIALS and all(t.state == TrialState.COMPLETE for t in done), story  # the exact total
    assert len({t.params["model.neck.out_channels"] for t in done}) == N_TRIALS, story  # no grid point twice
    assert check_study(study, Path("runs")) == [], story
    assert faults >= 3, story  # the faults happened while the study ran
    waits, lates = logs().count("storage unreachable"), logs().count("is not counted")
    retried = sum(t.state == TrialState.FAIL for t in trials)
    print(
        f"chaos CHAOS_SEED={seed}: {len(trials)} trials ({retried} failed and retried), {waits} outage waits, "
        f"{lates} late results; {events}"
    )
