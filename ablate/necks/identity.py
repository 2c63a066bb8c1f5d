"""The no-context baseline: a 1x1 projection (conv + norm + ReLU), no spatial context added."""

from __future__ import annotations

import torch.nn as nn

from ablate.necks.aspp import NORMS, Norm, check_choice, conv_norm_act
from ablate.necks.registry import register_neck


class Identity(nn.Sequential):
    """No-context reference for tables: 1x1 conv -> norm -> ReLU to `out_channels`; keeps the spatial size.

    Args:
        in_channels: input width (given by the model, not by the config).
        out_channels: output width.
        norm: norm after the conv: BatchNorm, GroupNorm or none (then the conv has a bias).
    """

    def __init__(self, in_channels: int, *, out_channels: int = 256, norm: Norm = "bn"):
        check_choice("identity", "norm", norm, NORMS)
        super().__init__(
            *conv_norm_act(nn.Conv2d(in_channels, out_channels, 1, bias=norm == "none"), out_channels, norm, "relu")
        )
        self.out_channels = out_channels


@register_neck
def identity(in_channels: int, **options) -> Identity:
    """The no-context neck by name: `Identity`'s options, defaults and checks."""
    return Identity(in_channels, **options)
