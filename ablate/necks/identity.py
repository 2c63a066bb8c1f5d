"""The no-context baseline: a 1x1 projection (conv + norm + ReLU), no spatial context added."""
from __future__ import annotations

import torch.nn as nn

from ablate.necks import register_neck
from ablate.necks.aspp import NORMS, conv_norm_act


class Projection(nn.Sequential):
    """1x1 conv -> norm -> ReLU; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__(*conv_norm_act(nn.Conv2d(in_channels, out_channels, 1, bias=norm == "none"),
                                        out_channels, norm, "relu"))
        self.out_channels = out_channels


@register_neck
def identity(in_channels: int, *, out_channels: int = 256, norm: str = "bn") -> nn.Module:
    """No-context reference for tables: only a 1x1 projection to `out_channels`."""
    if norm not in NORMS:
        raise ValueError(f"identity norm={norm!r} is not valid; choose one of {', '.join(map(repr, NORMS))}")
    return Projection(in_channels, out_channels, norm)
