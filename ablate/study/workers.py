"""Many workers on one study, and Lightning DDP inside a trial.

- Exact totals: a worker takes a trial slot (counts the study's trials and asks for one) under a lock held in
  the storage (a PostgreSQL advisory lock; a file lock beside a SQLite file; an O_EXCL lock file beside a journal,
  ablate.study.journal.FileLock), so N workers never overshoot `n_trials`, and the grid sampler, which picks its
  point while asking, never hands one point out twice.
- Dead workers: each running trial records a heartbeat; a trial whose worker stopped beating for
  `grace_period` seconds is failed by the next worker that looks, and re-queued with the same parameters
  (Optuna's RetryHeartbeatStaleTrialCallback). Re-run trials do not count towards the total.
- DDP: under `trainer.strategy=ddp` Lightning starts ranks 1..N-1 by running the same command again. Those
  ranks never ask the study: rank 0 hands each run's config to them (in the environment for the first run,
  before they exist; by a broadcast afterwards), and they train it until rank 0 says stop.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import threading
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ablate.cli import console
from ablate.study.journal import LockLost, is_journal, study_lock
from ablate.study.outage import PATIENCE, StorageUnavailable, say, wait_for
from ablate.study.storage import sqlite_lock

JOB_ENV = "ABLATE_DDP_JOB"  # the first run's job, for the ranks Lightning starts
WORKER_ENV = "ABLATE_WORKER"  # set in each worker `--workers N` starts (ablate.study.pool): its index


def counted(trials: list) -> list:
    """Trials that hold one of the study's `n_trials` slots: everything except failed trials re-run since, and the
    seeds `--until-decided` added (user attr `round`, see ablate.study.decide), which never count."""
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in rerun) and "round" not in t.user_attrs]


class Slots:
    """Takes trial slots of one study so that all workers together run exactly `total` trials."""

    def __init__(self, storage_url: str, study_name: str, total: int, extend=None):
        self.url, self.name, self.total = storage_url, study_name, total
        self.extend = extend  # once every slot is taken: extend(study, trials) may enqueue more (a round of seeds)
        self._engine, self._conn, self._file = None, None, None

    @contextlib.contextmanager
    def lock(self):
        """Held by one worker at a time, across machines where the storage is a server or a shared journal file."""
        if self.url.startswith("sqlite:///"):
            with sqlite_lock(self.url):
                yield
            return
        if is_journal(self.url):
            with study_lock(self.url, self.name).held(f"study {self.name!r}'s trial-slot lock") as held:
                self._file = held
                try:
                    yield
                finally:
                    self._file = None
            return
        import sqlalchemy as sa

        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        key = int.from_bytes(hashlib.sha256(f"ablate/{self.name}".encode()).digest()[:8], "big", signed=True)
        with self._engine.connect() as conn:
            take = sa.text("SELECT pg_try_advisory_lock(:key)")
            what = f"study {self.name!r}'s trial-slot lock, which another worker holds"
            wait_for(lambda: conn.execute(take, {"key": key}).scalar(), what, PATIENCE.timeout)
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None
                with contextlib.suppress(Exception):  # a dropped connection has released the lock on the server
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()

    def check_held(self) -> None:
        """Raise (an outage error) when the server dropped the connection holding the lock, and so the lock; LockLost
        when a journal's lock file was broken (this worker froze past its staleness)."""
        if self._file is not None and not self._file.held_still():
            raise LockLost(f"study {self.name!r}'s trial-slot lock {self._file.path} was broken while held")
        if self._conn is not None:
            import sqlalchemy as sa

            self._conn.execute(sa.text("SELECT 1"))

    def locked(self, fn):
        """fn(check) under the lock; `fn` calls check() just before it writes (an outage error if the lock went
        with its connection). An outage anywhere in it, taking the lock included, starts it again whole once the
        storage is back (ablate.study.outage)."""
        return PATIENCE.call(self._locked, fn)

    def _locked(self, fn):
        while True:
            try:
                with self.lock():
                    return fn(self.check_held)
            except LockLost as e:
                say(f"  {e}: taking it again")

    def claim(self, study: optuna.Study) -> optuna.Trial | None:
        """A trial to run (a queued one first), or None when every slot is taken and nothing more is queued."""
        return self.locked(lambda check: self._claim(study, check))

    def _claim(self, study: optuna.Study, check) -> optuna.Trial | None:
        optuna.storages.fail_stale_trials(study)  # dead workers' trials: FAIL, and queued again
        fail_never_beaten(study)  # and those whose worker died before their first heartbeat
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and len(counted(trials)) >= self.total and not (self.extend and self.extend(study, trials)):
            return None
        check()
        return study.ask()  # pops a waiting trial first; the sampler picks its grid point in here


