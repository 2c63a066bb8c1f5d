"""Shared test set-up: offline, CPU, every test in its own working directory; one real study for the modules
that read studies (test_table, test_report, test_dashboard). Helpers live in tests/helpers.py."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "offline"  # runs that keep W&B on write offline files only
os.environ.setdefault("WANDB_SILENT", "true")
# One thread a process: the tests' tensors are tiny (threads only add overhead), and the processes they start
# (workers, commands) inherit it, so a 2-core machine is never oversubscribed (2-3x faster under load).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# TINY and finished_run_info stay importable from here for tests that do `from conftest import ...`
from helpers import STORAGE, TINY, finished_run_info, write_sweep  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run each test in a fresh temporary directory so runs/ never lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny():
    """Overrides that make a full training run take a few seconds on a CPU."""
    return list(TINY)


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL cluster on 127.0.0.1 for this test session (initdb + pg_ctl as `postgres`), which a
    test may stop and start (`.stop()`, `.start()`: a server restart under a running study).

    `.ci/run` installs the server (Debian's postgresql); without it these tests fail, they never skip.
    """
    from helpers import PostgresServer

    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_url(postgres):
    """The URL of the session's PostgreSQL server (`postgres`)."""
    return postgres.url


@pytest.fixture(scope="session")
def slurm():
    """A private one-node SLURM cluster for this test session: munged, slurmctld and slurmd as root on localhost from a
    generated slurm.conf (tests/slurm_cluster.py); its `.conf` is what $SLURM_CONF must name for sbatch and squeue.

    `.ci/run` installs Debian's slurm-wlm and munge; without them these tests fail, they never skip.
    """
    from slurm_cluster import SlurmCluster

    cluster = SlurmCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


SPACE = {"model.neck.fusion": {"choices": ["concat", "sum"]}, "optim.lr": {"choices": [0.001, 0.002]}}
SEEDS = (0, 1)


@dataclass(frozen=True)
class Study:
    """A finished study in its own folder: `STORAGE` and `runs/` are relative to `folder`."""

    folder: Path
    url: str  # the storage URL from anywhere
    wandb_dir: Path  # runs/wandb: one offline run per (trial, seed)
    complete: dict  # variant -> its complete trial
    failed: str  # the variant whose only trial failed
    runs: list  # finished_run_info of every W&B run


@pytest.fixture(scope="session")
def shared_study(tmp_path_factory) -> Study:
    """A real sweep, made once a session: 3 of the 4 points of a fusion x lr grid (a neck setting and another, so
    main effects, importances and both W&B config columns apply), 2 seeds each, offline W&B runs; the 4th point
    is a variant whose only trial failed."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from ablate.study.space import variant_label
    from ablate.sweep import main as sweep

    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        path = write_sweep(space=SPACE, n_trials=3, seeds=SEEDS, overrides=["wandb.mode=offline"])
        assert sweep([path, "--storage", STORAGE]) == 0
        study = optuna.load_study(study_name="t", storage=STORAGE)
        ran = [t.params for t in study.trials]
        (params,) = [
            {"model.neck.fusion": f, "optim.lr": lr}
            for f in SPACE["model.neck.fusion"]["choices"]
            for lr in SPACE["optim.lr"]["choices"]
            if {"model.neck.fusion": f, "optim.lr": lr} not in ran
        ]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                params=params,
                distributions={k: CategoricalDistribution(v["choices"]) for k, v in SPACE.items()},
                user_attrs={"variant": variant_label(params), "fail_reason": "FloatingPointError: nan"},
            )
        )
        complete = {t.user_attrs["variant"]: t for t in study.get_trials() if t.state == TrialState.COMPLETE}
        runs = [finished_run_info(d) for d in sorted(Path("runs/wandb").glob("offline-run-*"))]
    assert len(complete) == 3 and len(runs) == 3 * len(SEEDS)
    return Study(root, f"sqlite:///{root}/runs/test.db", root / "runs/wandb", complete, variant_label(params), runs)
