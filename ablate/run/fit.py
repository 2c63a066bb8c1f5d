"""One training run of ablate's own model: data, SegmentationModule, a real Lightning Trainer, summary.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

from ablate.callbacks import segmentation_callbacks
from ablate.callbacks import summary as callbacks_summary
from ablate.cli import progress_bar_wanted, progress_line
from ablate.config import RunConfig, to_dict
from ablate.data import create_datamodule
from ablate.errors import ConfigError
from ablate.run.analysis import config_rate_message
from ablate.run.logged import LoggedMetrics
from ablate.run.loggers import finish_wandb, make_loggers
from ablate.run.module import SegmentationModule


def refuse_degenerate_rates(cfg: RunConfig) -> None:
    """Under `model.strict`, a dilation rate degenerate on the neck's feature map is an error before training;
    otherwise ablate.callbacks.NeckAnalysis warns about it at the map the neck receives."""
    message = config_rate_message(cfg) if cfg.model.strict else None
    if message:
        raise ConfigError(f"{message} (model.strict=true makes this an error)")


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
    """One line per validation epoch, for logs that are not a terminal and for workers that share one console (each
    line then begins with its run's label, `t3 s1 epoch 4/8 ...`: ablate.cli.labelled)."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        print(
            progress_line(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                f"  train/loss {m.get('train/loss', float('nan')):.4f}"
                f"  val/loss {m.get('val/loss', float('nan')):.4f}  val/mIoU {m.get('val/mIoU', 0):.4f}"
                f"  best {m.get('val/mIoU_best', 0):.4f}"
            ),
            flush=True,
        )


def run(cfg: RunConfig, output: str | Path, *, callbacks: list = (), wandb_run: dict | None = None) -> dict:
    """Train `cfg` once, write `output/summary.json` and return the summary."""
    output = Path(output)
    refuse_degenerate_rates(cfg)
    datamodule = create_datamodule(cfg)  # reads and checks the data before anything trains
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SegmentationModule(to_dict(cfg), list(datamodule.classes))
    timer, loggers, logged = StepTimer(), make_loggers(cfg, output, wandb_run), LoggedMetrics("val/mIoU")
    shown = segmentation_callbacks()  # what any project's run shows: metrics, masks, necks, costs
    tty = progress_bar_wanted()
    progress = [L.pytorch.callbacks.RichProgressBar()] if tty else [PlainProgress()]
    trainer = L.Trainer(
        default_root_dir=output,
        logger=loggers,
        callbacks=[timer, *shown, logged, *progress, *callbacks],
        enable_progress_bar=tty,
        **{"enable_model_summary": False, "num_sanity_val_steps": 1, **cfg.trainer},  # our params line; 1 sanity batch
    )
    try:
        trainer.fit(module, datamodule=datamodule)
    except BaseException as e:
        finish_wandb(loggers, {"state": type(e).__name__}, failed=type(e).__name__ != "TrialPruned")
        raise
    summary = {
        **logged.summary(trainer),  # every metric logged: last epoch, and at_best (the epoch of the best val/mIoU)
        "val/mIoU_best": module.best_miou,
        "time/train_step_s": timer.median(),
        "epochs": trainer.current_epoch,
        "seed": cfg.seed,
        "classes": len(datamodule.classes),
        **callbacks_summary(trainer),  # params, GFLOPs, latency (rank 0), IoU at the best epoch, RF, ERF
        "config": to_dict(cfg),
    }
    if trainer.is_global_zero:  # under DDP only rank 0 writes the result
        output.mkdir(parents=True, exist_ok=True)
        (output / "summary.json").write_text(json.dumps(summary, indent=2))
    finish_wandb(loggers, {k: v for k, v in summary.items() if k != "config"}, failed=False)
    return summary
