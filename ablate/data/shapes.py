"""Synthetic shapes whose class needs context: shape (needs a receptive field) x scene (needs global pooling)."""
from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ablate.data import check_labels

SHAPES = ("disk", "square", "diamond")
SCENES = ("hstripes", "vstripes")
CLASSES = ("background",) + tuple(f"{shape}/{scene}" for scene in SCENES for shape in SHAPES)
MEAN, STD = 0.5, 0.25


def make_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (3, S, S) uint8 image and its (S, S) uint8 mask.

    The scene (stripe direction of the background) is hidden within a stripe-free margin around each
    object, so it has to be read from far away; shape interiors are flat, so the shape has to be read
    from the object's boundary: both need context beyond a small receptive field.
    """
    scene = int(rng.integers(len(SCENES)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period, phase, contrast = rng.uniform(5, 12), rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.4)
    coord = yy if SCENES[scene] == "hstripes" else xx
    base = rng.uniform(0.3, 0.7, size=3).astype(np.float32)
    stripes = contrast * np.sin(2 * np.pi * coord / period + phase)  # (S, S)
    image = base[:, None, None] + stripes[None]
    mask = np.zeros((size, size), np.uint8)
    margin, objects = np.zeros((size, size), bool), []
    for _ in range(int(rng.integers(1, 5))):
        shape = int(rng.integers(len(SHAPES)))
        radius = np.exp(rng.uniform(np.log(0.03 * size), np.log(0.28 * size)))
        cy, cx = rng.uniform(0, size, size=2)
        inside = _shape_mask(SHAPES[shape], (yy - cy) / radius, (xx - cx) / radius)
        margin |= _shape_mask("disk", (yy - cy) / (radius + 0.12 * size), (xx - cx) / (radius + 0.12 * size))
        mask[inside] = 1 + scene * len(SHAPES) + shape
        objects.append(inside)
    image[:, margin] = base[:, None]  # flat background around objects: no local scene cue
    for inside in objects:  # flat colours, drawn alike for every class; later objects occlude earlier ones
        image[:, inside] = rng.uniform(0.1, 0.9, size=(3, 1)).astype(np.float32)
    image += rng.normal(0, 0.04, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Inside test on coordinates normalized by the radius; the three shapes have about equal area."""
    if shape == "disk":
        return dy ** 2 + dx ** 2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.886
    return np.abs(dy) + np.abs(dx) <= 1.253  # diamond


def make_split(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (N, 3, S, S) uint8 and masks (N, S, S) uint8, the same for the same seed."""
    rng = np.random.default_rng(seed)
    images, masks = zip(*(make_image(rng, size) for _ in range(n)))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


class TensorSegmentation(Dataset):
    """uint8 images and masks held in memory -> normalized float image, long mask."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.images[i].float() / 255 - MEAN) / STD, self.masks[i].long()


class ShapesDataModule(L.LightningDataModule):
    """The built-in synthetic data: generated once from `data.seed`, kept in memory."""

    classes = CLASSES

    def __init__(self, data_cfg):
        super().__init__()
        self.cfg = data_cfg
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        size, seed = self.cfg.image_size, self.cfg.seed
        train, val = make_split(self.cfg.train_size, size, seed), make_split(self.cfg.val_size, size, seed + 10_000)
        for name, (_, masks) in (("shapes train", train), ("shapes val", val)):
            check_labels(masks, len(CLASSES), name)
        self.train_set, self.val_set = TensorSegmentation(*train), TensorSegmentation(*val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0)
