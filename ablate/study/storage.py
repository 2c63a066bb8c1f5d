"""The one home of the Optuna storage: its URL (flag, $ABLATE_STORAGE, default), redaction, locks, studies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import optuna

from ablate.errors import ConfigError, check_path_name
from ablate.study.outage import PATIENCE, PatientRDBStorage, reason

DEFAULT_STORAGE = "sqlite:///runs/ablate.db"
STORAGE_ENV = "ABLATE_STORAGE"  # keeps a password out of argv (and `ps`)


def resolve(flag: str | None) -> str:
    """The storage URL: --storage, else $ABLATE_STORAGE, else the default SQLite file; one that is not a URL is a
    ConfigError naming where it came from (its password masked)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = flag or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    try:
        make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        source = "--storage" if flag else f"${STORAGE_ENV}"
        raise ConfigError(
            f"{source}={mask_password(url)!r} is not a storage URL; use "
            "sqlite:///PATH (one machine) or postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB (many machines)"
        ) from None
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

    return url if url.startswith("sqlite") else make_url(url).render_as_string(hide_password=True)


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
) -> optuna.storages.RDBStorage:
    """An RDB storage: SQLite (one machine) or PostgreSQL (many); a server it cannot reach is a ConfigError naming
    its host and port.

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
    if not url.startswith("sqlite:///"):
        if not url.startswith("postgresql"):
            raise ConfigError(
                f"storage {redact(url)!r}: use sqlite:///PATH (one machine) or "
                "postgresql+psycopg2://USER:PASSWORD@HOST/DB (many machines)"
            )
        return connect(lambda: kind(url, engine_kwargs={"pool_pre_ping": True}, **beat), url)
    with sqlite_lock(url):  # workers that start together create the schema one at a time
        return connect(lambda: kind(url, engine_kwargs={"connect_args": {"timeout": 60}}, **beat), url)


def connect(make, url: str):
    """make(): the storage; a server that refuses or a file that cannot be opened is a ConfigError."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    try:
        return make()
    except OperationalError as e:
        u = make_url(url)
        where = f"the server at {u.host}:{u.port or 5432}" if u.host else f"the database {u.database}"
        raise ConfigError(f"storage {redact(url)}: cannot reach {where}: {reason(e)}") from None


def close_connections(study: optuna.Study) -> None:
    """Close the connections `study`'s storage holds (before a fork: a connection must not be shared)."""
    storage = study._storage
    getattr(storage, "_backend", storage).engine.dispose()


def study_names(storage) -> list[str]:
    """The names of the studies in `storage`."""
    return [s.study_name for s in optuna.get_all_study_summaries(storage)]


def load_study(name: str, storage, **kwargs) -> optuna.Study:
    """The stored study `name`; an unknown name is a ConfigError listing the studies there."""
    check_path_name("study", name)
    try:
        return optuna.load_study(study_name=name, storage=storage, **kwargs)
    except KeyError:
        raise ConfigError(
            f"no study {name!r} in this storage; studies: {', '.join(study_names(storage)) or 'none'}"
        ) from None


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
