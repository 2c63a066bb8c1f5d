"""Nothing hangs (issue #32): settings the built-in data cannot draw are refused before anything is written, and
Ctrl-C stops a command within seconds, exit 130, one line, no traceback. Real processes, real signals."""

import hashlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
from helpers import ROOT, TINY, write_sweep

from ablate.data.shapes import make_split

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
BASE = str(ROOT / "experiments/base.yaml")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell starts us with SIGINT ignored


@pytest.fixture(autouse=True)
def _no_process_left():
    """A test that fails (a command that did not stop) kills what it started."""
    yield
    for proc in Command.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    Command.started.clear()


class Command:
    """`python -m ablate.COMMAND ARGS` in the current folder, its output read line by line as it comes."""

    started: list[subprocess.Popen] = []

    def __init__(self, *args: str):
        self.out, self.err = [], []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            preexec_fn=_sigint_default,
        )
        Command.started.append(self.proc)
        self.readers = [
            threading.Thread(target=lambda s=s, lines=lines: lines.extend(s), daemon=True)
            for s, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    def cpu(self) -> float:
        """CPU seconds the process has used (Linux /proc)."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_until(self, ready, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while not ready():
            assert self.proc.poll() is None, f"ended first: {''.join(self.err)}"
            assert time.time() < deadline, f"not ready in {timeout} s: {''.join(self.err)}"
            time.sleep(0.02)

    def interrupt(self, within: float) -> tuple[int, list[str]]:
        """SIGINT; the exit code and the stderr lines that came after it, once it ended (in `within` seconds)."""
        before = len(self.err)
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=within)
        for reader in self.readers:
            reader.join(timeout=10)
        return code, self.err[before:]


def assert_one_interrupted_line(code: int, lines: list[str]) -> str:
    assert code == 130, "".join(lines)
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in lines[0], "".join(lines)
    return lines[0]


def run_cpu(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m ablate.ARGS` to its end (at most 2 minutes), and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=ENV, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """`ablate.train data.image_size=12` in a folder of its own (it used to spin forever): its result, its CPU
    seconds (what train takes to reach its data), and the folder."""
    folder = tmp_path_factory.mktemp("refused")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        proc, cpu = run_cpu("ablate.train", BASE, "data.image_size=12")
    finally:
        os.chdir(cwd)
    return proc, cpu, folder


def test_an_image_size_too_small_for_the_shapes_is_refused_at_once_writing_nothing(refused):
    proc, _, folder = refused
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "error: data.image_size=12 is too small for the built-in shapes data: the smallest that works is 22 (with "
        "data.shape_kinds=3; its 16-24 marker dots do not fit beside the objects in smaller images)\n"
    )
    assert not any(folder.iterdir())  # no runs/


def test_a_sweep_at_an_image_size_too_small_stops_before_its_study(tmp_path):
    path = write_sweep(overrides=["data.image_size=16", "data.shape_kinds=1"])
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.sweep", path], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "data.image_size=16 is too small" in proc.stderr
    assert "smallest that works is 22 (with data.shape_kinds=1" in proc.stderr
    assert not (tmp_path / "runs").exists()


# sha256 (16 hex digits) of make_split(n, size, seed=0, kinds), images then masks, as drawn before the bound on
# redraws came in (issue #32): the same seed gives the same images (32 px: several images are redrawn).
DIGESTS = {
    (32, 16): {1: "cb535f42a42fa7e2", 2: "a0525cc6805b5aca", 3: "58e3b8cb73cb5fc1"},
    (64, 4): {1: "353298b47c8cc243", 2: "1583b4a9b2b9e62c", 3: "5cee4c14d954415d"},
    (128, 4): {1: "a61d2809583e1bfa", 2: "85292edc9582edef", 3: "1f49ac5f7b4767ba"},
}


@pytest.mark.parametrize("size,n", list(DIGESTS))
def test_the_same_seed_still_draws_the_same_images(size, n):
    for kinds, expected in DIGESTS[size, n].items():
        images, masks = make_split(n, size, seed=0, kinds=kinds)
        assert hashlib.sha256(images.numpy().tobytes() + masks.numpy().tobytes()).hexdigest()[:16] == expected


def test_the_smallest_size_draws_every_shape_setting():
    for kinds in (1, 2, 3):
        images, masks = make_split(32, 22, seed=kinds, kinds=kinds)
        assert images.shape == (32, 3, 22, 22) and int(masks.max()) <= 2 * kinds


def test_every_command_ends_an_interrupt_in_one_line_with_exit_130(capsys):
    from ablate import cli

    def lightning_exit():  # what Lightning's Trainer does with Ctrl-C mid-fit: sys.exit(1) inside the handler
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)

    def kept():
        raise KeyboardInterrupt("runs/x keeps its epochs")

    assert cli.guarded(lightning_exit) == cli.guarded(kept) == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\ninterrupted: runs/x keeps its epochs\n"
    with pytest.raises(SystemExit):  # any other exit goes on as it is
        cli.guarded(lambda: sys.exit(3))


def test_sigint_to_table_ends_it_in_one_line():
    study = optuna.create_study(study_name="s", storage="sqlite:///s.db", direction="maximize")
    widths = (8, 16, 32, 64, 128, 256)  # 12 variants x 4 seeds: the table and its factorial effects take ~2 s
    for k, (fusion, width) in enumerate((f, w) for f in ("concat", "sum") for w in widths):
        values = [0.5 + 0.01 * k + 0.02 * s for s in range(4)]
        variant = f"model.neck.fusion={fusion} model.neck.out_channels={width}"
        study.add_trial(
            optuna.trial.create_trial(
                value=sum(values) / 4, user_attrs={"variant": variant, "seeds": [0, 1, 2, 3], "values": values}
            )
        )
    command = Command("ablate.table", "--storage", "sqlite:///s.db")
    command.wait_until(lambda: command.cpu() >= 0.3)  # past start-up (~0.15 s), well before its end (~2 s)
    line = assert_one_interrupted_line(*command.interrupt(within=10))
    assert line == "interrupted (Ctrl-C)\n"


def test_sigint_to_train_generating_its_data_ends_it_at_once_writing_nothing(refused):
    _, startup, _ = refused  # train's CPU seconds up to its data
    command = Command("ablate.train", BASE, "data.image_size=32", "data.train_size=50000")  # ~80 s of drawing
    command.wait_until(lambda: command.cpu() >= startup + 1.0)
    assert_one_interrupted_line(*command.interrupt(within=10))
    assert not os.path.exists("runs")


def test_sigint_to_train_mid_fit_ends_it_in_one_line_naming_what_is_kept():
    command = Command("ablate.train", *TINY, "trainer.max_epochs=1000", "--output", "run")
    command.wait_until(lambda: any(line.startswith("epoch 2/") for line in command.out))
    line = assert_one_interrupted_line(*command.interrupt(within=30))
    assert line == "interrupted: run keeps what the run wrote before it stopped (no summary.json)\n"


def test_sigint_to_a_sweep_generating_its_data_stops_it_at_once_and_says_no_trial_was_queued():
    path = write_sweep(overrides=["data.train_size=50000"])  # 32 px: ~80 s of drawing
    command = Command("ablate.sweep", path)
    command.wait_until(lambda: any("trials to run" in line for line in command.err))  # then it draws the data
    time.sleep(0.5)
    line = assert_one_interrupted_line(*command.interrupt(within=10))
    assert line == "interrupted: SIGINT; the study keeps its finished trials: run the same command to go on\n"
    assert optuna.load_study(study_name="t", storage="sqlite:///runs/ablate.db").get_trials() == []


def test_sigint_to_a_sweep_mid_fit_says_the_trial_was_queued_again():
    path = write_sweep(n_trials=1, seeds=(0,), overrides=["trainer.max_epochs=1000"])
    command = Command("ablate.sweep", path)
    command.wait_until(lambda: any(line.startswith("epoch 2/") for line in command.out))
    line = assert_one_interrupted_line(*command.interrupt(within=30))
    assert line == (
        "interrupted: trial 0 was marked FAIL and queued again; the study keeps its finished trials: run the same "
        "command to go on\n"
    )
    states = [t.state.name for t in optuna.load_study(study_name="t", storage="sqlite:///runs/ablate.db").trials]
    assert states == ["FAIL", "WAITING"]


def test_max_epochs_0_is_refused_before_anything_is_written():
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.train", BASE, "trainer.max_epochs=0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "error: trainer.max_epochs must be an integer >= 1 (or -1, no epoch limit, together with trainer.max_steps "
        "or trainer.max_time); got 0\n"
    )
    assert not os.path.exists("runs")


# Waits with a bound: every loop that waits says what for, and stops.


class Instant:
    """A study target that trains nothing: every run gives 0.5 at once."""

    metric = "val/mIoU"

    def config(self, params: dict) -> dict:
        return {"params": dict(params)}

    def check(self) -> None:
        pass

    def fit(self, config: dict, seed: int, output, *, callbacks: list, wandb_run) -> dict:
        return {"val/mIoU": 0.5, "val/mIoU_best": 0.5}


@pytest.mark.timeout(120)
def test_a_trial_left_running_before_its_first_heartbeat_is_run_again_not_waited_for_forever():
    from ablate.study.engine import run_study
    from ablate.study.space import StudyConfig, SweepConfig, validate_sweep
    from ablate.study.storage import open_study

    study = StudyConfig(name="s", sampler="grid", pruner="none", heartbeat_interval=1, grace_period=2)
    sweep = SweepConfig(base={}, space={"a": {"choices": ["x", "y"]}}, n_trials=2, seeds=(0,), study=study)
    validate_sweep(sweep)
    open_study(sweep, "sqlite:///s.db").ask()  # RUNNING, never beating: its worker died right after taking it
    time.sleep(2.5)  # past the grace period
    assert run_study(sweep, Instant(), "sqlite:///s.db") == 0
    trials = optuna.load_study(study_name="s", storage="sqlite:///s.db").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0  # queued again, as a dead worker's trial, and run first
    assert {t.params["a"] for t in trials[1:]} == {"x", "y"}


def test_a_wait_for_a_lock_says_what_it_waits_for_and_stops(capsys):
    from ablate.study.outage import StorageUnavailable, wait_for

    start = time.monotonic()
    with pytest.raises(StorageUnavailable, match="waited 0.5 s for the lock; this worker stopped"):
        wait_for(lambda: False, "the lock", timeout=0.5, notice=0.1)
    assert time.monotonic() - start < 2
    assert capsys.readouterr().err == "  waiting for the lock (up to 0.5 s in all)\n"


@pytest.mark.timeout(120)
def test_the_postgresql_slot_lock_held_by_a_frozen_worker_is_waited_for_a_bounded_time(postgres_url, monkeypatch):
    from ablate.study.outage import PATIENCE, StorageUnavailable
    from ablate.study.workers import Slots

    monkeypatch.setattr(PATIENCE, "timeout", 1)
    with Slots(postgres_url, "frozen", 1).lock():  # another worker, frozen while it holds the lock
        with pytest.raises(StorageUnavailable, match="study 'frozen'.s trial-slot lock, which another worker holds"):
            with Slots(postgres_url, "frozen", 1).lock():
                pass
    with Slots(postgres_url, "frozen", 1).lock():  # free again
        pass
