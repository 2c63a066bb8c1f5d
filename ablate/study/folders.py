"""Whose runs a run folder holds: runs/<study>/study.json names its storage and its study (by an id the study keeps
in its user attrs), so a study of the same name in another storage, or created again, never writes over them."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import optuna

from ablate.cli import warn
from ablate.errors import ConfigError
from ablate.study.journal import JournalStudyStorage, set_once
from ablate.study.storage import NoStudies, close, read_storage, redact

RECORD = "study.json"  # in runs/<study>/
ID = "ablate_id"  # the study's user attr: a random id, set once, that tells apart studies of one name
_warned: set[str] = set()  # the folders a table or report has already warned about in this process


def record_of(root: Path) -> dict | None:
    """What `root`/study.json says ({study, storage, id, study_id}); None when there is none (a folder from before
    records, or no folder)."""
    path = root / RECORD
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as e:
        raise ConfigError(
            f"{path}: not the record a sweep writes ({e}); delete it and the study adopts the folder"
        ) from None
    return record if isinstance(record, dict) else {}


def ensure_id(study: optuna.Study) -> str:
    """The study's id, stored first when it has none (a new study, or one from before ids) by one insert that only
    the first of several sweeps starting together makes: all of them get the same id."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if (found := study.user_attrs.get(ID)) is not None:
        return found
    if isinstance(study._storage, JournalStudyStorage):  # no conditional insert in a log: its study lock instead
        return set_once(study, ID, uuid.uuid4().hex)
    backend = getattr(study._storage, "_backend", study._storage)  # Optuna's cache wraps the RDB storage
    with _create_scoped_session(backend.scoped_session, ignore_integrity_error=True) as session:
        value = json.dumps(uuid.uuid4().hex)
        session.add(models.StudyUserAttributeModel(study_id=study._study_id, key=ID, value_json=value))
    return study.user_attrs[ID]


def stored_id(url: str, name: str) -> str | None:
    """The id of study `name` in the storage at `url`, read without writing; None when there is no such study."""
    try:
        storage = read_storage(url)
    except NoStudies:
        return None
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name)).get(ID)
    except KeyError:
        return None
    finally:
        close(storage)


def refuse_another(root: Path, url: str, name: str) -> None:
    """Before a sweep opens (or creates) study `name` in `url`: a ConfigError when `root` holds another study's runs
    (another storage's, or an earlier study of the same name), naming both and the way out."""
    record = record_of(root)
    if record is not None and record.get("id") != (own := stored_id(url, name)):
        raise ConfigError(conflict(root, record, name, url, own))


def claim(root: Path, study: optuna.Study, url: str) -> None:
    """Record in `root` that it holds `study`'s runs (a folder without a record is adopted: resume keeps working);
    one recorded for another study is a ConfigError."""
    own = ensure_id(study)
    record = record_of(root)
    if record is not None and record.get("id") != own:
        raise ConfigError(conflict(root, record, study.study_name, url, own))
    if record is None:
        root.mkdir(parents=True, exist_ok=True)
        mine = {"study": study.study_name, "storage": redact(url), "id": own, "study_id": study._study_id}
        part = root / f".{RECORD}.{os.getpid()}"
        part.write_text(json.dumps(mine, indent=1) + "\n")
        os.replace(part, root / RECORD)  # whole or not at all, whichever worker writes it


def owner(record: dict) -> str:
    """'study NAME (id ABCDEF12) in STORAGE': the study a record names."""
    return f"study {record.get('study')!r} (id {str(record.get('id'))[:8]}) in {record.get('storage')}"


def conflict(root: Path, record: dict, name: str, url: str, own: str | None) -> str:
    """The one line a sweep stops with when `root` holds the runs of the study `record` names."""
    ours = f"study {name!r} (id {own[:8]})" if own else f"a new study {name!r}"
    return (
        f"{root}/ holds the runs of {owner(record)} ({root / RECORD}); {ours} in {redact(url)} would overwrite "
        f"them: use another --study name, or move or delete {root}/"
    )


def foreign(root: Path, study: optuna.Study) -> str | None:
    """Why `root` does not hold `study`'s runs (its record names another study), or None: it does, it has no record
    (a folder from before records), or it does not exist."""
    record, own = record_of(root), study.user_attrs.get(ID)
    if record is None or record.get("id") == own:
        return None
    return f"{root}/ holds the runs of {owner(record)} ({root / RECORD}), not of this study" + (
        f" (id {own[:8]})" if own else ""
    )


def readable(root: Path, study: optuna.Study) -> bool:
    """True when tables and reports may read `study`'s runs from `root`; False, with one warning line per process,
    when it holds another study's."""
    why = foreign(root, study)
    if why and (key := f"{root.resolve()} {study.study_name}") not in _warned:
        _warned.add(key)
        warn(f"{why}: its run folders are left out (latency, per-class IoU, receptive fields, predictions)")
    return why is None
