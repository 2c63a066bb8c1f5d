"""Synthetic shapes whose class needs context: shape (needs a receptive field) x scene (needs global pooling);
with `data.shape_kinds=1` every object is a disk and the class is the scene alone."""

from __future__ import annotations

import dataclasses
import json

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ablate.data.labels import check_labels
from ablate.data.loader import make_loader
from ablate.errors import ConfigError

SHAPES = ("disk", "square", "diamond")
SCENES = ("red", "blue")  # the majority colour of the marker dots scattered over the background
MARKER_RGB = np.array([[0.95, 0.15, 0.15], [0.15, 0.25, 0.95]], np.float32)
MEAN, STD = 0.5, 0.25
DOTS = "16-24"  # marker dots an image has
# An image is drawn again while its dots do not all fit: at most MAX_DRAWS times. Share of draws that fit,
# measured (5,000 draws a size and shape_kinds; the same for 1, 2 and 3 kinds within noise): 0 below 18 px,
# 0.3 % at 18, 4 % at 20, 9 % at 21, 16 % at 22, 34 % at 24, 85 % at 32, 99 % from 48. At 22 px all 200 draws
# fail with a probability of 0.84^200 ~ 1e-15 (at 21: 0.91^200 ~ 1e-8, too often for sets of thousands).
MAX_DRAWS = 200
MIN_IMAGE_SIZE = {1: 22, 2: 22, 3: 22}  # by shape_kinds


def class_names(kinds: int = len(SHAPES)) -> tuple[str, ...]:
    """background, then each of the first `kinds` shapes in each scene (kinds 3: CLASSES)."""
    return ("background",) + tuple(f"{shape}/{scene}" for scene in SCENES for shape in SHAPES[:kinds])


CLASSES = class_names()


def make_image(rng: np.random.Generator, size: int, kinds: int = len(SHAPES)) -> tuple[np.ndarray, np.ndarray]:
    """One (3, S, S) uint8 image and its (S, S) uint8 mask.

    The scene is a vote: 16-24 small dots, 65-85 % of them in the scene's colour, spread over the free
    background. Any window sees a sample of them that can disagree with the whole image; the image mean
    (what the pooling branch computes) cannot. Objects are flat, lighter or darker than the background,
    26-102 px across at 128 px: the interior of a large object says nothing about its shape, which has to
    be read from a boundary far away. An image whose dots do not all fit beside its objects is redrawn.
    `kinds`: objects take the first 1-3 of SHAPES; with 1 (all disks) the class is the scene alone.
    At most MAX_DRAWS tries (below MIN_IMAGE_SIZE too few succeed: `check_image_size` refuses those sizes).
    """
    for _ in range(MAX_DRAWS):
        if (drawn := _draw(rng, size, kinds)) is not None:
            return drawn
    raise ConfigError(
        f"data.image_size={size}: none of {MAX_DRAWS} draws of a shapes image fit its {DOTS} marker dots beside its "
        f"objects (from {MIN_IMAGE_SIZE[kinds]} px on, a chance below 1e-9 an image: try another data.seed)"
    )


def check_image_size(size: int, kinds: int) -> None:
    """Raise ConfigError when shapes images of side `size` cannot be drawn (in MAX_DRAWS tries, with a
    probability below 1e-9 of failing once), naming the smallest side that works for `kinds`."""
    if size < MIN_IMAGE_SIZE[kinds]:
        raise ConfigError(
            f"data.image_size={size} is too small for the built-in shapes data: the smallest that works is "
            f"{MIN_IMAGE_SIZE[kinds]} (with data.shape_kinds={kinds}; its {DOTS} marker dots do not fit beside the "
            "objects in smaller images)"
        )


