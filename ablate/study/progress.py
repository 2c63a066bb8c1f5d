"""What a running study tells those who watch it (`python -m ablate.status`, from any machine that reaches the storage):
where each trial runs, which seed and epoch it is at, and what the study plans; and, when several workers share one
console, the label that tells their progress lines apart (`t3 s1 epoch 4/8 ...`); and, to a worker with no trial left
to take, which trials other workers are finishing, and which of them has a worker that stopped beating.

Cheap by design: a few user attrs once per trial, two writes as a seed starts (before its data, at its fit's start)
and one at each epoch's end."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import lightning as L
import optuna
from optuna.trial import TrialState

from ablate.cli import console, labelled
from ablate.study.check import silent
from ablate.study.snapshot import AT, GPUS, HOST, JOB, PID, PLAN, WORKER
from ablate.study.workers import WORKER_ENV


def record_where(trial: optuna.Trial) -> None:
    """The trial's host and pid, its worker of a pool and the GPUs it sees (CUDA_VISIBLE_DEVICES, ablate.study.gpus),
    and its SLURM array task, as user attrs (a failed trial's copy, run again: what its first run said goes)."""
    env = os.environ
    where = {
        HOST: socket.gethostname(),
        PID: os.getpid(),
        WORKER: int(env[WORKER_ENV]) if WORKER_ENV in env else None,
        GPUS: env.get("CUDA_VISIBLE_DEVICES"),
        JOB: slurm_task(),
    }
    for key, value in where.items():
        if value is not None or key in trial.user_attrs:
            trial.set_user_attr(key, value)


def slurm_task() -> str | None:
    """'JOB_TASK' of the SLURM array task this process runs in (`--slurm N`), or None."""
    if "SLURM_ARRAY_JOB_ID" not in os.environ:
        return None
    return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"


def record_plan(study: optuna.Study, sweep, rounds) -> None:
    """What the command running the study plans, as the study's user attr `plan`: its total of trials (which a
    later command may raise), the seeds a trial trains, and the rounds of added seeds that follow, if any."""
    plan = {
        "n_trials": sweep.n_trials,
        "seeds": len(sweep.seeds),
        "rounds": None if rounds is None else rounds.name,
        "max_seeds": sweep.study.max_seeds if rounds is not None else None,
    }
    if study.user_attrs.get(PLAN) != plan:
        study.set_user_attr(PLAN, plan)


def run_label(trial: optuna.Trial, seed: int) -> str | None:
    """`t3 s1` in a worker of a pool (its lines share a console with the others'), None in a process alone."""
    return f"t{trial.number} s{seed}" if WORKER_ENV in os.environ else None


@contextlib.contextmanager
def running(trial: optuna.Trial, seed: int):
    """Around one seed's fit: records that the seed started, labels its progress lines in a worker of a pool, and
    gives the callback that records each epoch."""
    trial.set_user_attr(AT, {"seed": seed, "epoch": 0, "since": time.time()})
    with labelled(run_label(trial, seed)):
        yield EpochProgress(trial, seed)


class EpochProgress(L.Callback):
    """Records the trial's `progress` user attr as the seed's fit starts and at each training epoch's end (rank 0):
    its seed, the epochs done of how many, when the seed started and its device."""

    def __init__(self, trial: optuna.Trial, seed: int):
        self.trial, self.seed, self.since = trial, seed, time.time()

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._record(trainer, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._record(trainer, trainer.current_epoch + 1)

    def _record(self, trainer: L.Trainer, epoch: int) -> None:
        if trainer.is_global_zero:
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            progress = {"seed": self.seed, "epoch": epoch, "epochs": epochs, "since": self.since}
            self.trial.set_user_attr(AT, {**progress, "device": str(trainer.strategy.root_device)})


class Waiting:
    """What a worker with no trial left to take says while the last trials finish in other workers: which trials
    (once), and each trial whose worker has sent no heartbeat for longer than it should have (half-way from the
    heartbeat interval to the grace period: a live worker beats every interval), the one case that is not normal."""

    def __init__(self, interval: float, grace: float):
        self.interval, self.grace, self.said, self.told = interval, grace, False, set()

    def goes_on(self, study: optuna.Study) -> bool:
        """Whether trials still run in other workers (this worker then waits for them); says what is new."""
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if not running:
            return False
        stale = silent(study, after=(self.interval + self.grace) / 2)
        stopped = {number for number, _ in stale}
        if (live := [n for n in running if n not in stopped]) and not self.said:
            console.print(finishing(live))
            self.said = True
        for number, age in stale:
            if number not in self.told:
                self.told.add(number)
                console.print(
                    f"  trial {number}: its worker has sent no heartbeat for {age:.0f} s (one is due every "
                    f"{self.interval} s); if it died, the trial is queued again once silent for {self.grace} s, "
                    "and a worker still here runs it"
                )
        return True


def finishing(numbers: list[int]) -> str:
    """'no trial left to start: the last trials, 3 and 5, are finishing in other workers'."""
    if len(numbers) == 1:
        return f"no trial left to start: the last trial, {numbers[0]}, is finishing in another worker"
    listed = f"{', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"
    return f"no trial left to start: the last trials, {listed}, are finishing in other workers"
