"""The UNetFormer decoder (Wang et al., 2022) as MFNet uses it, written from ``MFNET_SPEC.md`` section 3.

Data flow with skips (C_e = encoder channels, C = decode channels; maps at 1/4..1/32 of the input):

    res4 (B, C_e, H/32) -> pre_conv -> b4 -> p3(+res3) -> b3 -> p2(+res2) -> b2 -> p1(+res1) -> head
    -> (B, num_labels, H/4, W/4) -> bilinear resize -> (B, num_labels, H, W)

Without skips (Table V ablation) a single 1/16 map goes through the same chain; p3, p2 and p1 only upsample
x2 and refine, so the head works at 1/2 before the resize.

Parameter counts (C_e = 256, C = 64, ws = 8, 6 classes): pre_conv 16,512; b4/b3/b2 96,968 each (attention
63,624); p3/p2 53,378 each; p1 63,554; head 37,376; 515,102 in all. Without skips p3/p2 are 36,992 each,
p1 47,168, and the decoder 465,944.

All convolutions are bias-free unless noted; BN is BatchNorm2d; ReLU6 is the activation throughout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_bottom_right(x: Tensor, bottom: int, right: int) -> Tensor:
    """Reflect-pad a (B, C, H, W) map by ``bottom`` rows and ``right`` columns -> (B, C, H+bottom, W+right).

    Reflect padding needs the pad to be smaller than the side; on maps too small for that (e.g. a 4x4 map
    padded to an 8x8 window, or a single row) that side falls back to replicate padding, which is what
    reflection degenerates to on a one-pixel side and keeps values in the map's own range.
    """
    if right > 0:
        mode = "reflect" if right < x.shape[-1] else "replicate"
        x = F.pad(x, (0, right, 0, 0), mode=mode)
    if bottom > 0:
        mode = "reflect" if bottom < x.shape[-2] else "replicate"
        x = F.pad(x, (0, 0, 0, bottom), mode=mode)
    return x


class ConvBN(nn.Sequential):
    """k x k conv (no bias, size-keeping padding) -> BatchNorm2d. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias) -> BatchNorm2d -> ReLU6. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class SeparableConvBN(nn.Sequential):
    """Depthwise k x k conv (padding (k-1)//2) -> BatchNorm2d -> pointwise 1x1 conv, no biases.

    (B, C_in, H, W) -> (B, C_out, H', W') with H' = H for odd k and H - 1 for even k.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=(kernel_size - 1) // 2,
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        )


def relative_position_index(window_size: int, device: torch.device | None = None) -> Tensor:
    """Swin-style index (N, N), N = ws², into a ((2ws-1)², heads) table, tokens in row-major order.

    Entry [i, j] encodes the offset (dy, dx) of token i from token j as (dy + ws-1)·(2ws-1) + (dx + ws-1).
    """
    coords = torch.arange(window_size, device=device)
    grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij")).flatten(1)  # (2, N)
    offsets = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # (N, N, 2)
    return offsets[..., 0] * (2 * window_size - 1) + offsets[..., 1]


class GlobalLocalAttention(nn.Module):
    """UNetFormer's global-local attention: window self-attention plus a convolutional local branch.

    local = ConvBN1x1(x) + ConvBN3x3(x); global = multi-head attention inside ws x ws windows with a learned
    relative position bias, followed by axial average pooling; ``proj(pad(global + local))``.
    Shapes: (B, C, H, W) -> (B, C, H, W), any H, W >= 1. 63,624 parameters for C = 64, 8 heads, ws = 8.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8, window_size: int = 8) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if window_size < 2 or window_size % 2 != 0:
            # The axial pooling pads by ws/2 - 1 on each side, which only keeps the size for even ws.
            raise ValueError(f"window_size must be an even integer >= 2, got {window_size!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = window_size

        self.local1 = ConvBN(dim, dim, kernel_size=3)
        self.local2 = ConvBN(dim, dim, kernel_size=1)
        self.qkv = nn.Conv2d(dim, 3 * dim, kernel_size=1, bias=False)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window_size - 1) ** 2, num_heads))
        self.pool_vertical = nn.AvgPool2d((window_size, 1), stride=1, padding=(window_size // 2 - 1, 0))
        self.pool_horizontal = nn.AvgPool2d((1, window_size), stride=1, padding=(0, window_size // 2 - 1))
        self.proj = SeparableConvBN(dim, dim, kernel_size=window_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the relative position bias table from a truncated normal, std 0.02 (Swin's init)."""
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> Tensor:
        """The bias added to the attention logits, (heads, N, N) with N = ws²."""
        n = self.window_size**2
        # The index is rebuilt per call rather than kept in a buffer: it is cheap, and a buffer would need
        # re-filling whenever a framework materialises the module from the meta device.
        index = relative_position_index(self.window_size, self.relative_position_bias_table.device)
        return self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def window_attention(self, x: Tensor) -> Tensor:
        """Self-attention inside non-overlapping ws x ws windows. (B, C, H, W) -> (B, C, H, W).

        The map is reflect-padded at bottom/right to a multiple of ws first and cropped back afterwards.
        """
        batch, channels, height, width = x.shape
        ws = self.window_size
        x = pad_bottom_right(x, (-height) % ws, (-width) % ws)
        rows, cols = x.shape[-2] // ws, x.shape[-1] // ws
        qkv = self.qkv(x)
        # Channels split as (3, heads, head_dim); windows gathered as (B·rows·cols, heads, ws², head_dim).
        qkv = qkv.reshape(batch, 3, self.num_heads, self.head_dim, rows, ws, cols, ws)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, self.num_heads, ws * ws, -1)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias().to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.reshape(batch, rows, cols, self.num_heads, ws, ws, self.head_dim)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, channels, rows * ws, cols * ws)
        return out[:, :, :height, :width]

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        height, width = x.shape[-2:]
        local = self.local2(x) + self.local1(x)
        attn = self.window_attention(x)
        # The one-row/column pad makes the even-length pooling windows come out at exactly H x W.
        out = self.pool_vertical(pad_bottom_right(attn, 1, 0)) + self.pool_horizontal(pad_bottom_right(attn, 0, 1))
        out = out + local
        out = self.proj(pad_bottom_right(out, 1, 1))
        return out[:, :, :height, :width]


class TransformerBlock(nn.Module):
    """Global-local transformer block: ``x = x + GLA(BN(x)); x = x + MLP(BN(x))``.

    MLP = conv1x1 C->4C (bias) -> ReLU6 -> conv1x1 4C->C (bias).
    Shapes: (B, C, H, W) -> (B, C, H, W). 96,968 parameters for C = 64, 8 heads, ws = 8.
    """

    def __init__(self, dim: int = 64, num_heads: int = 8, window_size: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, kernel_size=1, bias=True),
            nn.ReLU6(),
            nn.Conv2d(hidden, dim, kernel_size=1, bias=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightedFusionUpsample(nn.Module):
    """Upsample x2 (bilinear), blend with a projected skip map by learned weights, refine with ConvBNReLU 3x3.

    With a skip: ``w = relu(weights)`` (init (1, 1)), ``x = w0/(w0+w1+eps)·conv1x1(skip) + w1/(w0+w1+eps)·x``.
    Without one (``use_skip=False``) the skip conv and the weights are not created and x is only upsampled.
    Shapes: x (B, C, h, w), skip (B, C_skip, H, W) -> (B, C, H, W); without a skip (B, C, 2h, 2w).
    53,378 parameters for C_skip = 256, C = 64 (36,992 without the skip).
    """

    def __init__(
        self, skip_channels: int = 256, decode_channels: int = 64, use_skip: bool = True, eps: float = 1e-8
    ) -> None:
        super().__init__()
        self.use_skip = use_skip
        self.eps = eps
        self.skip_conv: nn.Conv2d | None = None
        self.weights: nn.Parameter | None = None
        if use_skip:
            self.skip_conv = nn.Conv2d(skip_channels, decode_channels, kernel_size=1, bias=False)
            self.weights = nn.Parameter(torch.ones(2))
        self.refine = ConvBNReLU(decode_channels, decode_channels, kernel_size=3)

    def reset_parameters(self) -> None:
        """Fusion weights back to (1, 1)."""
        if self.weights is not None:
            with torch.no_grad():
                self.weights.fill_(1.0)

    def fuse(self, x: Tensor, skip: Tensor | None) -> Tensor:
        """Upsample and blend without the refinement conv; shapes as in :meth:`forward`."""
        if self.skip_conv is None or self.weights is None:
            if skip is not None:
                raise ValueError("this block was built with use_skip=False but was given a skip map")
            return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is None:
            raise ValueError("this block was built with use_skip=True but was given no skip map")
        # Upsampling to the skip's size equals x2 when the sizes halve exactly, and still lines the maps up
        # when an odd size was floored on the way down (e.g. MaxPool at 1/32).
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return weights[0] * self.skip_conv(skip) + weights[1] * x

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """x (B, C, h, w), skip (B, C_skip, H, W) or None -> (B, C, H, W) (or (B, C, 2h, 2w))."""
        return self.refine(self.fuse(x, skip))


class FeatureRefinementHead(WeightedFusionUpsample):
    """The weighted fusion with res1, then spatial (pa) and channel (ca) attention with a residual shortcut.

    After fusion and ConvBNReLU: ``shortcut = ConvBN1x1(x)``, ``pa = sigmoid(dwconv3x3(x), bias) · x``,
    ``ca = sigmoid(conv1x1 C/16->C (ReLU6 (conv1x1 C->C/16 (GAP x)))) · x``,
    ``x = ReLU6(SeparableConvBN3x3(pa + ca) + shortcut)``.
    Shapes as :class:`WeightedFusionUpsample`. 63,554 parameters for C_skip = 256, C = 64 (47,168 without
    the skip).
    """

    def __init__(
        self, skip_channels: int = 256, decode_channels: int = 64, use_skip: bool = True, eps: float = 1e-8
    ) -> None:
        super().__init__(skip_channels, decode_channels, use_skip, eps)
        reduced = decode_channels // 16
        if reduced < 1:
            raise ValueError(f"decode_channels must be at least 16 for the channel attention, got {decode_channels}")
        self.shortcut = ConvBN(decode_channels, decode_channels, kernel_size=1)
        self.pa = nn.Sequential(
            nn.Conv2d(decode_channels, decode_channels, 3, padding=1, groups=decode_channels, bias=True),
            nn.Sigmoid(),
        )
        self.ca = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(decode_channels, reduced, kernel_size=1, bias=False),
            nn.ReLU6(),
            nn.Conv2d(reduced, decode_channels, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )
        self.proj = SeparableConvBN(decode_channels, decode_channels, kernel_size=3)
        self.act = nn.ReLU6()

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """x (B, C, h, w), skip (B, C_skip, H, W) or None -> (B, C, H, W) (or (B, C, 2h, 2w))."""
        x = self.refine(self.fuse(x, skip))
        shortcut = self.shortcut(x)
        x = self.pa(x) * x + self.ca(x) * x
        return self.act(self.proj(x) + shortcut)


class SegmentationHead(nn.Sequential):
    """ConvBNReLU 3x3 -> Dropout2d -> conv1x1 C->classes (no bias). (B, C, H, W) -> (B, classes, H, W).

    37,376 parameters for C = 64 and 6 classes.
    """

    def __init__(self, decode_channels: int = 64, num_labels: int = 6, dropout: float = 0.1) -> None:
        super().__init__(
            ConvBNReLU(decode_channels, decode_channels, kernel_size=3),
            nn.Dropout2d(p=dropout),
            nn.Conv2d(decode_channels, num_labels, kernel_size=1, bias=False),
        )


class UNetFormerDecoder(nn.Module):
    """UNetFormer decoder: three global-local transformer blocks, weighted-fusion upsampling, refinement head.

    Args:
        encoder_channels: channels of every input map (256 for MFNet's fused pyramid / SAM's neck).
        decode_channels: C, the decoder width (64).
        window_size: ws of the global-local attention (8, even).
        dropout: Dropout2d probability in the segmentation head (0.1).
        num_labels: output classes.
        use_skips: True: decode [res1..res4] at 1/4..1/32; False: decode one 1/16 map, no skip inputs.
        num_heads: attention heads (8).

    515,102 parameters with skips for the defaults (6 classes); 465,944 without skips.
    """

    def __init__(
        self,
        encoder_channels: int = 256,
        decode_channels: int = 64,
        window_size: int = 8,
        dropout: float = 0.1,
        num_labels: int = 6,
        use_skips: bool = True,
        num_heads: int = 8,
    ) -> None:
        super().__init__()
        for name, value in (
            ("encoder_channels", encoder_channels),
            ("decode_channels", decode_channels),
            ("num_labels", num_labels),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.encoder_channels = encoder_channels
        self.decode_channels = decode_channels
        self.num_labels = num_labels
        self.use_skips = use_skips

        self.pre_conv = ConvBN(encoder_channels, decode_channels, kernel_size=1)
        self.b4 = TransformerBlock(decode_channels, num_heads, window_size)
        self.p3 = WeightedFusionUpsample(encoder_channels, decode_channels, use_skips)
        self.b3 = TransformerBlock(decode_channels, num_heads, window_size)
        self.p2 = WeightedFusionUpsample(encoder_channels, decode_channels, use_skips)
        self.b2 = TransformerBlock(decode_channels, num_heads, window_size)
        self.p1 = FeatureRefinementHead(encoder_channels, decode_channels, use_skips)
        self.head = SegmentationHead(decode_channels, num_labels, dropout)

    def _check_inputs(self, features: Tensor | Sequence[Tensor]) -> list[Tensor]:
        maps = [features] if isinstance(features, Tensor) else list(features)
        expected = 4 if self.use_skips else 1
        if len(maps) != expected:
            what = "[res1, res2, res3, res4] at 1/4..1/32" if self.use_skips else "a single 1/16 map"
            raise ValueError(f"use_skips={self.use_skips}: expected {what}, got {len(maps)} map(s)")
        for index, feature in enumerate(maps):
            if feature.dim() != 4 or feature.shape[1] != self.encoder_channels:
                raise ValueError(
                    f"features[{index}] must be (B, {self.encoder_channels}, h, w), got {tuple(feature.shape)}"
                )
        return maps

    def forward(self, features: Tensor | Sequence[Tensor], output_size: tuple[int, int]) -> Tensor:
        """Decode to logits (B, num_labels, H, W) with (H, W) = ``output_size``.

        ``features``: with skips, [res1, res2, res3, res4], each (B, C_e, ·) at 1/4, 1/8, 1/16, 1/32;
        without skips, one (B, C_e, h, w) map (a tensor or a one-element sequence).
        """
        if len(output_size) != 2 or any(not isinstance(s, int) or s < 1 for s in output_size):
            raise ValueError(f"output_size must be two positive integers (H, W), got {output_size!r}")
        maps = self._check_inputs(features)
        if self.use_skips:
            res1, res2, res3, res4 = maps
            x = self.b4(self.pre_conv(res4))
            x = self.b3(self.p3(x, res3))
            x = self.b2(self.p2(x, res2))
            x = self.p1(x, res1)
        else:
            x = self.b4(self.pre_conv(maps[0]))
            x = self.b3(self.p3(x))
            x = self.b2(self.p2(x))
            x = self.p1(x)
        x = self.head(x)
        return F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)
