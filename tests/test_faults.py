"""Faults a trial meets, each a FAIL of that trial alone with its reason: CUDA out of memory (raised from a real
Trainer's training step), a run folder that is read-only or full, a data file that becomes unreadable mid-study;
SQLite locked beyond its busy timeout is waited out like a server restart."""

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
from helpers import STORAGE, trials, write_sweep
from test_datasets import make_folder

from ablate.study import outage
from ablate.sweep import main as sweep

LR = {"optim.lr": {"choices": [0.001, 0.002]}}


@pytest.fixture(autouse=True)
def _necks_unregistered():
    """The necks these tests register in this process leave with them: test_neck_injection, in the same process
    under xdist, compares the registry with ablate's own neck classes."""
    from ablate.necks import registry

    saved = dict(registry._NECKS)
    yield
    registry._NECKS.clear()
    registry._NECKS.update(saved)


OOM_NECK = """
import torch
from ablate.necks import register_neck

@register_neck
def oom_neck(in_channels):
    class OutOfMemory(torch.nn.Conv2d):
        def forward(self, x):
            if self.training and torch.is_grad_enabled():  # a training step, in the Trainer
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().forward(x)

    return OutOfMemory(in_channels, in_channels, 1)
"""


def test_out_of_memory_names_the_batch_size_and_suggests_a_smaller_one(monkeypatch, capsys):
    Path("oom_necks.py").write_text(OOM_NECK)
    monkeypatch.syspath_prepend(".")
    path = write_sweep(space=LR, seeds=(0,), overrides=["model.neck={name: oom_neck}", "imports=[oom_necks]"])
    assert (
        sweep([path, "--storage", STORAGE]) == 1
    )  # the first two trials failed alike: the study stops, as for any repeated failure
    reasons = [t.user_attrs["fail_reason"] for t in trials()]
    assert len(reasons) == 2
    for reason in reasons:
        assert reason.startswith(
            "OutOfMemoryError: out of memory with data.batch_size=4; try a smaller one, e.g. "
            "data.batch_size=2 (CUDA out of memory. Tried to allocate 2.00 GiB)"
        ), reason
    assert "the first 2 trials all failed with:" in capsys.readouterr().err


@pytest.fixture
def mount(request):
    """mount(folder, *options): a tmpfs there (a real disk to fill or make read-only), unmounted at the end."""
    mounted = []

    def do(folder: Path, *options: str) -> None:
        folder.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], check=True)
        mounted.append(folder)

    yield do
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_run_folder_that_cannot_be_written_fails_its_trial_and_the_study_goes_on(fault, mount):
    folder = Path("runs/t/t0-s0")  # trial 0's run folder
    if os.geteuid() != 0:  # no mount without root: a folder made unwritable is the same fault to the run
        assert fault == "read-only", "filling a disk needs a tmpfs, so root (CI runs the tests as root)"
        folder.mkdir(parents=True)
        folder.chmod(0o555)
    elif fault == "read-only":
        mount(folder, "ro", "size=1m")
    else:
        mount(folder, "size=64k")
        with pytest.raises(OSError), open(folder / "filler", "wb") as f:  # the disk is full
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    path = write_sweep(space=LR, seeds=(0,))
    assert sweep([path, "--storage", STORAGE]) == 0
    first, second = trials()
    assert first.state.name == "FAIL" and second.state.name == "COMPLETE"
    error = {"read-only": "Read-only file system" if os.geteuid() == 0 else "Permission denied"}.get(
        fault, "No space left on device"
    )
    assert error in first.user_attrs["fail_reason"] and "t0-s0" in first.user_attrs["fail_reason"]


CORRUPTING_NECK = """
import os
from pathlib import Path
from ablate.necks import create_neck, register_neck

@register_neck
def aspp_then_break_a_file(in_channels, out_channels=16, rates=(1, 2, 3)):
    if Path(os.environ["DONE"]).exists():  # trial 0 has finished: a data file becomes unreadable
        Path(os.environ["BREAK"]).write_bytes(b"not an image any more")
    return create_neck("aspp", in_channels, out_channels=out_channels, rates=rates)
"""


def test_a_data_file_that_becomes_unreadable_mid_study_is_named_in_the_failure(tmp_path, monkeypatch):
    make_folder(tmp_path / "data")
    broken = tmp_path / "data/images/train/train1.png"
    Path("breaking_necks.py").write_text(CORRUPTING_NECK)
    monkeypatch.syspath_prepend(".")
    monkeypatch.setenv("DONE", str(tmp_path / "runs/t/t0-s0/summary.json"))
    monkeypatch.setenv("BREAK", str(broken))
    overrides = [
        "data.name=folder",
        f"data.root={tmp_path / 'data'}",
        "data.batch_size=2",
        "imports=[breaking_necks]",
        "model.neck={name: aspp_then_break_a_file}",
    ]
    path = write_sweep(
        space={"optim.lr": {"choices": [0.001, 0.002, 0.003]}}, seeds=(0,), n_trials=3, overrides=overrides
    )
    assert sweep([path, "--storage", STORAGE]) == 0
    first, *rest = trials()
    assert first.state.name == "COMPLETE"
    for t in rest:  # each names the file
        assert t.state.name == "FAIL" and str(broken) in t.user_attrs["fail_reason"], t.user_attrs["fail_reason"]


def hold_lock(path: str, seconds: float, held: threading.Event) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    held.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


@pytest.mark.parametrize("locked_for", [3, 30])
def test_sqlite_locked_beyond_its_busy_timeout_is_waited_out_up_to_the_bound(locked_for, monkeypatch, capsys):
    monkeypatch.setattr(outage.PATIENCE, "timeout", 8)
    optuna.create_study(study_name="s", storage="sqlite:///s.db")
    storage = outage.PatientRDBStorage("sqlite:///s.db", engine_kwargs={"connect_args": {"timeout": 0.2}})
    held = threading.Event()
    holder = threading.Thread(target=hold_lock, args=("s.db", locked_for, held), daemon=True)
    holder.start()
    held.wait()
    started = time.monotonic()
    if locked_for < 8:
        storage.set_study_user_attr(storage.get_study_id_from_name("s"), "k", 1)
        assert storage.get_study_user_attrs(storage.get_study_id_from_name("s")) == {"k": 1}
        assert time.monotonic() - started >= locked_for - 0.5
        err = capsys.readouterr().err
        assert "storage unreachable (database is locked): waiting up to 8 s" in err and "storage back after" in err
    else:
        with pytest.raises(outage.StorageUnavailable, match="the storage did not answer for 8 s"):
            storage.set_study_user_attr(storage.get_study_id_from_name("s"), "k", 1)
        assert 8 <= time.monotonic() - started < 15
