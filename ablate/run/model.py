"""SegmentationModel: smp encoder -> neck (registry) -> DeepLabv3 / DeepLabv3+ head -> upsample to the input."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder

from ablate.necks import create_neck


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    """k x k conv (same padding, no bias) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SegmentationModel(nn.Module):
    """Encoder features[-1] -> neck -> head; `deeplabv3plus` also fuses the stride-4 feature (48 channels)."""

    def __init__(
        self,
        *,
        encoder: str,
        classes: int,
        neck: dict,
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        output_stride: int = 8,
        head: str = "deeplabv3",
    ):
        super().__init__()
        self.encoder = get_encoder(
            encoder, in_channels=3, depth=encoder_depth, weights=encoder_weights, output_stride=output_stride
        )
        for k in range(encoder_depth, 5):  # smp keeps ResNet stages deeper than `depth`; they never run
            if hasattr(self.encoder, f"layer{k}"):
                setattr(self.encoder, f"layer{k}", nn.Identity())
        options = {k: v for k, v in neck.items() if k != "name"}
        self.neck = create_neck(neck["name"], self.encoder.out_channels[-1], **options)
        width = self.neck.out_channels
        self.plus = head == "deeplabv3plus"
        if self.plus:
            self.low_level = conv_bn_relu(self.encoder.out_channels[2], 48, 1)
            width += 48
        self.head = conv_bn_relu(width, self.neck.out_channels, 3)
        self.classifier = nn.Conv2d(self.neck.out_channels, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes, H, W)
        features = self.encoder(x)
        y = self.neck(features[-1])  # (B, C, H/os, W/os)
        if self.plus:
            low = self.low_level(features[2])  # (B, 48, H/4, W/4)
            y = torch.cat([F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False), low], 1)
        y = self.classifier(self.head(y))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
