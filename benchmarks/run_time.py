"""Where one run's time goes: process start, data, train steps, validation, per-epoch callbacks, end of run.

    python benchmarks/run_time.py [key=value ...] [--sweep SWEEP.yaml] [--out results.json]

Trains one run of the default sweep's base config (or SWEEP's, with its overrides, then the key=value ones) through
`ablate.run.fit.run`, as a sweep trial does, and splits its wall time with one callback's marks:
  start       `python -c "import ablate.sweep, ablate.study.engine, ablate.run.fit"` in a fresh process
  data        generating the built-in data (`create_datamodule` + setup)
  setup       run() up to the first training batch, less `data` (run() generates the data again) and the
              sanity check: module, FLOP count, loggers, Trainer
  sanity      Lightning's sanity check (validation batches before training)
  train       training steps (on_train_batch_start .. end)
  validation  validation loops after the sanity check (on_validation_start .. end)
  callbacks   the rest of each epoch: epoch-end hooks, checkpoints, logging
  end         from the last epoch's end to run() returning: ERF, predictions, latency, summary, W&B finish
Shares are of one run's wall time, so a loaded machine changes them less than the seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]


class Marks(L.Callback):
    """Wall-clock sums of train batches and validation loops, and the time the fit loop starts and ends."""

    def __init__(self):
        self.train = self.validation = self.sanity = 0.0
        self.first_batch = self.train_end = None
        self._t = 0.0

    def on_train_batch_start(self, *args) -> None:
        self.first_batch = self.first_batch or time.perf_counter()
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.train += time.perf_counter() - self._t

    def on_validation_start(self, *args) -> None:
        self._t = time.perf_counter()

    def on_validation_end(self, *args) -> None:
        if self.first_batch is None:  # the sanity check, before training
            self.sanity += time.perf_counter() - self._t
        else:
            self.validation += time.perf_counter() - self._t

    def on_train_end(self, *args) -> None:
        self.train_end = time.perf_counter()


def process_start() -> float:
    """Seconds for a fresh interpreter to import what a sweep imports before its first trial."""
    code = "import ablate.sweep, ablate.study.engine, ablate.run.fit"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - start


def run_config(sweep_path: str | None, overrides: list[str]):
    """The sweep's base config with its overrides and `overrides` (a trial's config, before its swept values)."""
    from ablate.config import from_dict
    from ablate.study.space import load_sweep

    return from_dict(load_sweep(sweep_path, overrides).base)


def split(marks: Marks, start: float, end: float) -> dict:
    """A run's wall time from `start` to `end` by part (seconds): setup, sanity, train, validation, callbacks, end."""
    fit = marks.train_end - marks.first_batch
    return {
        "setup": marks.first_batch - start - marks.sanity,
        "sanity": marks.sanity,
        "train": marks.train,
        "validation": marks.validation,
        "callbacks": fit - marks.train - marks.validation,
        "end": end - marks.train_end,
    }


def breakdown(cfg) -> dict:
    """One run of `cfg`, its wall time split as the module docstring says (seconds)."""
    from ablate.data import create_datamodule
    from ablate.run.fit import run

    start = time.perf_counter()
    create_datamodule(cfg).setup("fit")
    data = time.perf_counter() - start
    marks = Marks()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(cfg, Path(tmp) / "run", callbacks=[marks])
        parts = split(marks, start, time.perf_counter())
    return {"data": data, **parts, "setup": parts["setup"] - data, "run": sum(parts.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="key=value overrides of the run config")
    p.add_argument("--sweep", help="sweep file whose base config and overrides to run (default: the default sweep)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    cfg = run_config(args.sweep, args.overrides)
    figures = {"start": process_start(), **breakdown(cfg)}
    run_s = figures["run"]
    print(f"one run: {run_s:.1f} s (+ {figures['start']:.1f} s process start, once a sweep)")
    for key in ("data", "setup", "sanity", "train", "validation", "callbacks", "end"):
        print(f"  {key:<11} {figures[key]:7.2f} s  {figures[key] / run_s:6.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"overrides": args.overrides, "seconds": figures}, indent=2))


if __name__ == "__main__":
    main()
