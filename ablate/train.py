"""`python -m ablate.train [CONFIG.yaml] [key=value ...] [--output DIR]`: train one configuration."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
from rich.console import Console

from ablate.analysis import config_rate_message, neck_summary
from ablate.config import ConfigError, RunConfig, flatten, load_config, to_dict
from ablate.data import create_datamodule
from ablate.model import measure_latency_ms
from ablate.module import SegmentationModule
from ablate.visuals import RunVisuals, neck_columns

console = Console(stderr=True)


def check_rates(cfg: RunConfig) -> None:
    """Warn (error under `model.strict`) when a dilation rate is degenerate on the neck's feature map."""
    message = config_rate_message(cfg)
    if message and cfg.model.strict:
        raise ConfigError(f"{message} (model.strict=true makes this an error)")
    if message:
        console.print(f"[yellow]warning:[/] {message}", highlight=False)


class StepTimer(L.Callback):
    """Wall time of each training step (forward, backward, optimizer), for the summary."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self._start)

    def median(self) -> float | None:
        return sorted(self.times)[len(self.times) // 2] if self.times else None


class PlainProgress(L.Callback):
    """One line per validation epoch, for logs that are not a terminal."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  train/loss {m.get('train/loss', float('nan')):.4f}"
              f"  val/loss {m.get('val/loss', float('nan')):.4f}  val/mIoU {m.get('val/mIoU', 0):.4f}"
              f"  best {m.get('val/mIoU_best', 0):.4f}", flush=True)


def make_loggers(cfg: RunConfig, output: Path, wandb_run: dict | None) -> list:
    """CSV logger in `output`, plus a W&B run (offline unless chosen) that records no argv, git or code."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=output, name="", version="")]
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return loggers
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    settings = wandb.Settings(x_disable_meta=True, x_disable_stats=True, disable_git=True, save_code=False,
                              x_save_requirements=False, silent=True)
    run = {"name": output.name, "job_type": "train", **(wandb_run or {})}
    config = {**flatten(to_dict(cfg)), "neck": neck_columns(cfg.model.neck), **run.pop("config", {})}
    save_dir = Path(cfg.wandb.dir).resolve()  # absolute: W&B's service process keeps the cwd it started in
    save_dir.mkdir(parents=True, exist_ok=True)
    loggers.append(WandbLogger(project=cfg.wandb.project, entity=cfg.wandb.entity, mode=mode,
                               save_dir=str(save_dir), config=config, settings=settings, **run))
    return loggers


def wandb_mode(cfg: RunConfig) -> str:
    """`wandb.mode` from the config, else $WANDB_MODE, else offline."""
    mode = cfg.wandb.mode or os.environ.get("WANDB_MODE") or "offline"
    if mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"WANDB_MODE={mode!r} is not valid; use offline, online or disabled")
    return mode


def run(cfg: RunConfig, output: str | Path, *, callbacks: list = (), wandb_run: dict | None = None) -> dict:
    """Train `cfg` once, write `output/summary.json` and return the summary."""
    output = Path(output)
    check_rates(cfg)
    datamodule = create_datamodule(cfg)  # reads and checks the data before anything trains
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SegmentationModule(to_dict(cfg), list(datamodule.classes))
    stats = module.model_stats()
    timer, loggers = StepTimer(), make_loggers(cfg, output, wandb_run)
    visuals = RunVisuals(output, list(datamodule.classes))  # best epoch's confusion matrix and masks
    tty = sys.stdout.isatty()
    progress = [L.pytorch.callbacks.RichProgressBar()] if tty else [PlainProgress()]
    trainer = L.Trainer(default_root_dir=output, logger=loggers, callbacks=[timer, visuals, *progress, *callbacks],
                        enable_progress_bar=tty, **cfg.trainer)
    try:
        trainer.fit(module, datamodule=datamodule)
    except BaseException as e:
        _finish_wandb(loggers, {"state": type(e).__name__}, failed=type(e).__name__ != "TrialPruned")
        raise
    last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}  # last epoch
    summary = {**last, "val/mIoU": last.get("val/mIoU"), "val/mIoU_best": module.best_miou, **stats,
               "time/train_step_s": timer.median(), "epochs": trainer.current_epoch, "seed": cfg.seed,
               "classes": len(datamodule.classes), **visuals.summary(), **neck_summary(cfg),
               "config": to_dict(cfg)}
    if trainer.is_global_zero:  # under DDP only rank 0 writes the result
        summary["latency_ms"] = measure_latency_ms(module.model, cfg.data.image_size)  # batch 1, eval mode
        output.mkdir(parents=True, exist_ok=True)
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
    _finish_wandb(loggers, {k: v for k, v in summary.items() if k != "config"}, failed=False)
    return summary


def _finish_wandb(loggers: list, summary: dict, failed: bool) -> None:
    """Write the run summary to W&B and finish the run, marked failed (exit code 1) when training raised."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.summary.update(summary)
            logger.experiment.finish(exit_code=1 if failed else 0)


def main(argv: list[str] | None = None) -> int:
    """Command line: parse, validate, train, print where the results are."""
    parser = argparse.ArgumentParser(prog="python -m ablate.train", description=__doc__)
    parser.add_argument("config", nargs="?", help="YAML run config (default: the built-in defaults, as experiments/base.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.neck.norm=none trainer.max_epochs=1")
    parser.add_argument("--output", default=None, help="run folder (default runs/train/<timestamp>)")
    args = parser.parse_args(argv)
    if args.config and "=" in args.config:  # no config file, only overrides
        args.overrides, args.config = [args.config, *args.overrides], None
    try:
        cfg = load_config(args.config, args.overrides)
        output = Path(args.output or f"runs/train/{time.strftime('%Y%m%d-%H%M%S')}")
        summary = run(cfg, output)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    console.print(f"val/mIoU {summary['val/mIoU']:.4f}  best {summary['val/mIoU_best']:.4f}  "
                  f"neck params {summary['params/neck']:,}  GFLOPs {summary['gflops']:.2f}\n"
                  f"summary: {output / 'summary.json'}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
