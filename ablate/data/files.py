"""Datasets read from image/mask files on disk (any layout of `layouts.py`), checked before training."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from ablate.data.layouts import LAYOUTS, Layout
from ablate.data.loader import make_loader
from ablate.data.recipe import IMAGENET_MEAN, IMAGENET_STD, train_transform, val_transform
from ablate.errors import ConfigError

MASK_MODES = ("P", "L")  # palette or 8-bit single-channel PNGs of class ids
CHECKED: set[tuple] = set()  # pairs found valid in this process: a sweep reads each mask once, not once a run


class FileSegmentation(Dataset):
    """(image, mask) file pairs -> transformed (normalized float image (3, H, W), long mask (H, W))."""

    def __init__(self, pairs: list[tuple[Path, Path]], lut: np.ndarray, transform):
        self.pairs, self.lut, self.transform = pairs, lut.astype(np.uint8), transform  # lut checked by `scan`

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.pairs[i]
        with Image.open(image_path) as im:
            image = tv_tensors.Image(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
        with Image.open(mask_path) as m:
            mask = tv_tensors.Mask(torch.from_numpy(self.lut[np.asarray(m)]))
        image, mask = self.transform(image, mask)
        return image, mask.long()


def check_pair(image_path: Path, mask_path: Path, layout: Layout) -> str | None:
    """What is wrong with one pair (unreadable file, size mismatch, mask mode, mask values), or None."""
    try:
        return _check_open_pair(image_path, mask_path, layout)
    except OSError as e:  # a truncated or non-image file
        return f"cannot read {image_path} or its mask {mask_path.name}: {e}"


def _check_open_pair(image_path: Path, mask_path: Path, layout: Layout) -> str | None:
    with Image.open(image_path) as im, Image.open(mask_path) as m:
        if m.mode not in MASK_MODES:
            return (
                f"{mask_path}: mask mode {m.mode!r}; expected a palette (P) or single-channel 8-bit (L) PNG of "
                "class ids (an RGB colour mask must be converted to ids first)"
            )
        if im.size != m.size:
            return (
                f"{mask_path}: mask is {m.size[0]}x{m.size[1]} but its image {image_path.name} is "
                f"{im.size[0]}x{im.size[1]}"
            )
        values = np.flatnonzero(np.bincount(np.asarray(m).ravel(), minlength=256))
    bad = [int(v) for v in values if layout.lut[v] < 0]
    if bad:
        return f"{mask_path}: mask values {bad[:10]} are not valid here; valid: {layout.valid}"
    return None


def scan(name: str, root: str, split: str, classes: tuple | None) -> tuple[Layout, tuple]:
    """The checked pairs of one split: every image has a mask of the same size with valid values. A pair
    already found valid in this process, unchanged since (path, size, mtime), is not read again."""
    layout = open_layout(name, root, classes)
    pairs = tuple(layout.find(split))
    if not pairs:
        raise ConfigError(
            f"data.name={name!r} split {split!r} under {root} has no images; check data.root and the split"
        )
    keys = [tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in pair) + (layout.valid,) for pair in pairs]
    todo = [(pair, key) for pair, key in zip(pairs, keys) if key not in CHECKED]
    with ThreadPoolExecutor(max_workers=8) as pool:  # decoding releases the GIL
        problems = [p for p in pool.map(lambda item: check_pair(*item[0], layout), todo) if p]
    if problems:
        more = f" (and {len(problems) - 1} more file(s) with problems)" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}")
    CHECKED.update(key for _, key in todo)
    return layout, pairs


def open_layout(name: str, root: str | None, classes: tuple | None) -> Layout:
    """The layout of `data.name` at `data.root`, which must exist."""
    if root is None:
        raise ConfigError(
            f"data.name={name!r} reads files: set data.root to the dataset's folder (see README, 'Your data')"
        )
    if not Path(root).is_dir():
        raise ConfigError(f"data.root={root!r} is not a folder (data.name={name!r})")
    return LAYOUTS[name](Path(root), classes)


class FilesDataModule(L.LightningDataModule):
    """A dataset on disk in one of the layouts of `layouts.py`, with the DeepLab training recipe."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD  # of the normalization, to show images as they were

    def __init__(self, data_cfg):
        super().__init__()
        self.cfg = data_cfg
        self.train_set = self.val_set = None
        self.classes: tuple[str, ...] = ()

    def splits(self, layout: Layout) -> tuple[str, str]:
        """data.train_split / data.val_split, or the layout's standard ones."""
        return self.cfg.train_split or layout.splits[0], self.cfg.val_split or layout.splits[1]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        c = self.cfg
        classes = tuple(c.classes) if c.classes else None
        train_split, val_split = self.splits(open_layout(c.name, c.root, classes))
        layout, train = scan(c.name, str(c.root), train_split, classes)
        _, val = scan(c.name, str(c.root), val_split, classes)
        shared = sorted({i.resolve() for i, _ in train} & {i.resolve() for i, _ in val})  # the same files
        if shared:
            raise ConfigError(
                f"splits {train_split!r} and {val_split!r} share {len(shared)} image(s) (e.g. "
                f"{shared[0]}): validation would measure training images"
            )
        if len(train) < c.batch_size:
            raise ConfigError(
                f"split {train_split!r} has {len(train)} image(s), fewer than data.batch_size="
                f"{c.batch_size}: no full training batch; lower data.batch_size"
            )
        self.classes = layout.classes
        self.train_set = FileSegmentation(list(train), layout.lut, train_transform(c))
        self.val_set = FileSegmentation(list(val), layout.lut, val_transform())

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.cfg, train=True)

    def val_dataloader(self) -> DataLoader:  # full-resolution images differ in size: one at a time, unpadded
        return make_loader(self.val_set, self.cfg, train=False, batch_size=1)
