"""What many test modules use: the tiny run config, a sweep file over it, its study's trials, W&B run records."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
STORAGE = "sqlite:///runs/test.db"  # relative: each test runs in its own folder
TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "model.neck.out_channels=16",
    "model.neck.rates=[1,2,3]",
    "trainer.max_epochs=1",
    "trainer.enable_checkpointing=false",
    "trainer.enable_model_summary=false",
    "wandb.mode=disabled",
]


def write_sweep(path="sweep.yaml", space=None, n_trials=2, seeds=(0, 1), overrides=(), **study) -> str:
    """A sweep over the tiny config (a few seconds a run); `study` sets keys of its study section."""
    from ablate.study.space import write_sweep as write

    space = space or {"model.neck.fusion": {"choices": ["concat", "sum"]}}
    study = {"name": "t", "sampler": "grid", "pruner": "none", **study}
    write(
        path,
        space,
        base=ROOT / "experiments/base.yaml",
        overrides=[*TINY, *overrides],
        n_trials=n_trials,
        seeds=seeds,
        **study,
    )
    return path


def trials(name: str = "t", storage: str = STORAGE) -> list[optuna.trial.FrozenTrial]:
    """The trials of study `name`."""
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def finished_run_info(run_dir, timeout: float = 30.0) -> dict:
    """`run_info` once W&B's service has written the run's exit record (it writes asynchronously)."""
    from ablate.study.wandb_files import run_info

    deadline = time.time() + timeout
    while True:
        try:
            info = run_info(run_dir)
            if "exit_code" in info and "name" in info:
                return info
        except ValueError:
            pass
        if time.time() > deadline:
            return run_info(run_dir)
        time.sleep(0.2)


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port, started at once; stop() and start() restart it."""

    def __init__(self):
        import glob
        import shutil
        import socket
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        assert bins, "PostgreSQL server not installed: apt-get install -y postgresql (.ci/run does this)"
        self.bin_dir = os.path.dirname(bins[-1])
        self.root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))  # not under pytest's tmp: `postgres` must reach it
        self.data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(sock, "postgres")
        with socket.socket() as s:  # a free port on loopback
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.options = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self.pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.start()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def pg(self, tool: str, *args) -> None:
        import subprocess

        command = [*self.as_postgres, f"{self.bin_dir}/{tool}", *args]  # run from a folder `postgres` can enter
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        assert done.returncode == 0, f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = str(self.root / "log")  # -t 300: a loaded machine can take more than pg_ctl's default minute
        self.pg("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", log, "-w", "-t", "300", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: every connection dropped at once, as a restart or failover does)."""
        self.pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "300", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its cluster."""
        import shutil
        import subprocess

        subprocess.run(
            [*self.as_postgres, f"{self.bin_dir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)
