"""Padding-free window attention: its cut-and-paste autograd functions and the whole block against SAM's own."""

from __future__ import annotations

import pytest
import torch
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionAttention, SamVisionLayer

from mfpeft.models.sam.window_attention import (
    _MergeWindows,
    _PartitionWindows,
    padding_free_window_attention,
    window_groups,
)


def attention(window: int, seed: int = 0) -> SamVisionAttention:
    """A float64 SAM attention (3 heads of 4) whose every weight, bias and rel-pos table is random and trainable."""
    config = SamVisionConfig(hidden_size=12, num_attention_heads=3, image_size=64, patch_size=4, use_rel_pos=True)
    torch.manual_seed(seed)
    attn = SamVisionAttention(config, window_size=window).double()
    with torch.no_grad():
        for param in attn.parameters():
            param.normal_(0, 0.3)
    return attn


def stock_window_attention(attn: SamVisionAttention, x: torch.Tensor, window: int) -> torch.Tensor:
    """SAM's own path: zero-pad, partition, attend every padded window, unpartition, crop."""
    partition = SamVisionLayer.window_partition
    windows, padding_shape = partition(None, x, window)  # type: ignore[arg-type]
    out = attn(hidden_states=windows)[0]
    return SamVisionLayer.window_unpartition(None, out, window, padding_shape, x.shape[1:3])  # type: ignore[arg-type]


@pytest.mark.parametrize(("height", "width", "window"), [(10, 10, 4), (8, 8, 4), (7, 9, 4), (3, 5, 4)])
def test_window_groups_tile_the_grid(height: int, width: int, window: int) -> None:
    covered = torch.zeros(height, width, dtype=torch.int64)
    for group in window_groups(height, width, window):
        covered[group.rows[0] : group.rows[1], group.cols[0] : group.cols[1]] += 1
        assert group.rows[1] - group.rows[0] == group.n_rows * group.q_rows
        assert group.cols[1] - group.cols[0] == group.n_cols * group.q_cols
    assert torch.equal(covered, torch.ones_like(covered))


@pytest.mark.parametrize(("height", "width"), [(10, 10), (8, 8), (7, 9)])
def test_block_equals_sams_padded_path_with_all_gradients(height: int, width: int) -> None:
    # Every parameter trains (qkv bias too: the padded tokens' k/v get their gradient back through the fill).
    attn, window = attention(4), 4
    x = torch.randn(2, height, width, 12, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, height, width, 12, dtype=torch.float64)
    results = []
    for run in (stock_window_attention, lambda a, t, w: padding_free_window_attention(a, t, w, use_sdpa=False)):
        attn.zero_grad(set_to_none=True)
        x.grad = None
        out = run(attn, x, window)
        (out * weights).sum().backward()
        results.append((out.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in attn.named_parameters()}))
    (ref, ref_x, ref_p), (got, got_x, got_p) = results
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_x, ref_x, rtol=1e-12, atol=1e-12)
    assert ref_p.keys() == got_p.keys() and "qkv.bias" in ref_p
    for name in ref_p:
        torch.testing.assert_close(got_p[name], ref_p[name], rtol=1e-11, atol=1e-12, msg=name)


def test_sdpa_and_eager_agree() -> None:
    attn = attention(4)
    x = torch.randn(2, 7, 9, 12, dtype=torch.float64)
    eager = padding_free_window_attention(attn, x, 4, use_sdpa=False)
    sdpa = padding_free_window_attention(attn, x, 4, use_sdpa=True)
    # The eager softmax runs in float32, as SAM's own does; sdpa keeps float64.
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-6)


def test_partition_and_merge_pass_gradcheck() -> None:
    groups, window, heads = window_groups(5, 6, 4), 4, 2
    qkv = torch.randn(2, 5, 6, 3 * 2 * 3, dtype=torch.float64, requires_grad=True)
    fill = torch.randn(2, 2 * 2 * 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _PartitionWindows.apply(a, b, groups, window, heads), (qkv, fill))
    parts = [p.detach().requires_grad_() for p in _PartitionWindows.apply(qkv, fill, groups, window, heads)[0::3]]
    merge = lambda *outs: _MergeWindows.apply((2, 5, 6, 6), groups, heads, *outs)  # noqa: E731
    assert torch.autograd.gradcheck(merge, tuple(parts))


def test_padded_keys_hold_the_fill() -> None:
    groups, window, heads = window_groups(5, 6, 4), 4, 1
    qkv = torch.zeros(1, 5, 6, 3, dtype=torch.float64)
    fill = torch.tensor([[7.0, 9.0]], dtype=torch.float64)
    parts = _PartitionWindows.apply(qkv, fill, groups, window, heads)
    corner_key, corner_value = parts[-2].view(window, window), parts[-1].view(window, window)
    real_rows, real_cols = groups[-1].q_rows, groups[-1].q_cols  # 1 x 2 real tokens in the corner window
    assert (corner_key[:real_rows, :real_cols] == 0).all() and (corner_value[:real_rows, :real_cols] == 0).all()
    assert (corner_key[real_rows:] == 7).all() and (corner_key[:, real_cols:] == 7).all()
    assert (corner_value[real_rows:] == 9).all() and (corner_value[:, real_cols:] == 9).all()
