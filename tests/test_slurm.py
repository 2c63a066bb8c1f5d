"""`python -m ablate.sweep FILE --slurm N`: the sbatch script, its settings, and job arrays on a real SLURM cluster
(munged, slurmctld and slurmd started on this machine by the `slurm` fixture)."""

import re
import time
from pathlib import Path

import pytest
import yaml
from helpers import write_sweep
from optuna.trial import TrialState

from ablate.study.slurm import task_argv
from ablate.study.storage import load_study, read_storage
from ablate.sweep import main

QUICK = {"heartbeat_interval": 1, "grace_period": 5}  # a task killed outright: its trial is queued again in 5 s


def sweep_with_slurm(slurm: dict, **kwargs) -> str:
    """The tiny sweep file of tests/helpers.py with a `slurm:` mapping."""
    path = write_sweep(**kwargs)
    spec = yaml.safe_load(Path(path).read_text())
    Path(path).write_text(yaml.safe_dump({**spec, "slurm": slurm}, sort_keys=False))
    return path


def test_the_script_shows_every_setting_and_never_the_password(monkeypatch, capsys):
    monkeypatch.setenv("ABLATE_STORAGE", "postgresql+psycopg2://me:pa55word@db.example:5432/studies")
    slurm = {"partition": "gpu", "time": "4:00:00", "cpus_per_task": 8, "mem": "32G", "setup": ["module load cuda"]}
    path = sweep_with_slurm({**slurm, "extra": ["--qos=high"]})
    options = ["--slurm-option", "gpus_per_task=2", "--slurm-option", "extra=--constraint=a100"]
    assert main([path, "--slurm", "3", "--slurm-script", "--study", "x", "trainer.max_epochs=2", *options]) == 0
    script = capsys.readouterr().out
    for line in (
        "#SBATCH --array=0-2",
        "#SBATCH --output=runs/x/slurm/%A_%a.out",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=4:00:00",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gpus-per-task=2",
        "#SBATCH --mem=32G",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "module load cuda",
    ):
        assert f"\n{line}\n" in script
    command = script.splitlines()[-1]
    assert command.endswith(f"-m ablate.sweep {path} --study x trainer.max_epochs=2 --workers auto")
    assert "pa55word" not in script and "me:***@db.example" in script  # the URL reaches tasks as $ABLATE_STORAGE
    assert not Path("runs").exists()  # --slurm-script submits and writes nothing


def test_a_task_repeats_the_command_without_the_flags_of_the_submission():
    argv = ["s.yaml", "--slurm", "4", "--storage=journal:///x.log", "--wai", "--slurm-o", "mem=4G", "a.b=1"]
    assert task_argv([*argv, "--workers", "2", "--study", "y", "--storage-timeout", "9"]) == [
        "s.yaml",
        "a.b=1",
        "--study",
        "y",
        "--storage-timeout",
        "9",
    ]


@pytest.mark.parametrize(
    "slurm, words",
    [
        ({"partiton": "gpu"}, "unknown key slurm.partiton (did you mean slurm.partition?)"),
        ({"time": 14400}, 'slurm.time must be a quoted string, e.g. "4:00:00"'),
        ({"cpus_per_task": 0}, "slurm.cpus_per_task must be a positive integer"),
        ({"extra": ["--array=0-9"]}, "ablate sets --array itself"),
        ({"extra": ["--ntasks=4"]}, "each array task is one command on one node"),
        ({"extra": ["--partition=gpu"]}, "give --partition as slurm.partition"),
        ({"setup": "a\nb"}, "slurm.setup must be a list of one-line strings"),
    ],
)
def test_bad_slurm_settings_are_refused_naming_the_key(slurm, words, capsys):
    path = sweep_with_slurm(slurm)
    assert main([path, "--slurm", "2", "--slurm-script", "--storage", "journal:///x.log"]) == 2
    assert words in capsys.readouterr().err
    assert main([path, "--dry-run"]) == 2  # checked on every load of the sweep file, not only with --slurm


def test_flags_of_a_submission_need_slurm(capsys):
    assert main([write_sweep(), "--wait"]) == 2
    assert "go with --slurm N" in capsys.readouterr().err
    assert main([write_sweep(), "--slurm-option", "cpu=2", "--slurm", "1", "--storage", "journal:///x.log"]) == 2
    assert "unknown key slurm.cpu" in capsys.readouterr().err


