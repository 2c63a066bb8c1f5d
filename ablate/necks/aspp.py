"""ASPP, atrous spatial pyramid pooling (DeepLabv3, Chen et al. 2017; DeepLabv3+, 2018), every axis an option."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn as nn

from ablate.necks.registry import register_neck

Norm = Literal["bn", "gn", "none"]
Fusion = Literal["concat", "sum"]
Act = Literal["relu", "none"]
NORMS, FUSIONS, ACTS = get_args(Norm), get_args(Fusion), get_args(Act)


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """`bn` -> BatchNorm2d, `gn` -> GroupNorm (>=2 channels a group), `none` -> None."""
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(math.gcd(32, channels // 2, channels), channels)  # a divisor of channels, also when odd
    return None


def conv_norm_act(conv: nn.Module, channels: int, norm: str, act: str) -> list[nn.Module]:
    """[conv, norm?, ReLU?]: the layers of one branch, in torchvision's order."""
    layers = [conv]
    if (n := make_norm(norm, channels)) is not None:
        layers.append(n)
    if act == "relu":
        layers.append(nn.ReLU())
    return layers


class ImagePooling(nn.Sequential):
    """Global average pool -> 1x1 conv -> norm -> act, broadcast back to the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out, H, W)
        return super().forward(x).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Parallel 1x1 + dilated 3x3 branches (+ image pooling), fused by concat or sum, then 1x1 projection.

    Parameter names follow torchvision's `ASPP` (`convs.*`, `project.*`), so state dicts move across.

    Args:
        in_channels: input width (given by the model, not by the config).
        out_channels: width of every branch and of the output.
        rates: dilation rates of the 3x3 branches; any number >= 1 of distinct positive integers.
        norm: norm after each conv: BatchNorm, GroupNorm or none (then the convs have a bias).
        fusion: concat = concatenate the branches then 1x1 projection; sum = add them then 1x1 projection.
        image_pooling: add the global-average-pooled branch (image-level context).
        separable: depthwise-separable dilated convs (DeepLabv3+).
        dropout: dropout probability after the projection, in [0, 1).
        act: activation after each norm; act=none with norm=none is the seed article's linear ASPP.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        norm: Norm = "bn",
        fusion: Fusion = "concat",
        image_pooling: bool = True,
        separable: bool = False,
        dropout: float = 0.1,
        act: Act = "relu",
    ):
        super().__init__()
        _check_options(
            out_channels=out_channels,
            norm=norm,
            fusion=fusion,
            act=act,
            image_pooling=image_pooling,
            separable=separable,
            dropout=dropout,
        )
        self.out_channels, self.rates, self.fusion = out_channels, check_rates(rates), fusion
        bias = norm == "none"  # conv bias exactly when there is no norm

        def branch(conv):
            return nn.Sequential(*conv_norm_act(conv, out_channels, norm, act))

        self.convs = nn.ModuleList([branch(nn.Conv2d(in_channels, out_channels, 1, bias=bias))])
        for r in self.rates:
            self.convs.append(branch(_atrous(in_channels, out_channels, r, separable, bias)))
        if image_pooling:  # GroupNorm of a 1x1 map only sees a group's few channels: use a biased conv instead
            pool_norm = "none" if norm == "gn" else norm
            pool_conv = nn.Conv2d(in_channels, out_channels, 1, bias=pool_norm == "none")
            self.convs.append(
                ImagePooling(nn.AdaptiveAvgPool2d(1), *conv_norm_act(pool_conv, out_channels, pool_norm, act))
            )
        fused = out_channels * len(self.convs) if fusion == "concat" else out_channels
        project = conv_norm_act(nn.Conv2d(fused, out_channels, 1, bias=bias), out_channels, norm, act)
        self.project = nn.Sequential(*project, nn.Dropout(float(dropout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, out, H, W)
        if self.fusion == "concat":
            return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))
        fused = self.convs[0](x)
        for conv in self.convs[1:]:
            fused = fused + conv(x)
        return self.project(fused)


def _atrous(cin: int, cout: int, rate: int, separable: bool, bias: bool) -> nn.Module:
    """3x3 conv at dilation `rate`, padded to keep the size; separable = depthwise 3x3 then pointwise 1x1."""
    if not separable:
        return nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=bias)
    depthwise = nn.Conv2d(cin, cin, 3, padding=rate, dilation=rate, groups=cin, bias=False)
    return nn.Sequential(depthwise, nn.Conv2d(cin, cout, 1, bias=bias))


def check_rates(rates) -> tuple[int, ...]:
    """Rates as a tuple of distinct positive ints; accepts a sequence or a "6,12,18" string."""
    if isinstance(rates, str):
        try:
            rates = [int(r) for r in rates.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"rates {rates!r} is not a comma-separated list of integers, e.g. '6,12,18'") from None
    if isinstance(rates, int) or not isinstance(rates, Sequence) or len(rates) == 0:
        raise ValueError(f"rates must be a non-empty list of positive integers, e.g. [6, 12, 18]; got {rates!r}")
    bad = [r for r in rates if isinstance(r, bool) or not isinstance(r, int) or r < 1]
    if bad:
        raise ValueError(f"rates must be positive integers; {bad} in {list(rates)} are not")
    if len(set(rates)) != len(rates):
        raise ValueError(f"rates must be distinct; got {list(rates)}")
    return tuple(rates)


def check_choice(neck: str, name: str, value, choices) -> None:
    """Raise naming `neck`'s option `name`, the bad value and the valid choices unless `value` is one of them."""
    if isinstance(value, bool) != isinstance(choices[0], bool) or value not in choices:
        raise ValueError(f"{neck} {name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")


def _check_options(*, out_channels, norm, fusion, act, image_pooling, separable, dropout) -> None:
    for name, value, choices in (
        ("norm", norm, NORMS),
        ("fusion", fusion, FUSIONS),
        ("act", act, ACTS),
        ("image_pooling", image_pooling, (True, False)),
        ("separable", separable, (True, False)),
    ):
        check_choice("aspp", name, value, choices)
    if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
        raise ValueError(f"aspp out_channels must be a positive integer; got {out_channels!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"aspp dropout must be in [0, 1); got {dropout!r}")


@register_neck
def aspp(in_channels: int, **options) -> ASPP:
    """DeepLabv3 ASPP by name: `ASPP`'s options, defaults and checks."""
    return ASPP(in_channels, **options)
