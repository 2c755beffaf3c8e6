"""MFNet's Deep Fusion Module: one simple feature pyramid per modality and SE-Fusion at every level.

Written from ``MFNET_SPEC.md`` section 3. Each modality's 1/16 neck map (B, C, h, w) becomes four maps
at 1/4, 1/8, 1/16 and 1/32 of the input (4h, 2h, h and h/2 on a side), and the modalities are merged at
every level by summing one squeeze-and-excitation branch per modality.

Parameter counts with C = 256 (reference options, M = 2): pyramids 787,712 each (1,575,424 for two),
SE-Fusion 8,464 per SE branch (67,712 for two modalities at four levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QuarterNorm = Literal["layernorm", "batchnorm"]
QUARTER_NORMS: tuple[str, ...] = get_args(QuarterNorm)
NUM_LEVELS = 4


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of a channels-first map, with a per-channel affine.

    Shapes: (B, C, H, W) -> (B, C, H, W). Statistics are taken over C at every pixel (biased variance),
    as SAM's neck and the reference's channel LayerNorm do.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def reset_parameters(self) -> None:
        """Identity affine: weight 1, bias 0."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise (B, C, H, W) over C; returns (B, C, H, W)."""
        # F.layer_norm normalises trailing dims, so move C last; it is also autocast to float32.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


def _make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm2d(channels, eps=1e-6)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"quarter_norm must be one of {QUARTER_NORMS}, got {kind!r}")


