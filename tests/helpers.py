"""What many test modules use: the tiny run config, a sweep file over it, its study's trials, W&B run records."""

from __future__ import annotations

import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
STORAGE = "sqlite:///runs/test.db"  # relative: each test runs in its own folder
TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "model.neck.out_channels=16",
    "model.neck.rates=[1,2,3]",
    "trainer.max_epochs=1",
    "trainer.enable_checkpointing=false",
    "trainer.enable_model_summary=false",
    "wandb.mode=disabled",
]


def write_sweep(path="sweep.yaml", space=None, n_trials=2, seeds=(0, 1), overrides=(), **study) -> str:
    """A sweep over the tiny config (a few seconds a run); `study` sets keys of its study section."""
    from ablate.study.space import write_sweep as write

    space = space or {"model.neck.fusion": {"choices": ["concat", "sum"]}}
    study = {"name": "t", "sampler": "grid", "pruner": "none", **study}
    write(
        path,
        space,
        base=ROOT / "experiments/base.yaml",
        overrides=[*TINY, *overrides],
        n_trials=n_trials,
        seeds=seeds,
        **study,
    )
    return path


def trials(name: str = "t", storage: str = STORAGE) -> list[optuna.trial.FrozenTrial]:
    """The trials of study `name`."""
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def finished_run_info(run_dir, timeout: float = 30.0) -> dict:
    """`run_info` once W&B's service has written the run's exit record (it writes asynchronously)."""
    from ablate.results.wandb_files import run_info

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
