"""Storage outages waited out: a PostgreSQL restart, failover or dropped connection (or SQLite "database is locked"
beyond its busy timeout) makes a storage call wait and retry with backoff for `study.storage_timeout` seconds, the
way a client of a replicated database rides out a failover; past it the worker stops (StorageUnavailable).

Every call of the storage goes through one `Patience` per process (the main thread and the heartbeat thread
share it): one line when the storage stops answering, one when it is back. An outage is timed from its first
failed call, so a worker never waits longer than the bound in all, whichever thread asks.
"""

from __future__ import annotations

import sys
import threading
import time

import optuna

DEFAULT_TIMEOUT = 300  # seconds a worker waits for its storage before it stops
EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): the storage stayed away; the same command later goes on
SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def say(line: str) -> None:
    """Print a line to stderr as it is (no ablate.cli here: the storage module, which imports this one, is
    imported by ablate.cli)."""
    print(line, file=sys.stderr, flush=True)


class StorageUnavailable(RuntimeError):
    """The storage did not answer for longer than the bound: the worker stops, its trial left to the heartbeat."""


def is_outage(error: BaseException | None) -> bool:
    """True when `error` (or an exception it was raised from) says the storage cannot be reached right now."""
    import sqlalchemy.exc as sa

    while error is not None:
        if isinstance(error, StorageUnavailable):
            return False
        if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, (sa.DisconnectionError, sa.InterfaceError, sa.PendingRollbackError)):
            return True  # InvalidatePoolError is a DisconnectionError
        if isinstance(error, sa.OperationalError):
            if type(error.orig).__module__.startswith("sqlite3"):
                return any(word in str(error.orig).lower() for word in SQLITE_TRANSIENT)
            return True  # psycopg2: connection refused, server closed the connection, admin shutdown, ...
        error = error.__cause__ or error.__context__
    return False


def reason(error: BaseException) -> str:
    """The first line of the driver's message under `error` (never the URL, so never a password)."""
    cause = error
    while cause is not None and getattr(cause, "orig", None) is None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause.orig if cause is not None else error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Patience:
    """Runs storage calls, waiting out outages up to `timeout` seconds (one per process: `PATIENCE`)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout, self.since, self.lock = timeout, None, threading.Lock()

    def call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried with backoff (0.5 s doubling to 4 s) while the storage is away."""
        delay = 0.5
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                if not is_outage(e):
                    raise
                self._wait(e, delay)
                delay = min(2 * delay, 4)
                continue
            if self.since is not None:
                self._back()
            return out

    def _wait(self, error: Exception, delay: float) -> None:
        with self.lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                say(
                    f"storage unreachable ({reason(error)}): waiting up to {self.timeout:g} s for it "
                    "(--storage-timeout); the running trial keeps training"
                )
            left = self.since + self.timeout - now
        if left <= 0:
            raise StorageUnavailable(
                f"the storage did not answer for {self.timeout:g} s ({reason(error)}); this worker stopped, its "
                "running trial is retried by the next worker after the heartbeat grace period: run the same "
                "command once the storage is back (a longer wait: --storage-timeout SECONDS)"
            ) from error
        time.sleep(min(delay, left))

    def _back(self) -> None:
        with self.lock:
            if self.since is not None:
                say(f"storage back after {time.monotonic() - self.since:.0f} s; going on")
                self.since = None


PATIENCE = Patience()


def wait_for(taken, what: str, timeout: float, notice: float = 10) -> None:
    """Call taken() every 0.2 s until it is true (a lock another worker holds): one line after `notice` s saying what
    it waits for, and StorageUnavailable past `timeout` s, as a storage that stopped answering (a holder that froze)."""
    start, said = time.monotonic(), False
    while not taken():
        waited = time.monotonic() - start
        if waited > timeout:
            raise StorageUnavailable(
                f"waited {timeout:g} s for {what}; this worker stopped: run the same command again (a longer "
                "wait: --storage-timeout SECONDS)"
            )
        if waited > notice and not said:
            say(f"  waiting for {what} (up to {timeout:g} s in all)")
            said = True
        time.sleep(0.2)


# RDBStorage's methods that open a session: each is one transaction, retried whole
CALLS = (
    "create_new_study delete_study set_study_user_attr set_study_system_attr get_study_id_from_name "
    "get_study_name_from_id get_study_directions get_study_user_attrs get_study_system_attrs get_trial_user_attrs "
    "get_trial_system_attrs get_all_studies _create_new_trial _set_trial_param get_trial_param "
    "set_trial_state_values set_trial_intermediate_value set_trial_user_attr set_trial_system_attr "
    "get_trial_id_from_study_id_trial_number get_trial _get_trials _get_best_trial_id record_heartbeat "
    "_get_stale_trial_ids"
).split()


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose every call waits out a storage outage (`PATIENCE`)."""


def _patient(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    def call(self, *args, **kwargs):
        return PATIENCE.call(method, self, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


for _name in CALLS:
    setattr(PatientRDBStorage, _name, _patient(_name))