class SimpleFeaturePyramid(nn.Module):
    """A ViTDet-style simple feature pyramid built from one 1/16 map, ``channels`` wide at every level.

    Levels: 1/4 = ConvT(k2,s2) -> norm -> GELU -> ConvT(k2,s2); 1/8 = ConvT(k2,s2); 1/16 = identity;
    1/32 = MaxPool(2). ``quarter_norm`` picks the 1/4-level norm: a channel LayerNorm (eps 1e-6) or
    BatchNorm2d (the reference uses the former for optical input, the latter for DSM).
    787,712 parameters for ``channels=256`` (either norm).
    """

    def __init__(self, channels: int = 256, quarter_norm: QuarterNorm = "layernorm") -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if quarter_norm not in QUARTER_NORMS:
            raise ValueError(f"quarter_norm must be one of {QUARTER_NORMS}, got {quarter_norm!r}")
        self.channels = channels
        self.quarter_norm = quarter_norm
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
            _make_norm(quarter_norm, channels),
            nn.GELU(),
            nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2),
        )
        self.up8 = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.down32 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Turn one (B, C, h, w) map at 1/16 into [1/4, 1/8, 1/16, 1/32] maps.

        Returns shapes [(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w), (B, C, h//2, w//2)]; the 1/16 map is
        the input tensor itself.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected a (B, {self.channels}, h, w) map, got shape {tuple(x.shape)}")
        return [self.up4(x), self.up8(x), x, self.down32(x)]


class SqueezeExcitation(nn.Module):
    """Channel gating: ``t * sigmoid(conv1x1(ReLU(conv1x1(GAP(t)))))``, both 1x1 convs with bias.

    Shapes: (B, C, H, W) -> (B, C, H, W). 8,464 parameters for C = 256 and 16 reduction channels.
    """

    def __init__(self, channels: int = 256, reduction_channels: int = 16) -> None:
        super().__init__()
        if channels < 1 or reduction_channels < 1:
            raise ValueError(
                f"channels and reduction_channels must be positive, got {channels!r} and {reduction_channels!r}"
            )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduction_channels, kernel_size=1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduction_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """Gate (B, C, H, W) channel-wise; returns (B, C, H, W)."""
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class SEFusion(nn.Module):
    """Fuse M same-shaped maps as ``sum_m SE_m(x_m)``, one SqueezeExcitation per modality.

    Shapes: M maps (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, num_modalities: int, channels: int = 256, reduction_channels: int = 16) -> None:
        super().__init__()
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be at least 1, got {num_modalities!r}")
        self.branches = nn.ModuleList(SqueezeExcitation(channels, reduction_channels) for _ in range(num_modalities))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Sum the SE-gated maps; ``features`` holds M maps (B, C, H, W), returns (B, C, H, W)."""
        if len(features) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} maps (one per modality), got {len(features)}")
        out = self.branches[0](features[0])
        for branch, feature in zip(self.branches[1:], features[1:]):
            out = out + branch(feature)
        return out


class DeepFusionModule(nn.Module):
    """MFNet's DFM: a SimpleFeaturePyramid per modality (no sharing), then SE-Fusion at each of 4 levels.

    Args:
        num_modalities: M, the number of input maps.
        channels: width of the neck maps and of every pyramid level (256 for SAM).
        quarter_norms: the 1/4-level norm of each modality's pyramid, in modality order
            (``"layernorm"`` or ``"batchnorm"``); the reference option for M = 2 is
            ``("layernorm", "batchnorm")`` (optical, DSM).
        reduction_channels: SE bottleneck width.

    Parameters (C = 256): 787,712·M for the pyramids plus 4·8,464·M for SE-Fusion, 1,643,136 for M = 2.
    """

    def __init__(
        self,
        num_modalities: int,
        channels: int = 256,
        *,
        quarter_norms: Sequence[str],
        reduction_channels: int = 16,
        pyramid: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(num_modalities, int) or num_modalities < 1:
            raise ValueError(f"num_modalities must be a positive integer, got {num_modalities!r}")
        if isinstance(quarter_norms, str) or len(quarter_norms) != num_modalities:
            raise ValueError(f"quarter_norms must give one norm per modality ({num_modalities}), got {quarter_norms!r}")
        for index, kind in enumerate(quarter_norms):
            if kind not in QUARTER_NORMS:
                raise ValueError(f"quarter_norms[{index}] must be one of {QUARTER_NORMS}, got {kind!r}")
        self.num_modalities = num_modalities
        self.channels = channels
        self.quarter_norms: tuple[str, ...] = tuple(quarter_norms)
        # A hierarchical encoder (Hiera) hands its own four levels: no pyramid to build.
        self.pyramids = (
            nn.ModuleList(
                SimpleFeaturePyramid(channels, kind)  # type: ignore[arg-type]  # validated above
                for kind in self.quarter_norms
            )
            if pyramid
            else None
        )
        self.fusions = nn.ModuleList(SEFusion(num_modalities, channels, reduction_channels) for _ in range(NUM_LEVELS))

    def forward(self, features: Sequence[Tensor] | Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """Fuse M neck maps, each (B, C, h, w), into [1/4, 1/8, 1/16, 1/32] maps.

        Without pyramids (``pyramid=False``) each modality brings its four levels itself: M lists of
        [(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w), (B, C, h//2, w//2)].

        Returns [(B, C, 4h, 4w), (B, C, 2h, 2w), (B, C, h, w), (B, C, h//2, w//2)].
        """
        if self.pyramids is None:
            levels = [list(f) for f in features]
            if len(levels) != self.num_modalities or any(len(f) != NUM_LEVELS for f in levels):
                raise ValueError(f"expected {self.num_modalities} lists of {NUM_LEVELS} level maps")
            return [fusion([f[level] for f in levels]) for level, fusion in enumerate(self.fusions)]
        if isinstance(features, Tensor) or len(features) != self.num_modalities:
            got = "a single tensor" if isinstance(features, Tensor) else f"{len(features)} maps"
            raise ValueError(f"expected {self.num_modalities} maps (one per modality), got {got}")
        maps: list[Tensor] = list(features)  # type: ignore[arg-type]
        shapes = {tuple(f.shape) for f in maps}
        if len(shapes) != 1:
            raise ValueError(f"all modality maps must have the same shape, got {[tuple(f.shape) for f in maps]}")
        pyramids = [pyramid(feature) for pyramid, feature in zip(self.pyramids, maps)]
        return [fusion([levels[level] for levels in pyramids]) for level, fusion in enumerate(self.fusions)]
