"""Shared test set-up: offline, CPU, every test in its own working directory."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "offline"  # runs that keep W&B on write offline files only
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402

TINY = ["data.image_size=32", "data.train_size=16", "data.val_size=8", "data.batch_size=4",
        "model.neck.out_channels=16", "model.neck.rates=[1,2,3]", "trainer.max_epochs=1",
        "trainer.enable_checkpointing=false", "trainer.enable_model_summary=false", "wandb.mode=disabled"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run each test in a fresh temporary directory so runs/ never lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny():
    """Overrides that make a full training run take a few seconds on a CPU."""
    return list(TINY)


def finished_run_info(run_dir, timeout: float = 30.0) -> dict:
    """`run_info` once W&B's service has written the run's exit record (it writes asynchronously)."""
    import time

    from ablate.results.wandb_files import run_info

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
        subprocess.run([*as_postgres, f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
