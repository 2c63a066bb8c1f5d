"""The one home of the Optuna storage: its URL (flag, $ABLATE_STORAGE, default), redaction, locks, studies; opened
to write (sweeps) or only to read (table, report, dashboard, --check: nothing created, nothing written)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path

import optuna

from ablate.cli import DEFAULT_STORAGE
from ablate.errors import ConfigError, check_path_name
from ablate.study.journal import JournalStudyStorage, check_journal, is_journal, journal_path
from ablate.study.outage import PATIENCE, PatientRDBStorage, reason

STORAGE_ENV = "ABLATE_STORAGE"  # keeps a password out of argv (and `ps`)
KINDS = (
    "sqlite:///PATH (one machine), postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB (many machines, a database "
    "server) or journal:///PATH.log (many machines sharing a file system, no server; journal:////PATH.log absolute)"
)


class NoStudies(ConfigError):
    """A storage that holds no study: a SQLite or journal file that does not exist, or a database without Optuna's
    tables."""


def resolve(flag: str | None) -> str:
    """The storage URL: --storage, else $ABLATE_STORAGE, else the default SQLite file; one that is not a URL is a
    ConfigError naming where it came from (its password masked)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = flag or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    try:
        journal_path(url) if is_journal(url) else make_url(url)
    except (ArgumentError, ValueError, ConfigError):  # ValueError: a port that is not a number
        source = "--storage" if flag else f"${STORAGE_ENV}"
        raise ConfigError(f"{source}={mask_password(url)!r} is not a storage URL; use {KINDS}") from None
    return url


def mask_password(text: str) -> str:
    """`text` with what lies between USER: and the last @ replaced by ***, whether or not it parses as a URL."""
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    start = head.find("//") + 2 if "//" in head else 0
    user, colon, _ = head[start:].partition(":")
    return f"{head[:start]}{user}{':***' if colon else ''}@{tail}"


def redact(url: str) -> str:
    """The storage URL with its password replaced by ***."""
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite") or is_journal(url):
        return url
    return make_url(url).render_as_string(hide_password=True)


@contextlib.contextmanager
def sqlite_lock(url: str):
    """An exclusive lock on a file beside a SQLite database: one process of this machine at a time."""
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def make_storage(
    url: str, heartbeat: tuple[int, int] | None = None, patience: float | None = None
) -> optuna.storages.BaseStorage:
    """The storage at `url`: SQLite (one machine), PostgreSQL (many) or a journal file (many, on a shared file
    system; ablate.study.journal); a server it cannot reach is a ConfigError naming its host and port.

    `heartbeat` = (interval, grace period) in seconds: running trials record heartbeats, and a trial whose
    worker died is failed and queued again with the same parameters. `patience` = seconds every call waits out
    a storage outage (ablate.study.outage; None: no waiting, as the commands that only read).
    """
    beat = {}
    if heartbeat:
        beat = {
            "heartbeat_interval": heartbeat[0],
            "grace_period": heartbeat[1],
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(),
        }
    if patience is not None:
        PATIENCE.timeout = patience
    kind = PatientRDBStorage if patience is not None else optuna.storages.RDBStorage
    check_kind(url)
    if is_journal(url):
        return open_journal(url, heartbeat)
    if not url.startswith("sqlite:///"):
        return connect(lambda: kind(url, engine_kwargs={"pool_pre_ping": True}, **beat), url)
    with sqlite_lock(url):  # workers that start together create the schema one at a time
        return connect(lambda: kind(url, engine_kwargs={"connect_args": {"timeout": 60}}, **beat), url)


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_kind(url: str) -> None:
    """A URL of a storage ablate does not run on (neither SQLite, PostgreSQL nor a journal file), or one naming a
    file that is not of its kind (a folder, a text file), is a ConfigError, before anything is created beside it."""
    if is_journal(url):
        return check_journal(url)
    if not url.startswith(("sqlite:///", "postgresql")):
        raise ConfigError(f"storage {redact(url)!r}: use {KINDS}")
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if path is not None and path.is_dir():
        raise ConfigError(f"storage {url}: {path} is a folder, not a SQLite database file")
    if path is not None and path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise ConfigError(
                    f"storage {url}: {path} is not a SQLite database (it does not start with SQLite's header); "
                    "give a new file name, or the database a sweep wrote"
                )


def connect(make, url: str, tries: int = 5):
    """make(): the storage; a server that refuses, a file that cannot be opened or one that is not a database is a
    ConfigError. Machines that start on a new PostgreSQL database together race to create Optuna's tables: the
    loser's IntegrityError is retried (`tries` times, 0.5 s apart), when the tables are there."""
    import time

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

    try:
        return make()
    except IntegrityError:
        if tries <= 1:
            raise
        time.sleep(0.5)
        return connect(make, url, tries - 1)
    except OperationalError as e:
        u = make_url(url)
        where = f"the server at {u.host}:{u.port or 5432}" if u.host else f"the database {u.database}"
        raise ConfigError(f"storage {redact(url)}: cannot reach {where}: {reason(e)}") from None
    except DatabaseError as e:  # SQLite: "file is not a database"
        raise ConfigError(f"storage {redact(url)}: cannot read it as a database: {reason(e)}") from None


