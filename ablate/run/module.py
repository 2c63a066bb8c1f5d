"""SegmentationModule: the LightningModule (cross-entropy, SGD/AdamW + poly/cosine, torchmetrics mIoU)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from ablate.config import from_dict
from ablate.data import IGNORE_INDEX
from ablate.data.recipe import sliding_logits
from ablate.errors import ConfigError
from ablate.run.model import SegmentationModel


class SegmentationModule(L.LightningModule):
    """Trains a `SegmentationModel` from a plain-dict run config (so checkpoints load with weights_only)."""

    def __init__(self, config: dict, class_names: list[str]):
        super().__init__()
        self.save_hyperparameters()  # plain dict + list of str only
        self.cfg = from_dict(config)
        m = self.cfg.model
        self.class_names = list(class_names)
        self.model = SegmentationModel(
            encoder=m.encoder,
            encoder_weights=m.encoder_weights,
            classes=len(class_names),
            encoder_depth=m.encoder_depth,
            output_stride=m.output_stride,
            neck=m.neck,
            head=m.head,
        )
        if m.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.model.forward) if m.compile else self.model.forward
        n = len(class_names)
        self.val_metrics = MetricCollection(
            {
                "mIoU": MulticlassJaccardIndex(n, average="macro", ignore_index=IGNORE_INDEX),
                "IoU": MulticlassJaccardIndex(n, average="none", ignore_index=IGNORE_INDEX, zero_division=float("nan")),
                "pixel_acc": MulticlassAccuracy(n, average="micro", ignore_index=IGNORE_INDEX),
            },
            prefix="val/",
        )
        self.best_miou = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes, H, W)
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):  # fail the run now rather than report a metric of a diverged model
            raise FloatingPointError(
                f"train/loss is {loss.item()} at step {self.global_step}; lower optim.lr (now {self.cfg.optim.lr})"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        d = self.cfg.data
        logits = (
            sliding_logits(self, x, d.image_size, max(1, d.image_size * 2 // 3)) if d.val_mode == "slide" else self(x)
        )
        self.log("val/loss", F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX), sync_dist=True)
        preds = logits.max(1).indices  # (B, H, W); = argmax(1), 3-6x faster on the CPU (torch 2.14)
        self.val_metrics.update(preds, y)
        return preds  # for callbacks: ablate.callbacks reads them instead of a second forward pass

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        miou = float(metrics["val/mIoU"])
        if not self.trainer.sanity_checking:
            self.best_miou = max(self.best_miou, miou)
        self.log_dict(
            {"val/mIoU": miou, "val/mIoU_best": self.best_miou, "val/pixel_acc": metrics["val/pixel_acc"]},
            prog_bar=True,
        )
        present = {f"val/IoU/{c}": iou for c, iou in zip(self.class_names, metrics["val/IoU"]) if not iou.isnan()}
        self.log_dict(present)  # classes absent from both prediction and target have no IoU

    def configure_optimizers(self):
        o = self.cfg.optim
        fused = {"fused": True} if o.fused else {}  # the default path stays exactly as it was
        try:
            if o.name == "sgd":
                opt = torch.optim.SGD(
                    self.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **fused
                )
            else:
                opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay, **fused)
        except RuntimeError as e:  # a device torch has no fused kernel for
            raise ConfigError(f"optim.fused=true: {e}; set optim.fused=false on {self.device.type}") from None
        if o.schedule == "none":
            return opt
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        if o.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        else:
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(1 - step / total, 0) ** o.poly_power)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_miou"] = self.best_miou

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_miou = checkpoint.get("best_miou", 0.0)
