"""A tiny segmentation LightningModule: conv encoder -> injected neck -> dropout -> 1x1 classifier -> upsample."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm follows) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SegModule(LightningModule):
    """Semantic segmentation with a neck chosen in the config.

    Args:
        neck: builds the neck from the encoder's output width, e.g. `class_path: ablate.necks.ASPP`;
            the module it returns must have `.out_channels`.
        num_classes: number of classes (linked from the data by the CLI).
        width: encoder width; the encoder outputs 2 * width channels at 1/4 of the input size.
        dropout: dropout probability before the classifier.
        lr: Adam learning rate.
    """

    def __init__(
        self,
        neck: Callable[[int], nn.Module],
        num_classes: int = 3,
        width: int = 16,
        dropout: float = 0.1,
        lr: float = 0.01,
    ):
        super().__init__()
        self.save_hyperparameters()  # from the CLI: plain config values (the neck as class_path + init_args)
        self.encoder = nn.Sequential(
            conv_bn_relu(3, width, 2),
            conv_bn_relu(width, width, 1),
            conv_bn_relu(width, 2 * width, 2),
            conv_bn_relu(2 * width, 2 * width, 1),
        )
        self.neck = neck(2 * width)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(self.neck.out_channels, num_classes, 1)
        self.val_iou = MulticlassJaccardIndex(num_classes, average="macro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes, H, W)
        features = self.neck(self.encoder(x))  # (B, C, H/4, W/4)
        logits = self.classifier(self.dropout(features))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch, batch_idx):
        images, masks = batch  # (B, 3, H, W), (B, H, W)
        loss = F.cross_entropy(self(images), masks)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, masks = batch
        logits = self(images)
        self.val_iou.update(logits, masks)
        self.val_acc.update(logits, masks)
        self.log("val/loss", F.cross_entropy(logits, masks))
        self.log("val/mIoU", self.val_iou, prog_bar=True)
        self.log("val/acc", self.val_acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