def test_a_task_uses_its_allocation_not_the_whole_node(monkeypatch):
    from ablate.study.gpus import available_bytes
    from ablate.study.pool import cores

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "512")  # MB
    assert cores() == 1 and available_bytes() <= 512 * 2**20
    monkeypatch.delenv("SLURM_JOB_ID")  # outside a job, a stale variable counts for nothing
    assert available_bytes() > 512 * 2**20 or cores() > 1


# --- on a real SLURM ------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(slurm, monkeypatch):
    """The session's SLURM cluster, named by $SLURM_CONF for sbatch, squeue and scancel."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.delenv("ABLATE_STORAGE", raising=False)
    return slurm


def job_of(out: str) -> str:
    """The job id the submission printed."""
    return re.search(r"^submitted job (\d+):", out, re.M).group(1)


def states(name: str, url: str) -> list:
    """The states of study `name`'s trials."""
    return [t.state for t in load_study(name, read_storage(url)).get_trials()]


def test_a_two_task_array_on_a_journal_finishes_the_study_exactly(cluster, capsys):
    url = f"journal:///{Path.cwd()}/runs/t.log"  # four slashes: an absolute path on the shared file system
    path = write_sweep(n_trials=3, seeds=(0,), **QUICK)
    assert main([path, "--slurm", "2", "--storage", url, "--wait"]) == 0
    out = capsys.readouterr().out
    job = job_of(out)
    assert f"\nwatch:  python -m ablate.status --study t --storage {url}\n        squeue -j {job}\n" in out
    assert f"\ncancel: scancel {job}\n" in out
    assert f"task {job}_0 COMPLETED 0:0" in out and f"task {job}_1 COMPLETED 0:0" in out
    assert states("t", url) == [TrialState.COMPLETE] * 3  # exactly the total, nothing RUNNING or WAITING
    for task in (0, 1):
        log = Path(f"runs/t/slurm/{job}_{task}.out").read_text()
        assert f"task {task} of job {job}" in log and "--workers auto: 1 worker(s)" in log  # its 1 CPU
    assert Path(f"runs/t/slurm/{job}.sbatch").is_file() and Path("runs/t/table.md").is_file()
    assert cluster.jobs() == []


def wait_for_trial(logs: list[Path], timeout: float = 120) -> int:
    """The index of the first log in which a trial has started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for i, log in enumerate(logs):
            if log.exists() and re.search(r"trial \d+ seed 0:", log.read_text()):
                return i
        time.sleep(0.2)
    raise AssertionError(f"no task started a trial in {timeout} s")


def test_scancel_of_a_task_mid_trial_and_the_other_runs_its_trial_again(cluster, postgres_url, monkeypatch, capsys):
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth: any password is accepted
    monkeypatch.setenv("ABLATE_STORAGE", url)  # the way a password stays out of argv
    path = write_sweep(n_trials=2, seeds=(0, 1), name="slurm_scancel", **QUICK)
    assert main([path, "--slurm", "2"]) == 0
    job = job_of(capsys.readouterr().out)
    logs = [Path(f"runs/slurm_scancel/slurm/{job}_{task}.out") for task in (0, 1)]
    task = wait_for_trial(logs)
    cluster.run("scancel", f"{job}_{task}")  # SIGTERM, then SIGKILL after KillWait
    from ablate.study.slurm_jobs import wait

    wait(job)
    trials = load_study("slurm_scancel", read_storage(url)).get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs.get("interrupted") is True
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and failed.params in [t.params for t in done]  # run again, by the other task
    assert [t for t in trials if not t.state.is_finished()] == []
    assert "marked FAIL and queued again" in logs[task].read_text()
    written = b"".join(p.read_bytes() for p in Path("runs").rglob("*") if p.is_file())
    assert b"s3cret-pw" not in written  # neither the script nor a log holds the password


def test_a_sqlite_storage_is_refused_before_anything_is_submitted(cluster, capsys):
    before = cluster.jobs()
    assert main([write_sweep(), "--slurm", "2", "--storage", "sqlite:///runs/x.db"]) == 2
    err = capsys.readouterr().err
    assert "is a SQLite file, which the tasks on other nodes cannot share" in err
    assert "postgresql+psycopg2://" in err and "journal:///PATH/study.log" in err
    assert main([write_sweep(), "--slurm", "2"]) == 2  # the default storage is a SQLite file too
    assert cluster.jobs() == before and not Path("runs").exists()  # nothing submitted, nothing written
