"""What a trial meets besides its own training, each ending that trial alone: out of memory, a disk or data file
that fails, a result that comes back after its trial was declared stale and run again (as Optuna's own
`fail_stale_trials` allows exactly one of the two to finish a trial)."""

from __future__ import annotations

import contextlib
import gc

import optuna
import torch
from optuna.trial import TrialState

from ablate.cli import console


def fail_reason(error: BaseException, config: dict) -> str:
    """The `fail_reason` of a trial that raised `error`; out of memory names the batch size that ran out."""
    text = f"{type(error).__name__}: {error}"
    if not isinstance(error, torch.OutOfMemoryError):
        return text
    key, size = batch_size(config)
    first = (str(error).strip().splitlines() or ["out of memory"])[0]
    if size is None:
        return f"OutOfMemoryError: {first}; try a smaller batch size"
    smaller = max(1, int(size) // 2)
    return f"OutOfMemoryError: out of memory with {key}={size}; try a smaller one, e.g. {key}={smaller} ({first})"


def batch_size(config: dict, prefix: str = "") -> tuple[str | None, int | None]:
    """(dotted key, value) of the first `batch_size` in a nested run config (`data.batch_size`, or a
    LightningCLI config's `data.init_args.batch_size`), or (None, None)."""
    for key, value in config.items():
        if key == "batch_size" and isinstance(value, int):
            return prefix + key, value
        if isinstance(value, dict):
            found = batch_size(value, f"{prefix}{key}.")
            if found[0]:
                return found
    return None, None


@contextlib.contextmanager
def naming(folder):
    """An OSError without a file name (ENOSPC from a flush) raised inside gets `folder` as its file name."""
    try:
        yield
    except OSError as e:
        if not e.filename:
            e.filename = str(folder)
        raise


def release_memory() -> None:
    """Free what a finished (or failed) trial left, before the worker's next trial: Python garbage, CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def tell(study: optuna.Study, trial: optuna.Trial, values=None, state: TrialState | None = None):
    """study.tell, or None when the trial was finished elsewhere meanwhile: its worker could not reach the storage
    for longer than the grace period, so another worker failed it and runs it again (the later result is not
    counted, printed once). A COMPLETE that this worker's own earlier, dropped call had stored is returned."""
    try:
        return study.tell(trial, values, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        stored = study._storage.get_trial(trial._trial_id)
        if not stored.state.is_finished():
            raise
        if stored.state == TrialState.COMPLETE and values is not None and stored.value == values:
            return stored
        late(trial, stored.state)
        return None


def late(trial: optuna.Trial, state: TrialState) -> None:
    """Say that this worker's result for `trial` is not counted: the trial ended as `state` elsewhere."""
    console.print(
        f"  trial {trial.number}: declared stale ({state.name}) while this worker could not reach the storage, and "
        "queued again for another worker; this worker's result for it is not counted"
    )
