"""MFNet's trainable necks for encoders that bring none: every map handed to the DFM is 256 wide.

SAM's own neck (1x1 conv -> LayerNorm -> 3x3 conv -> LayerNorm, 256 wide) is frozen with SAM. A plain ViT (DINOv2,
DINOv3) hands its last hidden states; `ViTNeck` is SAM's neck shape, trained with the head and saved with the
adapter. Hiera hands four stage maps; `LevelNecks` projects each to 256 channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import LayerNorm2d
from .base import NECK_CHANNELS


class ViTNeck(nn.Module):
    """(N, D, g, g) -> (N, 256, S/16, S/16): SAM's neck shape on a ViT's token map.

    A patch-14 ViT (DINOv2) at S = 224 has a 16 x 16 token grid while the decoder's 1/16 level is 14 x 14: the map
    is resized bilinearly (align_corners=False) to ``output_grid`` after the neck.
    """

    def __init__(self, in_channels: int, output_grid: int, channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.output_grid = output_grid
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.layer_norm1 = LayerNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.layer_norm2 = LayerNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm2(self.conv2(self.layer_norm1(self.conv1(x))))
        if x.shape[-1] != self.output_grid:
            x = F.interpolate(x, size=(self.output_grid, self.output_grid), mode="bilinear", align_corners=False)
        return x


class LevelNecks(nn.Module):
    """Four stage maps [(N, C_l, S/4·2^-l, ·)] -> the same grids, 256 channels each: 1x1 conv + LayerNorm per level."""

    def __init__(self, in_channels: Sequence[int], channels: int = NECK_CHANNELS) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, kernel_size=1, bias=False), LayerNorm2d(channels)) for c in in_channels
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [level(x) for level, x in zip(self.levels, maps)]
