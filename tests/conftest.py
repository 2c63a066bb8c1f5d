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
def postgres_url():
    """A private PostgreSQL cluster on 127.0.0.1 for this test session (initdb + pg_ctl as `postgres`).

    `.ci/run` installs the server (Debian's postgresql); without it these tests fail, they never skip.
    """
    import glob
    import shutil
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert bins, "PostgreSQL server not installed: apt-get install -y postgresql (.ci/run does this)"
    bin_dir = os.path.dirname(bins[-1])
    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))  # not under pytest's tmp: `postgres` must reach it
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:  # a free port on loopback
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*args):
        done = subprocess.run([*as_postgres, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"

    pg(f"{bin_dir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    pg(f"{bin_dir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


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