def open_journal(url: str, heartbeat: tuple[int, int] | None = None, read_only: bool = False) -> JournalStudyStorage:
    """The journal storage at `url` (ablate.study.journal), its folder made first unless `read_only`; a file it cannot
    make, open or read as a journal is a ConfigError naming it."""
    try:
        if not read_only:
            journal_path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStudyStorage(url, heartbeat, read_only)
    except (OSError, ValueError) as e:  # permissions; a line that is not JSON
        raise ConfigError(f"storage {url}: cannot read it as an Optuna journal: {type(e).__name__}: {e}") from None


def read_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage at `url` opened only to read (table, report, dashboard, --check): no file, table, lock or row is
    created or written there (SQLite opened read-only, PostgreSQL in read-only transactions, a journal's writes
    refused); a storage that holds no study (no such SQLite or journal file, no Optuna tables) is NoStudies naming
    it."""
    from sqlalchemy.engine import make_url

    check_kind(url)
    if url.startswith("sqlite:///") or is_journal(url):
        path = journal_path(url) if is_journal(url) else Path(make_url(url).database or "")
        if not path.is_file():
            raise NoStudies(
                f"storage {url}: there is no file {path}, so no study has been run there "
                "(--storage or $ABLATE_STORAGE: the storage the sweep used)"
            )
        if is_journal(url):
            return open_journal(url, read_only=True)
        uri = f"{path.resolve().as_uri()}?mode=ro"
        engine = {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}
    else:
        engine = {"pool_pre_ping": True, "connect_args": {"options": "-c default_transaction_read_only=on"}}
    if not connect(lambda: has_tables(url, engine), url):
        raise NoStudies(f"storage {redact(url)}: it has no Optuna tables, so no study has been run there")
    return connect(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine, skip_table_creation=True), url)


def has_tables(url: str, engine_kwargs: dict) -> bool:
    """True when the database at `url` has Optuna's tables (read without creating them)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, **engine_kwargs)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


def close_connections(study: optuna.Study) -> None:
    """Close the connections `study`'s storage holds (before a fork: a connection must not be shared)."""
    close(study._storage)


def close(storage) -> None:
    """Close the connections an RDB storage holds (a journal holds none: it opens its file for each call)."""
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)  # Optuna's cache wraps the RDB storage
    if engine is not None:
        engine.dispose()


def dashboard_storage(url: str) -> str:
    """What `optuna-dashboard` takes for the storage at `url`: a journal's file path (it reads a journal from an
    existing file's path, not from a journal:/// URL), else the URL with its password masked."""
    return str(journal_path(url)) if is_journal(url) else redact(url)


def study_names(storage) -> list[str]:
    """The names of the studies in `storage`."""
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def load_study(name: str, storage, **kwargs) -> optuna.Study:
    """The stored study `name`; an unknown name is a ConfigError naming the storage and the studies there."""
    check_path_name("study", name)
    try:
        return optuna.load_study(study_name=name, storage=storage, **kwargs)
    except KeyError:
        names = ", ".join(study_names(storage))
        url = storage if isinstance(storage, str) else getattr(storage, "url", None)
        there = f"studies there: {names}" if names else "it holds no study"
        raise ConfigError(f"no study {name!r} in {redact(url) if url else 'this storage'}; {there}") from None


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its own stop: the worker loop stops at exactly n_trials."""

    def after_trial(self, *args) -> None:
        pass


def open_study(sweep, storage_url: str) -> optuna.Study:
    """Create the study of `sweep` (a SweepConfig) or load it; a stored study with another space or direction is
    an error."""
    from ablate.study.space import grid_choices, to_plain

    s = sweep.study
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=s.sampler_seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=s.sampler_seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=s.sampler_seed),
        "grid": lambda: GridSampler(grid_choices(sweep.space), seed=s.sampler_seed),
    }
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }
    storage = make_storage(storage_url, (s.heartbeat_interval, s.grace_period), s.storage_timeout)
    study = optuna.create_study(
        study_name=s.name,
        storage=storage,
        sampler=samplers[s.sampler](),
        pruner=pruners[s.pruner](),
        direction=s.direction,
        load_if_exists=True,
    )
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", sweep.space_json())
        study.set_user_attr("sweep", to_plain(sweep))
    elif stored != sweep.space_json():
        raise ConfigError(
            f"study {s.name!r} already exists in this storage with another search space or direction.\n"
            f"stored: {stored}\nnew:    {sweep.space_json()}\n"
            "Use --study NEW_NAME for the new space, or the stored sweep file to resume."
        )
    return study
