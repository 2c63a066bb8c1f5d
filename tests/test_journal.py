"""A study on a journal file (Optuna's journal storage on a shared file system, no database server): its URLs, exact
totals under racing worker processes, a SIGKILLed worker's trial run again after the grace period, and a real sweep
that every reading command reads without writing a byte, and that resumes with nothing to run."""

import importlib.util
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep
from optuna.trial import TrialState
from test_workers import write_sweep as grid_sweep

from ablate.dashboard import main as dashboard
from ablate.errors import ConfigError
from ablate.report import main as report
from ablate.study.journal import BEAT, FileLock, is_journal, journal_path
from ablate.study.storage import check_kind, dashboard_storage, read_storage, resolve
from ablate.sweep import main as sweep
from ablate.table import main as table

URL = "journal:///runs/x.log"


def stored(name: str, url: str = URL) -> list[optuna.trial.FrozenTrial]:
    """The trials of study `name` in the journal at `url`, read as the reading commands read it."""
    return optuna.load_study(study_name=name, storage=read_storage(url)).get_trials()


def test_journal_urls_read_as_sqlalchemy_reads_sqlite_urls(monkeypatch):
    assert journal_path("journal:///runs/x.log") == Path("runs/x.log")  # three slashes: relative
    assert journal_path("journal:////scratch/x.log") == Path("/scratch/x.log")  # four: absolute
    assert is_journal("runs/x.log") and journal_path("runs/x.log") == Path("runs/x.log")  # a plain path
    assert not is_journal("sqlite:///runs/x.log")
    monkeypatch.setenv("ABLATE_STORAGE", "runs/x.log")
    assert resolve(None) == "runs/x.log"
    with pytest.raises(ConfigError, match=r"journal:////PATH.log \(absolute: four slashes\)"):
        check_kind("journal://host/x.log")
    with pytest.raises(ConfigError, match=r"--storage='journal://host/x.log' is not a storage URL; use sqlite"):
        resolve("journal://host/x.log")
    with pytest.raises(ConfigError, match=r"or journal:///PATH.log \(many machines sharing a file system"):
        check_kind("mysql://u@host/db")
    Path("runs").mkdir()
    sqlite3.connect("runs/db.log").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ConfigError, match="runs/db.log is not an Optuna journal"):
        check_kind("runs/db.log")


def test_a_study_lock_left_by_a_dead_holder_is_broken_and_a_live_holders_never(capsys):
    Path("runs").mkdir()
    path = Path("runs/x.log.t.lock")
    path.write_text("a worker SIGKILLed while it held the lock")  # what its O_EXCL file stays as
    started = time.monotonic()
    with FileLock(path, stale=2).held("the trial-slot lock") as lock:
        assert time.monotonic() - started > 2 and lock.held_still()
        assert "runs/x.log.t.lock: untouched for 2 s, its holder died or froze: breaking it" in capsys.readouterr().err
        other, deadline = FileLock(path, stale=2), time.monotonic() + 3.5
        while time.monotonic() < deadline:  # the holder touches it every second: never taken for a dead one
            assert not other._take()
            time.sleep(0.1)
        path.write_text(other.token)  # as if it froze past the staleness and another worker took the lock
        assert not lock.held_still()  # what Slots.check_held asks before it writes (LockLost: start again)
    assert path.read_text() == other.token  # a holder removes only its own lock file


def _victim(path: str, beat: bool, started) -> None:
    """A worker that takes a slot and hangs in its trial: with heartbeats (the engine's run_one), or dead before
    its first one."""
    from ablate.study.engine import run_one
    from ablate.study.space import load_sweep, suggest
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    sweep = load_sweep(path)
    study = open_study(sweep, URL)
    trial = Slots(URL, "w", sweep.n_trials).claim(study)
    suggest(trial, sweep.space)
    started.set()
    if beat:
        run_one(study, trial, lambda trial: time.sleep(600), sweep.study.heartbeat_interval)
    time.sleep(600)


