"""`--workers N` forks its workers from one process: the same numbers as one process, dead workers retried,
signals passed on, and `--workers auto`."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep
from optuna.trial import TrialState

WIDTHS = {"model.neck.out_channels": {"choices": [8, 12, 16, 20]}}


def sweep(path, storage, *flags, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ablate.sweep", path, "--storage", storage, *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def by_variant(storage: str) -> dict:
    """Each variant's seeds, per-seed best values and per-seed last-epoch metrics, as the table reads them."""
    trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials)  # nothing left RUNNING or failed
    measured = ("time/", "latency_ms")  # wall-clock figures differ run to run; what was learned must not

    def metrics(t) -> list[dict]:
        return [{k: v for k, v in m.items() if not k.startswith(measured)} for m in t.user_attrs["seed_metrics"]]

    return {t.user_attrs["variant"]: (t.user_attrs["seeds"], t.values, metrics(t)) for t in trials}


def test_a_forked_pool_gives_the_same_totals_and_per_seed_numbers_as_one_process():
    """Bit for bit: each worker runs several trials on the data the command generated before forking."""
    path = write_sweep(space=WIDTHS, n_trials=4, seeds=(0, 1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in both: float sums depend on them
    outs = {}
    for workers in ("1", "2"):
        shutil.rmtree("runs/t", ignore_errors=True)  # study t of the other storage: its run folder would be refused
        proc = sweep(path, f"sqlite:///runs/w{workers}.db", "--workers", workers, env=env)
        outs[workers] = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, outs[workers]
    assert "started 2 workers" in outs["2"] and "started" not in outs["1"]
    one, pool = by_variant("sqlite:///runs/w1.db"), by_variant("sqlite:///runs/w2.db")
    assert len(one) == len(pool) == 4  # exactly the total in both
    assert pool == one  # the same seeds, values and metrics (floats compared exactly)
    trials = optuna.load_study(study_name="t", storage="sqlite:///runs/w2.db").get_trials()
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}  # both workers trained


def follow_output(proc: subprocess.Popen) -> list[str]:
    """The lines `proc` prints, collected by a thread as they come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return lines


def wait_for_fits(storage: str, lines: list[str], n: int, worker: int | None = None, timeout: float = 300) -> list:
    """Wait until `n` trials run (of worker number `worker` alone, when given) and their fits have begun; those
    trials. The storage is read only once the sweep printed that its workers started: the study exists then, and
    a reader never races the sweep to create the storage's tables."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = []
        if any(line.startswith("started") for line in lines):
            trials = optuna.load_study(study_name="t", storage=storage).get_trials()
            running = [
                t for t in trials if t.state == TrialState.RUNNING and worker in (None, t.user_attrs.get("worker"))
            ]
        if len(running) == n and all(list(Path("runs/t").glob(f"t{t.number}-s0/hparams.yaml")) for t in running):
            return running
        time.sleep(0.2)
    raise TimeoutError(f"{n} trials did not start; the sweep printed:\n" + "".join(lines))


def test_a_killed_worker_of_a_pool_is_retried_by_the_other():
    storage = "sqlite:///runs/k.db"
    path = write_sweep(
        space={"model.neck.out_channels": {"choices": [8, 12, 16]}},
        n_trials=3,
        seeds=(0,),
        overrides=["trainer.max_epochs=20"],
        heartbeat_interval=1,
        grace_period=4,
    )
    proc = sweep(path, storage, "--workers", "2")
    lines = follow_output(proc)
    (running,) = wait_for_fits(storage, lines, 1, worker=0)  # the victim's own trial, mid-fit whatever the other does
    (started,) = [line for line in lines if line.startswith("started 2 workers")]
    victim = int(re.search(r"pids (\d+),", started).group(1))  # worker 0's
    os.kill(victim, signal.SIGKILL)  # no handler runs: its trial stays RUNNING in the storage
    proc.wait(timeout=900)
    out = "".join(lines)
    assert proc.returncode == 128 + signal.SIGKILL, out  # the exit codes aggregated: the killed worker's
    trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]  # the killed worker's, failed as stale ...
    assert failed.number == running.number, out
    (rerun,) = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == failed.params  # ... and run again
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {t.params["model.neck.out_channels"] for t in complete} == {8, 12, 16} and len(complete) == 3


def test_a_signal_to_the_command_fails_every_workers_trial_and_leaves_nothing_running():
    storage = "sqlite:///runs/s.db"
    path = write_sweep(space=WIDTHS, n_trials=2, seeds=(0,), overrides=["trainer.max_epochs=30"])
    proc = sweep(path, storage, "--workers", "2")
    lines = follow_output(proc)
    wait_for_fits(storage, lines, 2)
    proc.send_signal(signal.SIGTERM)  # to the command alone: it passes the signal on to each worker
    proc.wait(timeout=300)
    out = "".join(lines)
    assert proc.returncode == 130, out
    trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["FAIL", "FAIL", "WAITING", "WAITING"], out  # both queued again, none RUNNING
    assert all(t.user_attrs["interrupted"] for t in trials if t.state == TrialState.FAIL)


def test_workers_auto_without_gpus_picks_a_cpu_count_and_says_so():
    path = write_sweep(space=WIDTHS, n_trials=3, seeds=(0,))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever this machine has
    proc = sweep(path, "sqlite:///runs/a.db", "--workers", "auto", "--dry-run", env=env)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    cores = len(os.sched_getaffinity(0))
    expected = min(3, cores)  # one a core, no more than the trials (the tiny trial fits many times in memory)
    line = re.search(r"--workers auto: (\d+) worker\(s\): (.*)", out)
    assert line and int(line.group(1)) == expected, out
    assert "no GPU here, so on the CPU: one worker a core" in line.group(2)
    assert f"{cores} CPU core(s), 3 trial(s) to run" in line.group(2)


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_workers_value_is_refused_naming_it(value, capsys):
    from ablate.sweep import main

    with pytest.raises(SystemExit):
        main([write_sweep(), "--workers", value])
    assert f"'{value}': give 1 or more workers, or 'auto'" in capsys.readouterr().err


def test_the_sweep_file_can_ask_for_workers_and_the_flag_overrides_it():
    """study.workers (the default sweep says auto): the command forks them; --workers 1 trains in this process."""
    path = write_sweep(space=WIDTHS, n_trials=2, seeds=(0,), workers=2)
    outs = {}
    for name, flags in {"file": (), "flag": ("--workers", "1")}.items():
        shutil.rmtree("runs/t", ignore_errors=True)  # study t of the other storage: its run folder would be refused
        proc = sweep(path, f"sqlite:///runs/{name}.db", *flags)
        outs[name] = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, outs[name]
    assert "started 2 workers" in outs["file"] and "started" not in outs["flag"]
    from ablate.study.space import load_sweep

    assert load_sweep(None).study.workers == "auto"  # the packaged default sweep


@pytest.mark.parametrize("value", [0, "two", 1.5])
def test_a_bad_study_workers_is_refused_naming_it(value, capsys):
    from ablate.sweep import main

    assert main([write_sweep(workers=value), "--dry-run"]) == 2
    assert f"study.workers (--workers) must be 1 or more, or auto; got {value!r}" in capsys.readouterr().err
