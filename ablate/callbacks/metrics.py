"""Dataset-level segmentation metrics of any module (mIoU as in DeepLabv3, Chen et al. 2017): val/mIoU,
val/IoU/<class>, val/pixel_acc, val/mIoU_best, and the confusion matrix of the best epoch."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from ablate.callbacks.convention import (
    IGNORE_INDEX,
    ConventionCallback,
    Misfit,
    OutputTap,
    check_labels,
    class_names,
    log_metrics,
    split_batch,
)


def class_iou(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU from a confusion matrix (rows = true class); NaN where a class is in neither."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    return np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)


def make_metrics(n: int, ignore_index: int) -> MetricCollection:
    """mIoU (macro: classes absent from both prediction and target excluded), per-class IoU and the confusion
    matrix, all torchmetrics, sharing one update (pixel accuracy is the matrix's trace over its sum)."""
    jaccard = {"ignore_index": ignore_index, "validate_args": False}
    return MetricCollection(
        {
            "mIoU": MulticlassJaccardIndex(n, average="macro", **jaccard),
            "IoU": MulticlassJaccardIndex(n, average="none", zero_division=float("nan"), **jaccard),
            "confusion": MulticlassConfusionMatrix(n, ignore_index=ignore_index, validate_args=False),
        },
        compute_groups=[["mIoU", "IoU", "confusion"]],
    )


class SegmentationMetrics(ConventionCallback):
    """val/mIoU, val/IoU/<class> (present classes), val/pixel_acc and val/mIoU_best of the whole validation set;
    a key the module logs itself is left to it. Keeps the confusion matrix of the epoch of the best val/mIoU
    (the module's own when it logs one) and writes it to confusion.json when fit ends."""

    def __init__(self, ignore_index: int = IGNORE_INDEX, dirpath: str | None = None, strict: bool = True):
        super().__init__(dirpath, strict)
        self.ignore_index, self.tap = ignore_index, OutputTap()
        self.metrics, self.classes, self.mine = None, None, {}  # mine: key -> the tensor we put in callback_metrics
        self.best, self.best_epoch, self.matrix = None, None, None

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.active:
            self.tap.attach(module)
        if self.metrics is not None:
            self.metrics.reset()

    def on_validation_batch_start(self, trainer, module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.tap.reset()

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not self.active:
            return
        try:
            image, mask = split_batch(batch)
            preds, n = self.tap.predictions(module, outputs, image, mask)
            if self.metrics is None:
                self._start(trainer, module, n, mask)
        except Misfit as e:
            self.tap.detach()
            return self.left_out(str(e))
        self.metrics.update(preds, mask)

    def _start(self, trainer: L.Trainer, module: L.LightningModule, n: int | None, mask: torch.Tensor) -> None:
        """The metrics, once the first batch shows the number of classes (logits' C, else the data's classes)."""
        n = n or len(getattr(trainer.datamodule, "classes", None) or [])
        if not n:
            raise Misfit("validation_step returns class ids and the datamodule has no `classes` to count them by")
        check_labels(mask, n, self.ignore_index)
        self.classes = class_names(trainer.datamodule, n)
        self.metrics = make_metrics(n, self.ignore_index).to(module.device)

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.tap.detach()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.active or self.metrics is None:
            return
        values = self.metrics.compute()  # every rank takes part in the sync
        confusion = values["confusion"]
        ours = {"val/mIoU": values["mIoU"], "val/pixel_acc": confusion.trace() / confusion.sum().clamp(min=1)}
        ours.update({f"val/IoU/{c}": v for c, v in zip(self.classes, values["IoU"]) if not v.isnan()})
        self._add(trainer, ours)  # also in the sanity check, so a callback checking the metric sees it there
        if trainer.sanity_checking:
            return
        miou = float(trainer.callback_metrics["val/mIoU"])  # the module's own when it logs one
        if self.best is None or miou > self.best:
            self.best, self.best_epoch, self.matrix = miou, trainer.current_epoch, values["confusion"].cpu().numpy()
        self._add(trainer, {"val/mIoU_best": torch.tensor(self.best)})

    def _add(self, trainer: L.Trainer, values: dict) -> None:
        """Put `values` in callback_metrics and the loggers, except the keys the module logged this epoch."""
        metrics = trainer.callback_metrics
        new = {
            k: v.detach().float().cpu() for k, v in values.items() if k not in metrics or metrics[k] is self.mine.get(k)
        }
        metrics.update(new)
        self.mine.update(new)
        log_metrics(trainer, {k: float(v) for k, v in new.items()})

    def summary(self) -> dict[str, float]:
        """`val/mIoU_best` and `val/IoU_best/<class>` at the best epoch, for the classes present there."""
        if self.matrix is None:
            return {}
        per_class = zip(self.classes, class_iou(self.matrix))
        return {"val/mIoU_best": self.best, **{f"val/IoU_best/{c}": float(v) for c, v in per_class if not np.isnan(v)}}

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.matrix is None or not trainer.is_global_zero:
            return
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        matrix = self.matrix.astype(int).tolist()
        (folder / "confusion.json").write_text(
            json.dumps({"classes": self.classes, "epoch": self.best_epoch, "matrix": matrix})
        )
        log_metrics(trainer, {k: v for k, v in self.summary().items() if k.startswith("val/IoU_best/")})
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                logger.experiment.log({"val/confusion_matrix": self.wandb_chart()})

    def wandb_chart(self):
        """`val/confusion_matrix`: W&B's confusion-matrix chart of the best epoch (pixels)."""
        import wandb

        rows = [[a, p, int(self.matrix[i, j])] for i, a in enumerate(self.classes) for j, p in enumerate(self.classes)]
        table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=rows)
        return wandb.plot_table(
            "wandb/confusion_matrix/v1",
            table,
            {"Actual": "Actual", "Predicted": "Predicted", "nPredictions": "nPredictions"},
            {"title": f"confusion matrix (pixels), best epoch {self.best_epoch}"},
        )
