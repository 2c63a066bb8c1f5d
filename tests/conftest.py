"""Shared test set-up: offline, CPU, every test in its own working directory."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_MODE"] = "offline"  # runs that keep W&B on write offline files only
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402

TINY = ["data.image_size=32", "data.train_size=16", "data.val_size=8", "data.batch_size=4",
        "model.neck.out_channels=16", "model.neck.rates=[1,2,3]", "trainer.max_epochs=1",
        "trainer.enable_checkpointing=false", "trainer.enable_model_summary=false", "wandb.mode=disabled"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run each test in a fresh temporary directory so runs/ never lands in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny():
    """Overrides that make a full training run take a few seconds on a CPU."""
    return list(TINY)


def finished_run_info(run_dir, timeout: float = 30.0) -> dict:
    """`run_info` once W&B's service has written the run's exit record (it writes asynchronously)."""
    import time

    from ablate.wandb_files import run_info

    deadline = time.time() + timeout
    while True:
        try:
            info = run_info(run_dir)
            if "exit_code" in info and "name" in info:
                return info
        except ValueError:
            pass
        if time.time() > deadline:
            return run_info(run_dir)
        time.sleep(0.2)