def _draw(rng: np.random.Generator, size: int, kinds: int) -> tuple[np.ndarray, np.ndarray] | None:
    scene = int(rng.integers(len(SCENES)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(0.3, 0.7, size=3).astype(np.float32)
    image = np.repeat(base[:, None, None], size, axis=1).repeat(size, axis=2)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 5))):  # later objects occlude earlier ones
        shape = int(rng.integers(kinds))
        radius = np.exp(rng.uniform(np.log(0.1 * size), np.log(0.4 * size)))
        cy, cx = rng.uniform(0, size, size=2)
        inside = _shape_mask(SHAPES[shape], (yy - cy) / radius, (xx - cx) / radius)
        mask[inside] = 1 + scene * kinds + shape
        image[:, inside] = np.clip(base + rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.4), 0, 1)[:, None]
    count = int(rng.integers(16, 25))
    major = round(count * rng.uniform(0.65, 0.85))
    colours = rng.permutation([scene] * major + [1 - scene] * (count - major))
    radius, clear = max(1.0, 0.023 * size), max(1.0, 0.023 * size) + max(1.0, size / 64)
    occupied = mask > 0  # dots keep `clear` px from objects and from each other
    for colour in colours:
        for _ in range(100):
            cy, cx = rng.uniform(radius, size - radius, size=2)
            y0, y1 = max(int(cy - clear), 0), min(int(cy + clear) + 2, size)
            x0, x1 = max(int(cx - clear), 0), min(int(cx + clear) + 2, size)
            d2 = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
            if not occupied[y0:y1, x0:x1][d2 <= clear**2].any():
                break
        else:
            return None
        image[:, y0:y1, x0:x1][:, d2 <= radius**2] = MARKER_RGB[colour][:, None]
        occupied[y0:y1, x0:x1] |= d2 <= clear**2
    image += rng.normal(0, 0.04, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Inside test on coordinates normalized by the radius; the three shapes have about equal area."""
    if shape == "disk":
        return dy**2 + dx**2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.886
    return np.abs(dy) + np.abs(dx) <= 1.253  # diamond


def make_split(n: int, size: int, seed: int, kinds: int = len(SHAPES)) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images (N, 3, S, S) uint8 and masks (N, S, S) uint8, the same for the same seed."""
    check_image_size(size, kinds)
    rng = np.random.default_rng(seed)
    images, masks = zip(*(make_image(rng, size, kinds) for _ in range(n)))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


class TensorSegmentation(Dataset):
    """uint8 images and masks held in memory -> normalized float image, long mask."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.images[i].float() / 255 - MEAN) / STD, self.masks[i].long()


class DeviceBatches:
    """Batches sliced from uint8 tensors already on the training device: no DataLoader, no copy a step.

    The same batches in the same order as a DataLoader over `TensorSegmentation` with the same `shuffle` and
    `drop_last`: each pass draws the loader's base seed and, shuffled, its sampler's seed from torch's global
    generator (seeded by `seed_everything`), and permutes with a generator seeded like the sampler's.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, batch_size: int, *, shuffle: bool, drop_last: bool):
        self.images, self.masks, self.batch_size = images, masks, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base seed (unused here)
        order = torch.arange(len(self.images))
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
        order = order.to(self.images.device)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield (self.images[index].float() / 255 - MEAN) / STD, self.masks[index].long()  # (B, 3, S, S), (B, S, S)


LOADING = ("batch_size", "num_workers", "on_device")  # data settings that do not change the images
_GENERATED: dict[str, tuple[TensorSegmentation, TensorSegmentation]] = {}


def generated(data_cfg) -> tuple[TensorSegmentation, TensorSegmentation]:
    """The train and val sets of `data_cfg`, generated once per process for the same settings: every trial of a
    worker shares them, and so do the workers forked from the command that generated them (read-only)."""
    key = json.dumps({k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in LOADING}, sort_keys=True)
    if key not in _GENERATED:
        size, seed, kinds = data_cfg.image_size, data_cfg.seed, data_cfg.shape_kinds
        train = make_split(data_cfg.train_size, size, seed, kinds)
        val = make_split(data_cfg.val_size, size, seed + 10_000, kinds)
        for name, (_, masks) in (("shapes train", train), ("shapes val", val)):
            check_labels(masks, len(class_names(kinds)), name)
        if len(_GENERATED) >= 4:  # a sweep over the data itself: keep the latest few
            del _GENERATED[next(iter(_GENERATED))]
        _GENERATED[key] = TensorSegmentation(*train), TensorSegmentation(*val)
    return _GENERATED[key]


class ShapesDataModule(L.LightningDataModule):
    """The built-in synthetic data: generated once from `data.seed`, kept in memory."""

    mean, std = (MEAN,) * 3, (STD,) * 3  # of the normalization, to show images as they were

    def __init__(self, data_cfg):
        super().__init__()
        self.cfg, self.classes = data_cfg, class_names(data_cfg.shape_kinds)
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = generated(self.cfg)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        if self.cfg.on_device:
            return self._on_device(self.train_set, shuffle=True, drop_last=True)
        return make_loader(self.train_set, self.cfg, train=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        if self.cfg.on_device:
            return self._on_device(self.val_set, shuffle=False, drop_last=False)
        return make_loader(self.val_set, self.cfg, train=False)

    def _on_device(self, data: TensorSegmentation, *, shuffle: bool, drop_last: bool) -> DeviceBatches:
        """`data.on_device`: the split moved once to the trainer's device (the CPU outside a Trainer)."""
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            raise ConfigError(
                f"data.on_device=true trains on one device; this run has {trainer.world_size} "
                "(trainer.devices): set data.on_device=false, whose sampler shards the data"
            )
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return DeviceBatches(
            data.images.to(device), data.masks.to(device), self.cfg.batch_size, shuffle=shuffle, drop_last=drop_last
        )
