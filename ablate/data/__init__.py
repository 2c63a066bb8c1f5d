"""Datamodules by `data.name`; every one exposes `.classes` (names) before training starts, and the `.mean`
and `.std` its images are normalized with."""

from __future__ import annotations

from ablate.config import RunConfig
from ablate.data.labels import IGNORE_INDEX, check_labels
from ablate.errors import ConfigError

__all__ = ["IGNORE_INDEX", "check_labels", "create_datamodule"]


def create_datamodule(cfg: RunConfig):
    """The LightningDataModule for `cfg.data.name`, set up (data read and checked) and ready to train."""
    from ablate.data.files import FilesDataModule
    from ablate.data.shapes import ShapesDataModule

    dm = ShapesDataModule(cfg.data) if cfg.data.name == "shapes" else FilesDataModule(cfg.data)
    dm.setup("fit")
    if cfg.model.classes is not None and cfg.model.classes != len(dm.classes):
        raise ConfigError(
            f"model.classes={cfg.model.classes} but data {cfg.data.name!r} has {len(dm.classes)} "
            f"classes ({', '.join(dm.classes)}); set model.classes={len(dm.classes)} or leave it null"
        )
    return dm
