"""GPU assignment of `--workers N`: the pure function, `--gpus` errors, and what real worker processes see."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.study.gpus import assign_gpus, parse_gpus, plan_gpus, trial_devices, visible_gpus
from ablate.study.space import load_sweep
from ablate.sweep import main

FOUR = ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "workers, per_trial, expected",
    [
        (4, 1, ["0", "1", "2", "3"]),  # one GPU each
        (2, 1, ["0", "1"]),  # fewer workers than GPUs: the rest stay free
        (6, 1, ["0", "1", "2", "3", "0", "1"]),  # more workers than GPUs: round-robin
        (2, 2, ["0,1", "2,3"]),  # trainer.devices=2: two GPUs for each worker's DDP ranks
        (1, 3, ["0,1,2"]),
    ],
)
def test_assign_spreads_then_packs(workers, per_trial, expected):
    assert assign_gpus(workers, FOUR, per_trial) == expected


@pytest.mark.parametrize("workers, per_trial", [(3, 2), (1, 5)])
def test_ddp_workers_beyond_the_gpus_are_an_error_naming_the_numbers(workers, per_trial):
    with pytest.raises(
        ConfigError,
        match=rf"--workers {workers} with trainer.devices={per_trial} needs "
        rf"{workers * per_trial} GPUs, and 4 are chosen \(0,1,2,3\)",
    ):
        assign_gpus(workers, FOUR, per_trial)


def test_visible_gpus_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5,GPU-8d4f-11aa")
    assert visible_gpus() == ["2", "5", "GPU-8d4f-11aa"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,-1,4")  # CUDA stops at the first invalid entry
    assert visible_gpus() == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,7", "'7' is not a visible GPU; visible GPUs: 0,1,2,3"),
        ("1,x", "'x' is not a visible GPU"),
        ("1,1", "a GPU is named twice"),
    ],
)
def test_parse_gpus_names_the_bad_value_and_the_valid_ones(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_gpus(text, FOUR)
    assert parse_gpus("3,1", FOUR) == ["3", "1"]


def test_plan_reads_the_trial_devices_and_knows_when_not_to_assign(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    sweep = load_sweep(write_sweep())
    ddp = load_sweep(write_sweep(overrides=["trainer.devices=2", "trainer.strategy=ddp"]))
    cpu = load_sweep(write_sweep(overrides=["trainer.accelerator=cpu"]))
    assert (trial_devices(sweep), trial_devices(ddp), trial_devices(cpu)) == (1, 2, None)
    assert plan_gpus(3, None, sweep) == ["0", "1", "2"]  # every visible GPU by default
    assert plan_gpus(2, None, ddp) == ["0,1", "2,3"]
    assert plan_gpus(1, "1,3", ddp) == ["1,3"]
    assert plan_gpus(1, None, sweep) is None  # one worker, nothing chosen: it keeps what it was given
    assert plan_gpus(4, "none", sweep) is None and plan_gpus(4, None, cpu) is None
    with pytest.raises(ConfigError, match="trainer.accelerator=cpu"):
        plan_gpus(2, "0,1", cpu)
    monkeypatch.setenv("ABLATE_WORKER", "0")
    assert plan_gpus(1, "1,3", sweep) is None  # a worker never starts workers of its own
    monkeypatch.delenv("ABLATE_WORKER")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="no GPU is visible here"):
        plan_gpus(2, "0", sweep)


def test_a_bad_gpus_flag_stops_the_command_before_anything_trains(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert main([write_sweep(), "--workers", "2", "--gpus", "0,9", "--storage", "sqlite:///runs/t.db"]) == 2
    err = capsys.readouterr().err
    assert "--gpus 0,9: '9' is not a visible GPU; visible GPUs: 0,1,2,3" in err and "Traceback" not in err
    assert main([write_sweep(overrides=["trainer.devices=2"]), "--workers", "3"]) == 2
    assert "--workers 3 with trainer.devices=2 needs 6 GPUs, and 4 are chosen" in capsys.readouterr().err
    assert not Path("runs/t.db").exists()


def test_each_worker_process_sees_its_own_gpus():
    """Three workers on two chosen GPUs of a (pretend) four-GPU machine: each trial records what its worker saw."""
    path = write_sweep(space={"model.neck.out_channels": {"choices": [8, 12, 16]}}, n_trials=3, seeds=(0,))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}  # no GPU here: CUDA finds none, trains on CPU
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ablate.sweep",
            path,
            "--storage",
            "sqlite:///runs/g.db",
            "--workers",
            "3",
            "--gpus",
            "1,3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "GPUs (CUDA_VISIBLE_DEVICES) of each worker: worker 0: 1, worker 1: 3, worker 2: 1" in done.stderr
    trials = optuna.load_study(study_name="t", storage="sqlite:///runs/g.db").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    expected = ["1", "3", "1"]
    for t in trials:
        assert t.user_attrs["worker_gpus"] == expected[t.user_attrs["worker"]]
