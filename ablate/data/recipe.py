"""The DeepLab training recipe (Chen et al. 2017, DeepLabv3 Sec. 4): scale, crop with padding, flip; torchvision v2."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ablate.data.labels import IGNORE_INDEX

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize image and mask by one factor drawn uniformly from [low, high]; masks by nearest neighbour."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        scale = float(torch.empty(1).uniform_(self.low, self.high))  # the global torch RNG: seeded per worker
        return {"size": [max(1, round(h * scale)), max(1, round(w * scale))]}

    def transform(self, inpt, params: dict):
        return v2.functional.resize(inpt, params["size"], antialias=True)  # v2 resizes a Mask with NEAREST


def to_normalized() -> list:
    """uint8 image -> float in [0, 1] -> ImageNet-normalized; the mask stays as it is."""
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(data_cfg) -> v2.Compose:
    """Random scale, optional colour jitter, normalize, random crop to `image_size` padded with 0 (the mean
    colour after normalization) and 255 in the mask, horizontal flip."""
    low, high = data_cfg.scale_range
    steps = [RandomScale(low, high)] if (low, high) != (1.0, 1.0) else []
    if data_cfg.jitter > 0:
        j = data_cfg.jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    steps += to_normalized()
    steps.append(
        v2.RandomCrop(
            data_cfg.image_size, pad_if_needed=True, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: IGNORE_INDEX}
        )
    )
    if data_cfg.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def val_transform() -> v2.Compose:
    """Validation sees the whole image at its own resolution, only normalized."""
    return v2.Compose(to_normalized())


def sliding_logits(forward, x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Logits (B, K, H, W) of `forward` over `window`-sized tiles `stride` apart, averaged where they overlap."""
    h, w = x.shape[-2:]
    total = count = None
    for top in _starts(h, window, stride):
        for left in _starts(w, window, stride):
            tile = forward(x[..., top : top + window, left : left + window])  # (B, K, <=window, <=window)
            if total is None:
                total = x.new_zeros(x.shape[0], tile.shape[1], h, w)
                count = x.new_zeros(1, 1, h, w)
            total[..., top : top + window, left : left + window] += tile
            count[..., top : top + window, left : left + window] += 1
    return total / count


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Tile offsets along one side: every `stride`, plus the last tile flush with the end."""
    if length <= window:
        return [0]
    return sorted(set(range(0, length - window, stride)) | {length - window})
