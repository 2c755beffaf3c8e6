"""SAM's windowed attention without the window padding's wasted work, and without its memory traffic.

At 256 x 256 input a window layer pads the 16 x 16 token grid to 28 x 28 for window 14: the stock path runs
``attn.qkv`` and ``attn.proj`` on 784 tokens per image of which 256 exist, and attention on 784 queries. Here
``qkv`` and ``proj`` run on the real tokens only; the padded tokens get ``qkv`` of a zero token, which is exactly
what the stock path computes there (it pads the layer-normed input with zeros, then applies ``qkv``); attention
runs per window for the real queries only (the padded keys stay, unmasked, as in SAM).

The windows fall into at most four *groups* with the same number of real rows and columns per window (full
windows, the partly padded last column, last row, corner). Cutting a group out of the token grid with plain
tensor indexing made autograd zero-fill a full-size gradient per cut and add them up (2 of the 4 s of a ViT-B
CPU step); here two autograd functions do the cutting and pasting: `_PartitionWindows` copies each group's
queries, keys and values into contiguous (windows, heads, tokens, head_dim) tensors in one pass, and writes the
gradients straight back into one buffer (the groups tile the grid, so nothing needs zeroing); `_MergeWindows`
does the reverse for the attention output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from transformers.models.sam.modeling_sam import SamVisionAttention

__all__ = ["padding_free_window_attention"]


@dataclass(frozen=True)
class WindowGroup:
    """Windows that share their count of real rows and columns.

    Attributes:
        rows, cols: (start, end) of the group's real tokens in the unpadded grid.
        n_rows, n_cols: windows along each axis.
        q_rows, q_cols: real rows / columns per window (the leading ones of each window).
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    n_rows: int
    n_cols: int
    q_rows: int
    q_cols: int

    @property
    def num_windows(self) -> int:
        return self.n_rows * self.n_cols


def _axis_groups(size: int, window: int) -> list[tuple[tuple[int, int], int, int]]:
    """One axis: [((start, end), windows, real per window)] for the full windows and the partly padded last one."""
    full, rest = divmod(size, window)
    groups = []
    if full:
        groups.append(((0, full * window), full, window))
    if rest:
        groups.append(((full * window, size), 1, rest))
    return groups


def window_groups(height: int, width: int, window: int) -> list[WindowGroup]:
    """The groups of a (height, width) grid in windows of `window`, row groups outer."""
    return [
        WindowGroup(rows, cols, n_rows, n_cols, q_rows, q_cols)
        for rows, n_rows, q_rows in _axis_groups(height, window)
        for cols, n_cols, q_cols in _axis_groups(width, window)
    ]


def _real_tokens(grid: torch.Tensor, group: WindowGroup, parts: int, heads: int) -> torch.Tensor:
    """The group's real tokens of `grid` (B, H, W, parts·heads·head_dim) as a view
    (parts, B, n_rows, n_cols, heads, q_rows, q_cols, head_dim)."""
    batch = grid.shape[0]
    block = grid[:, group.rows[0] : group.rows[1], group.cols[0] : group.cols[1]]
    block = block.view(batch, group.n_rows, group.q_rows, group.n_cols, group.q_cols, parts, heads, -1)
    return block.permute(5, 0, 1, 3, 6, 2, 4, 7)


