"""The input stem: a modality with C channels other than 1 or 3 mapped onto the encoder's 3-channel patch embedding.

Every encoder MFNet supports was pre-trained on RGB. A 1-channel modality is repeated to 3 and a 3-channel one goes
in as it is (no weights: MFNet as published); any other count gets a trainable 1x1 convolution C -> 3 with bias,
trained with the head and saved with the adapter. Its initial weights continue those two cases: the first three
channels pass through unchanged when there are at least three (order the bands so that they are the RGB-like ones:
``--bands s2=4,3,2,8,...``), and two channels are averaged into each of the three (a SAR VV/VH pair reads like a
repeated grey image). The bias starts at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_CHANNELS = 3


def needs_stem(channels: int) -> bool:
    """Whether a modality of ``channels`` channels gets a trainable stem (all counts but 1 and 3)."""
    return channels not in (1, ENCODER_CHANNELS)


class InputStem(nn.Module):
    """(B, C, H, W) -> (B, 3, H, W): a 1x1 convolution, initialised as the module docstring says.

    The weight (3, C, 1, 1) and bias (3,) are the module's own parameters (no child convolution whose default
    initialisation a model-wide re-initialisation would apply after this one).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.weight = nn.Parameter(torch.empty(ENCODER_CHANNELS, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.empty(ENCODER_CHANNELS))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        weight = torch.zeros(ENCODER_CHANNELS, self.in_channels)
        if self.in_channels >= ENCODER_CHANNELS:
            weight[:, :ENCODER_CHANNELS] = torch.eye(ENCODER_CHANNELS)
        else:
            weight[:] = 1.0 / self.in_channels
        self.weight.copy_(weight[:, :, None, None])
        self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {ENCODER_CHANNELS}"
