"""What ablate's segmentation callbacks (ablate.callbacks) cost a run of a LightningCLI project.

    python benchmarks/callbacks.py [--reps 3] [--epochs 20] [--train-size 512] [--size 64] [--out FILE]

on: one (trial, seed) of examples/lightning_project through ablate's LightningCLI target as a sweep runs it
    (callbacks on, the default): SegmentationMetrics, Predictions, NeckAnalysis and Efficiency added to the
    project's own checkpoint callback, with the engine's interrupt callback and an offline W&B run.
off: the same with `callbacks: false` in the sweep file.

Runs alternate on, off, on, off, ... in one process after one untimed warm-up pair; wall and CPU time of the
whole run, from config to fitted model; the ratio is median(on) / median(off) (goal <= 1.05 on runs >= 30 s).
Every hook of the four callbacks is timed in the `on` runs, so the end-of-run costs (the ERF in
NeckAnalysis.on_fit_end, the latency in Efficiency.on_fit_end) and the per-epoch ones are reported apart.
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lightning_cli_overhead import EXAMPLE, parse, settings  # the same runs as that benchmark's

HOOKS = (
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_train_start",
    "on_fit_end",
)


def timed(callbacks: list, seconds: dict) -> list:
    """`callbacks` with each hook wrapped to add its wall time to seconds['<Callback>.<hook>']."""
    for callback in callbacks:
        for hook in HOOKS:
            method, key = getattr(callback, hook), f"{type(callback).__name__}.{hook}"

            def wrapper(*args, _method=method, _key=key, **kwargs):
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    seconds[_key] += time.perf_counter() - start

            setattr(callback, hook, wrapper)
    return callbacks


def fit(target, config: dict, folder: Path) -> None:
    """One run as the study engine makes it (interrupt callback, offline W&B run)."""
    from ablate.study.engine import Interrupt

    run = {"name": folder.name, "group": "bench", "job_type": "trial", "tags": ["bench"], "config": {}}
    target.fit(config, 0, folder, callbacks=[Interrupt()], wandb_run=run)


def measure(args) -> dict:
    import dataclasses

    import ablate.study.lightning_cli as lightning_cli
    from ablate.callbacks import segmentation_callbacks
    from ablate.study.engine import quiet
    from ablate.study.space import load_sweep
    from ablate.study.targets import make_target

    quiet()
    sweep = load_sweep(EXAMPLE / "ablation.yaml", settings(args))
    targets = {"on": make_target(sweep), "off": make_target(dataclasses.replace(sweep, callbacks=False))}
    config = targets["on"].config({})
    hooks = collections.defaultdict(float)
    lightning_cli.segmentation_callbacks = lambda **kw: timed(segmentation_callbacks(**kw), hooks)
    times, cpu = {name: [] for name in targets}, {name: [] for name in targets}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.reps + 1):  # the first round warms up, untimed
            for name, target in targets.items():
                if i == 1 and name == "on":
                    hooks.clear()  # hook times of the timed rounds only
                start, start_cpu = time.perf_counter(), time.process_time()
                fit(target, config, Path(tmp) / f"{name}-{i}")
                wall, used = time.perf_counter() - start, time.process_time() - start_cpu
                if i:
                    times[name].append(wall)
                    cpu[name].append(used)
                print(f"{name:4s} round {i}: {wall:.2f} s, {used:.2f} s CPU", file=sys.stderr, flush=True)
    ratio = lambda d: statistics.median(d["on"]) / statistics.median(d["off"])  # noqa: E731
    per_run = {k: v / args.reps for k, v in sorted(hooks.items())}
    return {
        "settings": settings(args),
        "reps": args.reps,
        "seconds": times,
        "cpu_seconds": cpu,
        "ratio": ratio(times),
        "cpu_ratio": ratio(cpu),
        "hook_seconds_per_run": per_run,
        "end_of_run_seconds": {
            "erf (NeckAnalysis.on_fit_end)": per_run.get("NeckAnalysis.on_fit_end", 0.0),
            "latency (Efficiency.on_fit_end)": per_run.get("Efficiency.on_fit_end", 0.0),
            "files and W&B media (Predictions, SegmentationMetrics on_fit_end)": per_run.get(
                "Predictions.on_fit_end", 0.0
            )
            + per_run.get("SegmentationMetrics.on_fit_end", 0.0),
        },
        "all_hooks_seconds_per_run": sum(per_run.values()),
    }


def main() -> None:
    args = parse(__doc__)
    result = measure(args)
    end = ", ".join(f"{k} {v:.2f} s" for k, v in result["end_of_run_seconds"].items())
    print(
        f"median callbacks on / off: {result['ratio']:.3f} wall, {result['cpu_ratio']:.3f} CPU; all their hooks: "
        f"{result['all_hooks_seconds_per_run']:.2f} s a run; at the end of a run: {end}"
    )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
