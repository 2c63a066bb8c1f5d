"""A study's invariants, checked after the fact as Jepsen checks a database's history after its faults: no trial
RUNNING without a live heartbeat, no (variant, seed) completed twice, every COMPLETE trial with its per-seed values
and run folders (this study's, not another's of its name: runs/<study>/study.json), and its W&B runs (offline
folders under runs/wandb) where the trial logged to W&B."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ablate.study.folders import foreign
from ablate.study.journal import JournalStudyStorage, silence

REPAIR = (
    "repair: run the same `python -m ablate.sweep` command again: it fails silent RUNNING trials after the grace "
    "period and runs them again, and re-runs what is missing; a seed completed twice counts once in every table"
)


def check_study(study: optuna.Study, runs: Path = Path("runs"), wandb_dir: Path | None = None) -> list[str]:
    """What is wrong with `study` (its run folders under `runs`/<study>/), one line each; [] when all holds."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    problems = [f"trial {n} is RUNNING but silent for {age:.0f} s (no live heartbeat)" for n, age in silent(study)]
    pairs = Counter((t.user_attrs.get("variant"), int(s)) for t in complete for s in t.user_attrs.get("seeds", []))
    problems += [f"{variant} seed {seed} completed {n} times" for (variant, seed), n in pairs.items() if n > 1]
    if why := foreign(runs / study.study_name, study):
        problems.append(
            f"{why}: move it aside and run this study's sweep again, or give --runs the folder with its runs"
        )
    wandb = wandb_names(wandb_dir or runs / "wandb", study.study_name)
    for t in complete:
        problems += trial_problems(t, runs / study.study_name, wandb)
    return problems


def trial_problems(t: optuna.trial.FrozenTrial, folder: Path, wandb: set[str]) -> list[str]:
    """What a COMPLETE trial lacks: its per-seed values, a run folder with summary.json per seed, a W&B run."""
    seeds, values = t.user_attrs.get("seeds"), t.user_attrs.get("values")
    if not seeds or not values or len(seeds) != len(values):
        return [f"trial {t.number} is COMPLETE without its per-seed values (seeds {seeds}, values {values})"]
    out = [
        f"trial {t.number} seed {s}: no run folder {folder / f't{t.number}-s{s}'}/summary.json"
        for s in seeds
        if not (folder / f"t{t.number}-s{s}" / "summary.json").is_file()
    ]
    if (t.user_attrs.get("config") or {}).get("wandb", {}).get("mode") in ("offline", "online"):
        out += [
            f"trial {t.number} seed {s}: no W&B run t{t.number}-s{s}" for s in seeds if f"t{t.number}-s{s}" not in wandb
        ]
    return out


def wandb_names(folder: Path, study_name: str) -> set[str]:
    """Names of the W&B runs tagged with `study_name` among the local run folders in `folder`."""
    from ablate.study.wandb_files import run_info

    names = set()
    for run in sorted(folder.glob("*run-*")) if folder.is_dir() else ():
        try:
            info = run_info(run)
        except ValueError:  # a run that never wrote its file
            continue
        if study_name in info.get("tags", []):
            names.add(info.get("name"))
    return names


def silent(study: optuna.Study, after: float | None = None) -> list[tuple[int, float]]:
    """(number, seconds since its last heartbeat, or since it started if it never beat) of each RUNNING trial
    silent for longer than `after` seconds, by default the study's grace period (its stored sweep's
    `study.grace_period`)."""
    grace = study.user_attrs.get("sweep", {}).get("study", {}).get("grace_period", 120) if after is None else after
    if isinstance(study._storage, JournalStudyStorage):  # the heartbeat is a trial attr, on the workers' clocks
        now, running = time.time(), study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [(t.number, age) for t in running if (age := silence(t, now)) > grace]
    return rdb_silent(study, grace)


def rdb_silent(study: optuna.Study, grace: float) -> list[tuple[int, float]]:
    """`silent` of a study in an RDB storage: heartbeats on the database's clock."""
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models

    backend = getattr(study._storage, "_backend", study._storage)  # Optuna's cache wraps the RDB storage
    out = []
    with backend.scoped_session() as session:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        running = session.query(models.TrialModel).filter(
            models.TrialModel.study_id == study._study_id, models.TrialModel.state == TrialState.RUNNING
        )
        for trial in running:
            if trial.heartbeats:  # the storage's clock on both sides
                age = (now - trial.heartbeats[0].heartbeat).total_seconds()
            else:  # Optuna stamps the start with the worker's clock
                age = (datetime.datetime.now() - trial.datetime_start).total_seconds()
            if age > grace:
                out.append((trial.number, age))
    return out
