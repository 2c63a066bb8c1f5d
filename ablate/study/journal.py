"""A study on a shared file system without a database server: Optuna's journal storage (an append-only log written
under Optuna's NFS-safe JournalFileOpenLock) with what ablate's RDB studies have, which Optuna's JournalStorage lacks:
heartbeats and stale-trial retry (so Optuna's own `fail_stale_trials` works on it unchanged), and a study lock for the
trial slots that works across machines (`FileLock`, the same O_EXCL technique)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.study.outage import PATIENCE, say, wait_for

SCHEME = "journal:///"  # journal:///runs/x.log is relative, journal:////abs/x.log absolute (as sqlite:///)
BEAT = "heartbeat"  # a running trial's system attr: its worker's time.time() at its last heartbeat
STALE_LOCK = 30  # seconds a study lock may go untouched (its holder touches it every second) before it is broken


def is_journal(url: str) -> bool:
    """True for a journal storage: a journal:///PATH URL, or a plain path ending in .log."""
    return url.startswith("journal:") or ("://" not in url and url.endswith(".log"))


def journal_path(url: str) -> Path:
    """The log file of a journal storage URL (read as SQLAlchemy reads sqlite:///PATH), or of a plain path."""
    if not url.startswith("journal:"):
        return Path(url)
    if not url.startswith(SCHEME) or url == SCHEME:
        raise ConfigError(
            f"storage {url}: a journal storage is journal:///PATH.log (relative) or journal:////PATH.log "
            "(absolute: four slashes), or a plain path ending in .log"
        )
    return Path(url.removeprefix(SCHEME))


def check_journal(url: str) -> None:
    """A journal URL whose file is a folder, or a file that is not an Optuna journal (a SQLite database, a text
    file), is a ConfigError, before anything is created beside it."""
    path = journal_path(url)
    if path.is_dir():
        raise ConfigError(f"storage {url}: {path} is a folder, not a journal file")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(1) != b"{":  # each line of a journal is one JSON object
                raise ConfigError(
                    f"storage {url}: {path} is not an Optuna journal (its lines are not JSON objects); give a new "
                    "file name, or the journal a sweep wrote"
                )


class ReadOnlyBackend(JournalFileBackend):
    """A journal log opened only to read (tables, reports, --check): a write is a bug, never done."""

    def append_logs(self, logs: list) -> None:
        raise RuntimeError(f"{self._file_path} was opened only to read; nothing may be written to it")


class JournalStudyStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage on a file, with heartbeats: each beat is the trial's system attr `heartbeat` (its
    worker's clock), and a RUNNING trial silent for the grace period (since its last beat, or its start if it never
    beat) is stale: `fail_stale_trials` fails it and queues a WAITING copy (RetryHeartbeatStaleTrialCallback).

    The machines' clocks must agree to well within the grace period (NTP does; Optuna stamps trials the same way)."""

    def __init__(self, url: str, heartbeat: tuple[int, int] | None = None, read_only: bool = False):
        self.url, self.path = url, journal_path(url)
        self.heartbeat_interval, self.grace_period = heartbeat or (None, None)
        self._retry = RetryHeartbeatStaleTrialCallback() if heartbeat else None  # what RDBStorage is given
        backend = ReadOnlyBackend if read_only else JournalFileBackend
        super().__init__(backend(str(self.path), lock_obj=JournalFileOpenLock(str(self.path))))

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # it ended: its last beat is moot
            self.set_trial_system_attr(trial_id, BEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        now, grace = time.time(), self.grace_period or 2 * self.heartbeat_interval
        return [t._trial_id for t in running if silence(t, now) > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._retry

    def study_lock(self, name: str) -> FileLock:
        """The lock of study `name`'s trial slots (and of its first settings), beside the log."""
        return study_lock(self.url, name)


def silence(trial: optuna.trial.FrozenTrial, now: float) -> float:
    """Seconds a RUNNING trial has been silent: since its last heartbeat or its start, whichever is later (a retried
    trial's copy carries its stale predecessor's last beat)."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return now - max(trial.system_attrs.get(BEAT, 0.0), started)


def study_lock(url: str, name: str) -> FileLock:
    """The lock file of study `name`'s trial slots in the journal at `url`: PATH.log.NAME.lock."""
    path = journal_path(url)
    return FileLock(path.with_name(f"{path.name}.{name}.lock"))


def set_once(study: optuna.Study, key: str, value) -> object:
    """Study user attr `key`: `value` when it has none yet, set under the study's lock, so that of several workers
    starting together only the first sets it and all of them get the same."""
    with study._storage.study_lock(study.study_name).held(f"study {study.study_name!r}'s lock"):
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study.user_attrs[key]


class LockLost(RuntimeError):
    """A study lock was broken while held (its holder froze past STALE_LOCK seconds): what it guarded starts again."""


class FileLock:
    """An exclusive lock across machines on a shared file system: a file created with O_CREAT | O_EXCL (atomic on
    NFSv3 and later, no links: the technique of Optuna's JournalFileOpenLock) that holds its holder's token.

    The holder touches it every second; one untouched for `stale` seconds, timed on the waiter's own clock (so clocks
    that differ between machines do not matter), has a dead or frozen holder and is broken. A holder removes only
    its own file, and `held_still` tells it that its lock was broken meanwhile."""

    def __init__(self, path: Path, stale: float = STALE_LOCK):
        self.path, self.stale = Path(path), stale
        self.token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        self._seen, self._since = None, 0.0

    @contextlib.contextmanager
    def held(self, what: str):
        """Hold the lock, waiting for it up to the storage timeout (`PATIENCE`; StorageUnavailable past it) and
        naming `what` after 10 s."""
        self._seen = None
        wait_for(self._take, f"{what}, which another worker holds ({self.path})", PATIENCE.timeout)
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(stop,), daemon=True)
        keeper.start()
        try:
            yield self
        finally:
            stop.set()
            keeper.join()
            if self.held_still():
                with contextlib.suppress(FileNotFoundError):
                    self._remove()

    def held_still(self) -> bool:
        """True while the lock file is this holder's (an open reads it fresh, even over NFS)."""
        try:
            return self.path.read_text() == self.token
        except FileNotFoundError:
            return False

    def _take(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._break_if_stale()
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        return True

    def _keep(self, stop: threading.Event) -> None:
        while not stop.wait(1):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def _break_if_stale(self) -> None:
        now, seen = time.monotonic(), self._signature()
        if seen != self._seen:
            self._seen, self._since = seen, now
        elif seen is not None and now - self._since > self.stale:
            say(f"  {self.path}: untouched for {self.stale:g} s, its holder died or froze: breaking it")
            with contextlib.suppress(FileNotFoundError):
                self._remove()
            self._seen = None

    def _signature(self) -> tuple | None:
        """(inode, mtime, size) of the lock file, or None without one; opened first, so NFS revalidates them."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            return st.st_ino, st.st_mtime_ns, st.st_size
        finally:
            os.close(fd)

    def _remove(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.removed")
        os.rename(self.path, aside)  # of several removing it at once, one renames it: the others find none
        os.unlink(aside)
