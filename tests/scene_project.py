"""A small segmentation project of the tests' own, written without ablate's conventions in mind except the
batches: dict batches {"image", "mask"} (or other keys), a 1-pixel ignore border (255), an ablate ASPP under the
attribute `context`, logits at half the mask's size, a module that logs only its loss. LightningCLI can build it
(`class_path: scene_project.SceneNet`)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ablate.necks import ASPP

CLASSES = ["sky", "road", "car"]


class Scenes(Dataset):
    """16x16 images of three horizontal bands (sky, road, car) whose heights vary; a 1-pixel border of 255."""

    def __init__(self, n: int, seed: int, keys=("image", "mask")):
        g = torch.Generator().manual_seed(seed)
        self.items, self.keys = [], keys
        for _ in range(n):
            cut = torch.randint(4, 8, (2,), generator=g)
            mask = torch.zeros(16, 16, dtype=torch.long)
            mask[cut[0] :], mask[cut[0] + cut[1] :] = 1, 2
            image = torch.randn(3, 16, 16, generator=g) * 0.5 + F.one_hot(mask, 3).permute(2, 0, 1)
            mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1] = 255, 255, 255, 255
            self.items.append((image, mask))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return dict(zip(self.keys, self.items[i]))


class ScenesData(L.LightningDataModule):
    classes = CLASSES

    def __init__(self, keys: Sequence[str] = ("image", "mask")):
        super().__init__()
        self.keys = keys

    def train_dataloader(self):
        return DataLoader(Scenes(16, 0, self.keys), batch_size=4, shuffle=True)

    def val_dataloader(self):
        return DataLoader(Scenes(12, 1, self.keys), batch_size=5)


class SceneNet(L.LightningModule):
    """Stride-2 conv -> ASPP as `self.context` -> 1x1 classifier; logits at half the mask size; logs its loss only."""

    def __init__(self, rates: Sequence[int] = (1, 2), flat_output: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.context = ASPP(8, out_channels=8, rates=rates, dropout=0.0)
        self.head = nn.Conv2d(8, 3, 1)
        self.flat_output = flat_output

    def forward(self, x):  # (B, 3, 16, 16) -> (B, 3, 8, 8)
        logits = self.head(self.context(self.stem(x)))
        return logits.flatten(1) if self.flat_output else logits

    def step(self, batch):
        image, mask = batch[next(iter(batch))], batch[list(batch)[1]]
        logits = F.interpolate(self(image).view(len(image), 3, 8, 8), size=mask.shape[-2:], mode="bilinear")
        return F.cross_entropy(logits, mask, ignore_index=255)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.step(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)
