"""Synthetic segmentation data: one square (class 1) or disc (class 2) per image on a noisy background (class 0)."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset


def make_shapes(n: int, size: int, seed: int) -> TensorDataset:
    """`n` images (n, 3, size, size) and masks (n, size, size); squares and discs differ only in their outline."""
    g = torch.Generator().manual_seed(seed)
    radius = torch.randint(size // 8, size // 3, (n, 1, 1), generator=g)
    cy, cx = torch.randint(size // 4, size - size // 4, (2, n, 1, 1), generator=g)  # centres, (n, 1, 1) each
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")  # (H, W)
    dy, dx = (yy - cy).abs(), (xx - cx).abs()  # (n, H, W)
    disc = torch.rand(n, 1, 1, generator=g) < 0.5
    inside = torch.where(disc, dy**2 + dx**2 <= radius**2, (dy <= radius) & (dx <= radius))
    masks = inside.long() * (1 + disc.long())  # 0 background, 1 square, 2 disc
    colour = torch.rand(n, 3, 1, 1, generator=g) + 0.5  # the same colour law for both shapes
    images = torch.randn(n, 3, size, size, generator=g) * 0.3 + inside.unsqueeze(1) * colour
    return TensorDataset(images, masks)


class ShapesData(LightningDataModule):
    """Squares versus discs; the data has its own seed, so every run seed sees the same images.

    Args:
        size: image side in pixels.
        train_size: number of training images.
        val_size: number of validation images.
        batch_size: images per batch.
        seed: seed of the generated images (not of the run).
    """

    num_classes = 3
    classes = ["background", "square", "disc"]  # names for per-class metrics (ablate.callbacks reads `classes`)

    def __init__(self, size: int = 32, train_size: int = 128, val_size: int = 64, batch_size: int = 16, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str) -> None:
        hp = self.hparams
        self.train_set = make_shapes(hp.train_size, hp.size, hp.seed)
        self.val_set = make_shapes(hp.val_size, hp.size, hp.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)
