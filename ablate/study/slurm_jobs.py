"""A submitted SLURM job array (`--slurm N`, ablate.study.slurm): sbatch, what to do next, and `--wait`: squeue until
no task is left, each task's end (sacct, else scontrol), then the study's table."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ablate.errors import ConfigError
from ablate.study.slurm import log_pattern, password

POLL_MAX = 30  # seconds between two looks at squeue while --wait waits
SQUEUE_PATIENCE = 300  # seconds squeue may keep failing (controller restart) before --wait gives up


def submit(text: str, url: str) -> str:
    """`sbatch --parsable` with `text` on its standard input and $ABLATE_STORAGE = `url`; the job id."""
    from ablate.study.storage import STORAGE_ENV

    env = {**os.environ, STORAGE_ENV: url}
    try:
        done = subprocess.run(
            ["sbatch", "--parsable", "--export=ALL"], input=text, capture_output=True, text=True, env=env, timeout=120
        )
    except FileNotFoundError:
        raise ConfigError("--slurm: sbatch is not on PATH: run this on a machine that submits SLURM jobs") from None
    except subprocess.TimeoutExpired:
        raise ConfigError("--slurm: sbatch did not answer in 120 s; is slurmctld reachable? (sinfo)") from None
    if done.returncode != 0:
        why = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise ConfigError(f"--slurm: sbatch refused the job: {why}")
    return done.stdout.strip().split(";")[0]  # JOBID[;CLUSTER]


def next_steps(job: str, study: str, tasks: int, url: str) -> list[str]:
    """What the command prints once the array is submitted: the job, its logs, and how to watch and cancel it."""
    from ablate.study.storage import STORAGE_ENV

    storage = f" --storage {url}" if not password(url) else f"   # with ${STORAGE_ENV} set as here"
    return [
        f"submitted job {job}: a SLURM array of {tasks} task(s) for study {study!r}",
        f"logs:   {log_pattern(study).replace('%A', job)} (%a: the task, 0 to {tasks - 1})",
        f"script: runs/{study}/slurm/{job}.sbatch",
        f"watch:  python -m ablate.status --study {study}{storage}",
        f"        squeue -j {job}",
        f"cancel: scancel {job}",
    ]


def wait(job: str) -> None:
    """Wait until squeue lists no task of job `job`, looking every 2 s at first, then less often (at most every
    POLL_MAX s); squeue failing for SQUEUE_PATIENCE s on end is a ConfigError."""
    pause, failing_since = 2.0, None
    while True:
        done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and not done.stdout.strip():
            return
        if done.returncode != 0 and "Invalid job id" in done.stderr:  # purged: every task ended long ago
            return
        if done.returncode != 0:
            failing_since = failing_since or time.time()
            if time.time() - failing_since > SQUEUE_PATIENCE:
                why = " ".join(done.stderr.split())
                raise ConfigError(f"--wait: squeue has failed for {SQUEUE_PATIENCE} s ({why}); job {job} may still run")
        else:
            failing_since = None
        time.sleep(pause)
        pause = min(POLL_MAX, pause * 1.5)


def task_states(job: str) -> list[str]:
    """'TASK STATE EXIT' of each task, from sacct (accounting), else from scontrol (recent jobs); [] if neither."""
    commands = (
        ["sacct", "-j", job, "-X", "-n", "-P", "-o", "JobID,State,ExitCode"],
        ["scontrol", "-o", "show", "job", job],
    )
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            lines = done.stdout.strip().splitlines()
            return [" ".join(line.split("|")) for line in lines] if command[0] == "sacct" else scontrol(lines)
    return []


def scontrol(lines: list[str]) -> list[str]:
    """'JOB_TASK STATE EXIT' from `scontrol -o show job` lines (one a task)."""
    out = []
    for line in lines:
        fields = dict(item.partition("=")[::2] for item in line.split())
        task = f"{fields.get('ArrayJobId', fields.get('JobId'))}_{fields.get('ArrayTaskId', '')}"
        out.append(f"{task} {fields.get('JobState', '?')} {fields.get('ExitCode', '?')}")
    return out


def create_study(sweep, url: str) -> None:
    """Create the study (Optuna's tables, its space) before any task starts: tasks that start together on a new
    database would race to create the tables; and a storage this machine cannot reach, or a study of that name
    with another space, stops here rather than in every task after its wait in the queue."""
    from ablate.study.engine import quiet
    from ablate.study.folders import refuse_another
    from ablate.study.storage import close_connections, open_study

    quiet()  # no warnings of Optuna's experimental features (heartbeats), as a sweep
    refuse_another(Path("runs") / sweep.study.name, url, sweep.study.name)
    close_connections(open_study(sweep, url))


def submit_study(text: str, study: str, tasks: int, url: str) -> str:
    """Submit the array whose script is `text`, keep the script beside its logs, print what to do next; its job id."""
    folder = Path("runs") / study / "slurm"
    folder.mkdir(parents=True, exist_ok=True)  # sbatch opens the logs there and creates no folder
    job = submit(text, url)
    (folder / f"{job}.sbatch").write_text(text)
    print("\n".join(next_steps(job, study, tasks, url)), flush=True)
    return job


def wait_for(job: str) -> None:
    """--wait: wait until job `job` has left the queue, then print how each of its tasks ended."""
    print(
        f"--wait: waiting until no task of job {job} is pending or running (squeue -j {job}, every 2 to "
        f"{POLL_MAX} s); Ctrl-C stops the waiting, not the job (scancel {job} stops the job)",
        flush=True,
    )
    wait(job)
    for line in task_states(job):
        print(f"  task {line}")


def job_end(job: str, sweep, study) -> int:
    """0 when job `job` left `study` with every trial of `sweep` done, else 1 with an error line saying where the
    task logs are."""
    from ablate.cli import error
    from ablate.study.engine import done_trials

    if (done := len(done_trials(study))) < sweep.n_trials:
        logs = log_pattern(sweep.study.name).replace("%A", job).replace("%a", "*")
        return error(f"job {job} ended with {done} of {sweep.n_trials} trials done; its task logs say why ({logs})", 1)
    return 0
