"""A segmentation project written the way public ones are, not for ablate: a DeepLabV3 LightningModule with its own
copy of torchvision's ASPP (`ASPPConv`, `ASPPPooling`, rates 12, 24, 36 as a tuple) on an 8x8 feature map,
`forward` returning probabilities (softmax applied), TensorBoard-only API in `on_train_start`, metrics logged
under its own names (`train_loss`, `val_loss`, torchmetrics collections `val_MulticlassAccuracy`, ...), and a
dummy datamodule. Its config (config.yaml) has a TensorBoardLogger, a ModelCheckpoint on val_loss and a
LearningRateMonitor."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, atrous_rates: tuple[int, ...], out_channels: int = 32):
        super().__init__()
        modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))]
        modules += [ASPPConv(in_channels, out_channels, rate) for rate in atrous_rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3(L.LightningModule):
    def __init__(
        self,
        num_classes: int = 3,
        rates: tuple[int, int, int] = (12, 24, 36),
        aspp_channels: int = 32,
        lr: float = 0.01,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(ASPP(32, rates, aspp_channels), nn.Conv2d(aspp_channels, num_classes, 1))
        metrics = MetricCollection(
            [
                MulticlassAccuracy(num_classes),
                MulticlassJaccardIndex(num_classes),
                MulticlassF1Score(num_classes),
            ]
        )
        self.val_metrics = metrics.clone(prefix="val_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(self.decoder(self.backbone(x)), size=x.shape[-2:], mode="bilinear")
        return logits.softmax(dim=1)

    def on_train_start(self) -> None:
        layout = {"losses": {"loss": ["Multiline", ["train_loss", "val_loss"]]}}
        self.logger.experiment.add_custom_scalars(layout)  # TensorBoard's SummaryWriter only

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.nll_loss(torch.log(self(x) + 1e-8), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        probs = self(x)
        self.log("val_loss", F.nll_loss(torch.log(probs + 1e-8), y))
        self.val_metrics.update(probs, y)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 2)}


class DummyDataModule(L.LightningDataModule):
    """Images whose class per pixel is which of three colour channels is brightest, plus noise."""

    def __init__(self, size: int = 32, n: int = 48, batch_size: int = 8, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def _set(self, n: int, seed: int) -> TensorDataset:
        g = torch.Generator().manual_seed(seed)
        s = self.hparams.size
        blocks = torch.randint(0, 3, (n, s // 8, s // 8), generator=g)
        masks = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)  # (N, S, S)
        images = F.one_hot(masks, 3).permute(0, 3, 1, 2).float() + 0.8 * torch.randn(n, 3, s, s, generator=g)
        return TensorDataset(images, masks)

    def train_dataloader(self):
        return DataLoader(self._set(self.hparams.n, self.hparams.seed), batch_size=self.hparams.batch_size)

    def val_dataloader(self):
        return DataLoader(self._set(self.hparams.n // 2, self.hparams.seed + 1), batch_size=self.hparams.batch_size)
