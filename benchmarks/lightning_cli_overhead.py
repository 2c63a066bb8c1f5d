"""What sweeping a LightningCLI project through ablate costs a run, against a plain `Trainer.fit` script.

    python benchmarks/lightning_cli_overhead.py [--reps 3] [--epochs 20] [--train-size 512] [--size 64]

A: one (trial, seed) of examples/lightning_project through ablate's LightningCLI target, as the study runs it:
   the project's CLI parses and validates the trial's config, builds model, data and trainer in-process, and
   fits with ablate's best-metric tracker, Optuna's pruning callback, the interrupt callback and an offline W&B
   run added to the project's own checkpoint callback and CSV logger.
A0: A without the W&B run (as on DDP ranks > 0, or WANDB_MODE=disabled): what the CLI machinery alone costs.
B: the same SegModule (ASPP neck), ShapesData and Trainer settings, built by hand and fitted by `Trainer.fit`
   with the same checkpoint callback and CSV logger: what the user would run without ablate.

Runs alternate A, A0, B, A, A0, B, ... in one process (after one untimed warm-up round), wall time of the whole
run from config to fitted model; the ratios are median(A) / median(B) and median(A0) / median(B). The goal is
<= 1.05 on runs of >= 30 s. The CPU time of this process is recorded too: on a shared machine it varies far less
than wall time (other users' load), though it leaves out W&B's own service process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_project"


def settings(args) -> list[str]:
    """Overrides of the example's fit.yaml shared by A and B."""
    return [
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"data.init_args.size={args.size}",
        f"data.init_args.train_size={args.train_size}",
        f"data.init_args.val_size={args.train_size // 4}",
        f"model.init_args.neck.init_args.rates=[1,{args.size // 16},{args.size // 8}]",
    ]


def through_ablate(target, config: dict, folder: Path, wandb: bool = True) -> None:
    """A: one run as the study engine makes it (pruning on an in-memory study's trial, interrupt, W&B offline)."""
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from ablate.study.engine import Interrupt

    trial = optuna.create_study(direction="maximize").ask()
    run = {"name": folder.name, "group": "bench", "job_type": "trial", "tags": ["bench"], "config": {}}
    target.fit(
        config,
        0,
        folder,
        callbacks=[PyTorchLightningPruningCallback(trial, "val/mIoU"), Interrupt()],
        wandb_run=run if wandb else None,
    )


def plain_fit(config: dict, folder: Path) -> None:
    """B: the same module, data and trainer settings, by hand, then `Trainer.fit`."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from seg_project.data import ShapesData
    from seg_project.module import SegModule

    from ablate.necks import ASPP

    L.seed_everything(0, workers=True, verbose=False)
    model_args, neck = dict(config["model"]["init_args"]), config["model"]["init_args"]["neck"]["init_args"]
    model_args["neck"] = lambda in_channels: ASPP(in_channels, **neck)
    data = ShapesData(**config["data"]["init_args"])
    model = SegModule(**model_args, num_classes=data.num_classes)
    t = config["trainer"]
    trainer = L.Trainer(
        default_root_dir=folder,
        max_epochs=t["max_epochs"],
        log_every_n_steps=t["log_every_n_steps"],
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(monitor="val/mIoU", mode="max")],
    )
    trainer.fit(model, datamodule=data)


def measure(args) -> dict:
    from ablate.study.engine import quiet
    from ablate.study.space import load_sweep
    from ablate.study.targets import make_target

    quiet()
    target = make_target(load_sweep(EXAMPLE / "ablation.yaml", settings(args)))
    config = target.config({})
    runs = {
        "ablate": lambda f: through_ablate(target, config, f),
        "ablate_no_wandb": lambda f: through_ablate(target, config, f, wandb=False),
        "plain": lambda f: plain_fit(config, f),
    }
    times, cpu = {name: [] for name in runs}, {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.reps + 1):  # the first round warms up, untimed
            for name, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run(Path(tmp) / f"{name}-{i}")
                wall, used = time.perf_counter() - start, time.process_time() - start_cpu
                if i:
                    times[name].append(wall)
                    cpu[name].append(used)
                print(f"{name:15s} round {i}: {wall:.2f} s, {used:.2f} s CPU", file=sys.stderr, flush=True)
    ratio = lambda d, name: statistics.median(d[name]) / statistics.median(d["plain"])  # noqa: E731
    return {
        "settings": settings(args),
        "reps": args.reps,
        "seconds": times,
        "cpu_seconds": cpu,
        "ratio": ratio(times, "ablate"),
        "ratio_no_wandb": ratio(times, "ablate_no_wandb"),
        "cpu_ratio": ratio(cpu, "ablate"),
        "cpu_ratio_no_wandb": ratio(cpu, "ablate_no_wandb"),
    }


def parse(description: str) -> argparse.Namespace:
    """--reps, --epochs, --train-size, --size, --out (benchmarks/callbacks.py takes the same)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="timed runs of each (after one warm-up pair)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train-size", type=int, default=512, help="training images (validation: a quarter)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--out", help="also write the result as JSON here")
    return p.parse_args()


def main() -> None:
    args = parse(__doc__)
    result = measure(args)
    print(
        f"median ablate / plain Trainer.fit: {result['ratio']:.3f} (without the W&B run: "
        f"{result['ratio_no_wandb']:.3f}); CPU time of this process: {result['cpu_ratio']:.3f} "
        f"({result['cpu_ratio_no_wandb']:.3f})"
    )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
