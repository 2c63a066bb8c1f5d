"""Datamodules by `data.name`; every one exposes `.classes` (names) before training starts, and the `.mean`
and `.std` its images are normalized with."""
from __future__ import annotations

import torch

from ablate.config import ConfigError, RunConfig

IGNORE_INDEX = 255  # the mask label that is never scored (VOC boundaries, padding, unlabeled pixels)


def create_datamodule(cfg: RunConfig):
    """The LightningDataModule for `cfg.data.name`, set up (data read and checked) and ready to train."""
    from ablate.data.files import FilesDataModule
    from ablate.data.shapes import ShapesDataModule

    dm = ShapesDataModule(cfg.data) if cfg.data.name == "shapes" else FilesDataModule(cfg.data)
    dm.setup("fit")
    if cfg.model.classes is not None and cfg.model.classes != len(dm.classes):
        raise ConfigError(f"model.classes={cfg.model.classes} but data {cfg.data.name!r} has {len(dm.classes)} "
                          f"classes ({', '.join(dm.classes)}); set model.classes={len(dm.classes)} or leave it null")
    return dm


def check_labels(masks: torch.Tensor, num_classes: int, where: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise if a mask holds a value outside [0, num_classes) other than `ignore_index`."""
    values = torch.unique(masks)
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        raise ConfigError(f"{where}: mask values {bad[:10]} are outside [0, {num_classes}) and not the "
                          f"ignore index {ignore_index}")
