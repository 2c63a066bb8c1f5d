"""PPM, the pyramid pooling module of PSPNet (Zhao et al. 2017): pooled context at several grid sizes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ablate.necks.aspp import NORMS, Norm, check_choice, conv_norm_act
from ablate.necks.registry import register_neck


class PPM(nn.Module):
    """Adaptive-average-pool to each bin size, 1x1 conv, upsample; concat with the input; 3x3 fuse.

    Args:
        in_channels: input width (given by the model, not by the config); at least the number of bins.
        out_channels: output width.
        bins: pooled grid sizes, positive integers (PSPNet: 1, 2, 3, 6).
        norm: norm after each conv: BatchNorm, GroupNorm or none (then the convs have a bias).
    """

    def __init__(
        self, in_channels: int, *, out_channels: int = 256, bins: Sequence[int] = (1, 2, 3, 6), norm: Norm = "bn"
    ):
        super().__init__()
        bins = _check(in_channels, bins, norm)
        self.out_channels = out_channels
        width, bias = in_channels // len(bins), norm == "none"
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                *conv_norm_act(nn.Conv2d(in_channels, width, 1, bias=bias), width, norm, "relu"),
            )
            for b in bins
        )
        fuse = nn.Conv2d(in_channels + width * len(bins), out_channels, 3, padding=1, bias=bias)
        self.bottleneck = nn.Sequential(*conv_norm_act(fuse, out_channels, norm, "relu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, out, H, W)
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


def _check(in_channels: int, bins, norm: str) -> tuple[int, ...]:
    check_choice("ppm", "norm", norm, NORMS)
    bins = tuple(bins)
    if not bins or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bins):
        raise ValueError(f"ppm bins must be a non-empty list of positive integers; got {list(bins)}")
    if in_channels < len(bins):
        raise ValueError(f"ppm needs in_channels >= number of bins ({len(bins)}); got {in_channels}")
    return bins


@register_neck
def ppm(in_channels: int, **options) -> PPM:
    """PSPNet's pyramid pooling by name (a pooled-context reference for ASPP tables): `PPM`'s options and checks."""
    return PPM(in_channels, **options)
