"""The DataLoader every datamodule builds: `data.num_workers` processes, kept alive between epochs."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset


def make_loader(dataset: Dataset, data_cfg, *, train: bool, batch_size: int | None = None) -> DataLoader:
    """Batches of `batch_size` (default `data.batch_size`); training shuffles and drops a last partial batch."""
    return DataLoader(
        dataset,
        batch_size=batch_size or data_cfg.batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=data_cfg.num_workers,
        persistent_workers=data_cfg.num_workers > 0,
    )