class _PartitionWindows(torch.autograd.Function):
    """qkv (B, H, W, 3·D) and the padded tokens' k/v (B, 2·D) -> per group q (N, heads, q_rows·q_cols, head_dim),
    k and v (N, heads, window², head_dim), N = B·windows of the group; outputs are flat [q0, k0, v0, q1, ...]."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, qkv: torch.Tensor, fill: torch.Tensor, groups: list[WindowGroup], window: int, heads: int
    ) -> tuple[torch.Tensor, ...]:
        batch, dim = qkv.shape[0], qkv.shape[-1] // 3
        ctx.groups, ctx.window, ctx.heads, ctx.shape = groups, window, heads, qkv.shape
        # (B, 2·D) -> (2, B, 1, 1, heads, 1, 1, head_dim), broadcast over the padded positions of every window
        padded = fill.to(qkv.dtype).view(batch, 2, heads, -1).transpose(0, 1)[:, :, None, None, :, None, None, :]
        outputs: list[torch.Tensor] = []
        for group in groups:
            real = _real_tokens(qkv, group, 3, heads)
            num = batch * group.num_windows
            # Fresh contiguous copies (never views of qkv, which a custom function must not return).
            query = qkv.new_empty(real.shape[1:])
            query.copy_(real[0])
            outputs.append(query.view(num, heads, group.q_rows * group.q_cols, -1))
            kv = qkv.new_empty(2, batch, group.n_rows, group.n_cols, heads, window, window, dim // heads)
            kv[..., : group.q_rows, : group.q_cols, :] = real[1:]
            kv[..., group.q_rows :, :, :] = padded
            kv[..., : group.q_rows, group.q_cols :, :] = padded
            outputs.extend(kv.view(2, num, heads, window * window, -1).unbind(0))
        return tuple(outputs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        batch, window, heads = ctx.shape[0], ctx.window, ctx.heads
        grad_qkv = grads[0].new_empty(ctx.shape)  # every element is written below: the groups tile the grid
        grad_fill = grads[0].new_zeros(2, batch, heads, ctx.shape[-1] // (3 * heads))
        for group, (g_q, g_k, g_v) in zip(ctx.groups, zip(*[iter(grads)] * 3, strict=True), strict=True):
            target = _real_tokens(grad_qkv, group, 3, heads)
            shape = (batch, group.n_rows, group.n_cols, heads)
            target[0].copy_(g_q.reshape(*shape, group.q_rows, group.q_cols, -1))
            for part, g in ((1, g_k), (2, g_v)):
                g = g.reshape(*shape, window, window, -1)
                target[part].copy_(g[..., : group.q_rows, : group.q_cols, :])
                grad_fill[part - 1] += g[..., group.q_rows :, :, :].sum(dim=(1, 2, 4, 5))
                grad_fill[part - 1] += g[..., : group.q_rows, group.q_cols :, :].sum(dim=(1, 2, 4, 5))
        return grad_qkv, grad_fill.permute(1, 0, 2, 3).reshape(batch, -1), None, None, None


class _MergeWindows(torch.autograd.Function):
    """Per group attention outputs (N, heads, q_rows·q_cols, head_dim) -> the grid (B, H, W, heads·head_dim)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, shape: tuple[int, ...], groups: list[WindowGroup], heads: int, *outputs: torch.Tensor
    ) -> torch.Tensor:
        ctx.groups, ctx.heads = groups, heads
        grid = outputs[0].new_empty(shape)
        for group, out in zip(groups, outputs, strict=True):
            target = _real_tokens(grid, group, 1, heads)[0]
            target.copy_(out.reshape(shape[0], group.n_rows, group.n_cols, heads, group.q_rows, group.q_cols, -1))
        return grid

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grads = []
        for group in ctx.groups:
            part = _real_tokens(grad, group, 1, ctx.heads)[0]
            grads.append(part.reshape(grad.shape[0] * group.num_windows, ctx.heads, group.q_rows * group.q_cols, -1))
        return (None, None, None, *grads)


def _attend(
    attn: SamVisionAttention,
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    group: WindowGroup,
    rel_pos: tuple[torch.Tensor, torch.Tensor] | None,
    use_sdpa: bool,
) -> torch.Tensor:
    """Attention of one group's real queries (N, heads, q_rows·q_cols, head_dim) over its windows' keys and
    values (N, heads, window², head_dim); `rel_pos` the (window, window, head_dim) tables for height and width."""
    query, key, value = qkv
    num, heads, _, head_dim = query.shape
    bias = None
    if rel_pos is not None:
        grid = query.view(num * heads, group.q_rows, group.q_cols, head_dim)
        rel_h = torch.einsum("bhwc,hkc->bhwk", grid, rel_pos[0][: group.q_rows])
        rel_w = torch.einsum("bhwc,wkc->bhwk", grid, rel_pos[1][: group.q_cols])
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(num, heads, query.shape[2], -1)
    if use_sdpa:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias)
    weights = (query * attn.scale) @ key.transpose(-2, -1)
    if bias is not None:
        weights = weights + bias
    weights = torch.softmax(weights, dtype=torch.float32, dim=-1).to(query.dtype)
    return weights @ value


def padding_free_window_attention(
    attn: SamVisionAttention, hidden_states: torch.Tensor, window: int, use_sdpa: bool
) -> torch.Tensor:
    """SAM's windowed attention block (qkv, attention, proj) without computing anything for padded tokens.

    Args:
        attn: the layer's attention module (its ``qkv`` / ``proj`` may be tuner wrappers).
        hidden_states: (B, H, W, D) layer-normed tokens, B = M·batch modality-major.
        window: the window size (> 0).
        use_sdpa: attention by `scaled_dot_product_attention` instead of an explicit softmax.

    Returns:
        (B, H, W, D), equal to the stock pad -> partition -> attention -> unpartition -> crop result.
    """
    batch, height, width, dim = hidden_states.shape
    heads = attn.num_attention_heads
    qkv = attn.qkv(hidden_states)
    # qkv of a zero token is what the stock path computes for its zero-padded tokens (the bias plus whatever a
    # tuner adds for a zero input); one per batch entry keeps the modality-major split of tuner wrappers valid.
    fill = attn.qkv(hidden_states.new_zeros(batch, 1, 1, dim)).reshape(batch, 3 * dim)[:, dim:]
    groups = window_groups(height, width, window)
    parts = _PartitionWindows.apply(qkv.contiguous(), fill, groups, window, heads)
    rel_pos = None
    if attn.use_rel_pos:
        rel_pos = (
            attn.get_rel_pos(window, window, attn.rel_pos_h),
            attn.get_rel_pos(window, window, attn.rel_pos_w),
        )
    outputs = [_attend(attn, parts[3 * i : 3 * i + 3], group, rel_pos, use_sdpa) for i, group in enumerate(groups)]
    merged = _MergeWindows.apply((batch, height, width, dim), groups, heads, *outputs)
    return cast(torch.Tensor, attn.proj(merged))
