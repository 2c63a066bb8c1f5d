"""What a mask may hold: class ids 0..K-1 and the one label that is never scored."""

from __future__ import annotations

import torch

from ablate.errors import ConfigError

IGNORE_INDEX = 255  # the mask label that is never scored (VOC boundaries, padding, unlabeled pixels)


def check_labels(masks: torch.Tensor, num_classes: int, where: str, ignore_index: int = IGNORE_INDEX) -> None:
    """Raise if a mask holds a value outside [0, num_classes) other than `ignore_index`."""
    values = torch.unique(masks)
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        raise ConfigError(
            f"{where}: mask values {bad[:10]} are outside [0, {num_classes}) and not the ignore index {ignore_index}"
        )