def fail_never_beaten(study: optuna.Study) -> None:
    """FAIL, and queue again as Optuna's `fail_stale_trials` does, each RUNNING trial that never recorded a heartbeat
    and started more than the grace period ago: its worker died between taking it and its first beat. Optuna never
    calls such a trial stale, so once every slot is taken the other workers would wait for it forever."""
    import datetime

    from optuna.storages._rdb import models

    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # Optuna's cache wraps the RDB storage
    interval = getattr(backend, "heartbeat_interval", None)
    if interval is None or not isinstance(backend, optuna.storages.RDBStorage):
        return  # a journal's stale trials include those that never beat (ablate.study.journal)
    grace = datetime.timedelta(seconds=backend.grace_period or 2 * interval)
    now = datetime.datetime.now()  # Optuna stamps a trial's start with its worker's clock
    with backend.scoped_session() as session:
        running = session.query(models.TrialModel).filter(
            models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING
        )
        silent = [t.trial_id for t in running if not t.heartbeats and now - t.datetime_start > grace]
    for trial_id in silent:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was first
            retry = storage.get_heartbeat_stale_trial_callback()
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL) and retry is not None:
                retry(study, copy.deepcopy(storage.get_trial(trial_id)))


class Heartbeat:
    """Records a running trial's heartbeat every `interval` seconds, from a thread."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval, self.stop = storage, trial_id, interval, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)  # waits out an outage (ablate.study.outage)
            except StorageUnavailable:
                pass  # the worker's next storage call stops it; this thread only tries again
            except Exception as e:  # never end the run from here: the grace period covers a missed beat
                console.print(f"  heartbeat of trial {self.trial_id} not recorded: {type(e).__name__}: {e}")
            if self.stop.wait(self.interval):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


# --- DDP inside a trial -------------------------------------------------------------------------------------


def ddp_rank() -> int:
    """0 in the process that runs the study (outside DDP, or global rank 0); not 0 in every other DDP rank.

    Lightning's launcher sets LOCAL_RANK and NODE_RANK, torchrun sets RANK; the sum is not the global rank
    on many nodes, but it is 0 exactly on rank 0."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


def share(job: dict | None) -> None:
    """Rank 0: hand the next run (or None: stop) to the other ranks of a DDP job, if there is one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list([job], src=0)
    elif job is not None:
        os.environ[JOB_ENV] = json.dumps(job)  # Lightning copies the environment into the ranks it starts


def receive() -> dict | None:
    """Ranks > 0: the next run from rank 0 (the first from the environment), or None at the end."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    if JOB_ENV not in os.environ:
        raise RuntimeError(
            f"this process has DDP rank {ddp_rank()} but no run from rank 0 (${JOB_ENV}): start "
            "`python -m ablate.sweep` once per machine and let Lightning start the other ranks"
        )
    return json.loads(os.environ.pop(JOB_ENV))


def config_digest(config: dict) -> str:
    """A short hash of a resolved run config, printed by every rank so that they can be compared."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def follow(study: optuna.Study, target) -> int:
    """Ranks > 0: train each run rank 0 hands over, with its pruning callback, until rank 0 says stop.

    They never ask the study, never log to W&B and never write a result; the pruning callback only joins
    rank 0's decision (a broadcast) so that every rank stops at the same epoch.
    """
    from optuna_integration import PyTorchLightningPruningCallback

    rank = ddp_rank()
    while (job := receive()) is not None:
        console.print(
            f"  rank {rank}: trial {job['number']} seed {job['seed']}: {job['variant']} "
            f"(config {config_digest(job['config'])})"
        )
        trial = optuna.Trial(study, job["trial_id"])
        prune = [PyTorchLightningPruningCallback(trial, monitor=target.metric)] if job["prune"] else []
        try:
            target.fit(job["config"], job["seed"], Path(job["output"]), callbacks=prune, wandb_run=None)
        except Exception as e:  # rank 0 fails the trial; this rank waits for the next run
            console.print(f"  rank {rank}: trial {job['number']} stopped: {type(e).__name__}: {e}")
    return 0