@pytest.mark.timeout(180)  # a trial never found stale: the survivor would wait for it forever
@pytest.mark.parametrize("beat", [True, False], ids=["after-its-heartbeats", "before-its-first-heartbeat"])
def test_a_sigkilled_workers_trial_is_failed_and_run_again_after_the_grace_period(beat, capsys):
    from ablate.study.engine import StopOnRepeatedFailure, run_trials
    from ablate.study.space import load_sweep, suggest
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    path = grid_sweep(n_trials=2, widths=[8, 12], heartbeat_interval=1, grace_period=3)
    ctx = multiprocessing.get_context("fork")
    started = ctx.Event()
    victim = ctx.Process(target=_victim, args=(path, beat, started))
    victim.start()
    try:
        assert started.wait(120)
        deadline = time.time() + 60
        while beat and BEAT not in stored("w")[0].system_attrs and time.time() < deadline:
            time.sleep(0.1)
    finally:
        os.kill(victim.pid, signal.SIGKILL)  # no handler runs: its trial stays RUNNING
        victim.join()
    (dead,) = stored("w")
    assert dead.state == TrialState.RUNNING and (BEAT in dead.system_attrs) == beat
    last = max(dead.system_attrs.get(BEAT, 0), dead.datetime_start.timestamp())
    time.sleep(max(0, last + 3.5 - time.time()))
    assert table(["--check", "--study", "w", "--storage", URL]) == 1  # the invariant check sees it
    assert re.search(r"study w: trial 0 is RUNNING but silent for \d+ s \(no live heartbeat\)", capsys.readouterr().err)
    sweep = load_sweep(path)
    study = open_study(sweep, URL)
    objective = lambda trial: suggest(trial, sweep.space)["model.neck.out_channels"] / 100  # noqa: E731
    run_trials(study, objective, Slots(URL, "w", 2), [], StopOnRepeatedFailure(), sweep.study)
    trials = stored("w")
    assert trials[0].state == TrialState.FAIL  # failed as stale by the survivor ...
    (rerun,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert rerun.state == TrialState.COMPLETE and rerun.params == dead.params  # ... and run again
    assert rerun.datetime_start.timestamp() >= last + 3  # not before the grace period
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.neck.out_channels"] for t in complete) == [8, 12]  # exactly the total


def snapshot() -> dict:
    """Every file under runs/ with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path("runs").rglob("*") if p.is_file()}


def test_a_sweep_on_a_journal_is_read_by_every_command_writes_nothing_there_and_resumes_with_nothing_to_run(capsys):
    path = write_sweep(n_trials=2, seeds=(0,))
    assert sweep([path, "--storage", URL]) == 0
    out = capsys.readouterr()
    assert dashboard_storage(URL) == "runs/x.log"  # what optuna-dashboard reads (a journal's file path) ...
    assert ("optuna-dashboard runs/x.log" in out.out) == bool(importlib.util.find_spec("optuna_dashboard"))  # if here
    before = snapshot()
    assert table(["--study", "t", "--storage", URL, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["variant"] for r in rows) == ["model.neck.fusion=concat", "model.neck.fusion=sum"]
    assert table(["--check", "--storage", "runs/x.log"]) == 0  # a plain path ending in .log: the same journal
    assert "study t: no problem(s) in 2 trial(s)" in capsys.readouterr().err
    assert report(["--study", "t", "--storage", URL, "--out", "report.html"]) == 0
    assert dashboard(["--study", "t", "--storage", URL, "--entity", "e", "--project", "p", "--dry-run"]) == 0
    assert snapshot() == before  # nothing written, no lock left or made
    assert sweep([path, "--storage", URL]) == 0  # the same command again: the table, nothing run
    assert "trial 2" not in capsys.readouterr().err
    assert [t.state for t in stored("t")] == [TrialState.COMPLETE] * 2


def test_a_missing_journal_is_an_error_naming_it_and_nothing_is_created(capsys):
    assert table(["--study", "t", "--storage", "journal:///runs/none.log"]) == 2
    err = capsys.readouterr().err
    assert "storage journal:///runs/none.log: there is no file runs/none.log, so no study has been run there" in err
    assert not Path("runs").exists()
