"""Tests for the UNetFormer decoder (spec section 3): exact counts, window attention, shapes, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mfpeft.models.decoder import (
    FeatureRefinementHead,
    GlobalLocalAttention,
    TransformerBlock,
    UNetFormerDecoder,
    WeightedFusionUpsample,
    pad_bottom_right,
    relative_position_index,
)
from mfpeft.models.fusion import DeepFusionModule


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pyramid_maps(batch: int = 2, side: int = 256, channels: int = 256) -> list[Tensor]:
    """Random [res1..res4] at 1/4, 1/8, 1/16, 1/32 of a ``side`` x ``side`` input."""
    return [torch.randn(batch, channels, side // s, side // s) for s in (4, 8, 16, 32)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_decoder_parameter_counts_per_part() -> None:
    decoder = UNetFormerDecoder(256, 64, 8, 0.1, num_labels=6)
    parts = {name: count(module) for name, module in decoder.named_children()}
    assert parts == {
        "pre_conv": 16_512,
        "b4": 96_968,
        "p3": 53_378,
        "b3": 96_968,
        "p2": 53_378,
        "b2": 96_968,
        "p1": 63_554,
        "head": 37_376,
    }
    for block in (decoder.b4, decoder.b3, decoder.b2):
        assert count(block.attn) == 63_624
        assert block.attn.relative_position_bias_table.shape == (15 * 15, 8)
    assert count(decoder) == 515_102


def test_head_total_for_reference_options() -> None:
    dfm = DeepFusionModule(2, quarter_norms=("layernorm", "batchnorm"))
    decoder = UNetFormerDecoder(num_labels=6)
    assert count(dfm) + count(decoder) == 2_158_238


def test_decoder_without_skips_parameter_counts() -> None:
    decoder = UNetFormerDecoder(num_labels=6, use_skips=False)
    parts = {name: count(module) for name, module in decoder.named_children()}
    # p3/p2/p1 lose the 1x1 skip conv (16,384) and the two fusion weights each.
    assert parts == {
        "pre_conv": 16_512,
        "b4": 96_968,
        "p3": 36_992,
        "b3": 96_968,
        "p2": 36_992,
        "b2": 96_968,
        "p1": 47_168,
        "head": 37_376,
    }
    assert count(decoder) == 465_944
    for block in (decoder.p3, decoder.p2, decoder.p1):
        assert block.skip_conv is None and block.weights is None


def test_decoder_output_shape_with_skips() -> None:
    decoder = UNetFormerDecoder(num_labels=6)
    logits = decoder(pyramid_maps(), (256, 256))
    assert logits.shape == (2, 6, 256, 256)
    assert torch.isfinite(logits).all()


def test_decoder_output_shape_without_skips() -> None:
    decoder = UNetFormerDecoder(num_labels=5, use_skips=False)
    neck = torch.randn(2, 256, 16, 16)
    assert decoder(neck, (256, 256)).shape == (2, 5, 256, 256)
    assert decoder([neck], (200, 300)).shape == (2, 5, 200, 300)


@pytest.mark.parametrize("side", [128, 240, 64])
def test_decoder_handles_small_and_odd_maps(side: int) -> None:
    """128 input gives a 4x4 map at 1/32 (smaller than a window); 240 gives 15/7, not multiples of 8."""
    decoder = UNetFormerDecoder(num_labels=3)
    maps = [torch.randn(2, 256, side // 4, side // 4), torch.randn(2, 256, side // 8, side // 8)]
    maps += [torch.randn(2, 256, side // 16, side // 16), torch.randn(2, 256, side // 32, side // 32)]
    logits = decoder(maps, (side, side))
    assert logits.shape == (2, 3, side, side)
    assert torch.isfinite(logits).all()


def test_decoder_input_errors() -> None:
    decoder = UNetFormerDecoder()
    with pytest.raises(ValueError, match="use_skips=True"):
        decoder(pyramid_maps()[:3], (256, 256))
    with pytest.raises(ValueError, match=r"features\[2\]"):
        maps = pyramid_maps()
        maps[2] = torch.randn(2, 128, 16, 16)
        decoder(maps, (256, 256))
    with pytest.raises(ValueError, match="output_size"):
        decoder(pyramid_maps(), (256,))  # type: ignore[arg-type]
    no_skip = UNetFormerDecoder(use_skips=False)
    with pytest.raises(ValueError, match="use_skips=False"):
        no_skip(pyramid_maps(), (256, 256))
    with pytest.raises(ValueError, match="window_size"):
        UNetFormerDecoder(window_size=7)
    with pytest.raises(ValueError, match="num_labels"):
        UNetFormerDecoder(num_labels=0)


def test_pad_bottom_right_reflects_and_falls_back_on_tiny_maps() -> None:
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    torch.testing.assert_close(pad_bottom_right(x, 3, 2), F.pad(x, (0, 2, 0, 3), mode="reflect"))
    tiny = torch.randn(1, 2, 4, 1)
    padded = pad_bottom_right(tiny, 4, 7)
    assert padded.shape == (1, 2, 8, 8)
    # Width 1 cannot reflect: replicate. Height 4 padded by 4 cannot reflect either: replicate the last row.
    torch.testing.assert_close(padded[..., :4, :], tiny.expand(1, 2, 4, 8))
    torch.testing.assert_close(padded[..., 4:, :], tiny[..., 3:, :].expand(1, 2, 4, 8))
    assert pad_bottom_right(x, 0, 0) is x


def test_relative_position_index_is_swin_style() -> None:
    ws = 4
    index = relative_position_index(ws)
    n = ws * ws
    assert index.shape == (n, n)
    assert torch.equal(index.diagonal(), torch.full((n,), (ws - 1) * (2 * ws - 1) + ws - 1))
    assert set(index.flatten().tolist()) == set(range((2 * ws - 1) ** 2))
    # Token t sits at (t // ws, t % ws): the index depends only on the offset between tokens.
    for i in range(n):
        for j in range(n):
            dy = i // ws - j // ws
            dx = i % ws - j % ws
            assert index[i, j] == (dy + ws - 1) * (2 * ws - 1) + dx + ws - 1


def naive_window_attention(gla: GlobalLocalAttention, x: Tensor) -> Tensor:
    """Loop-over-windows reference for :meth:`GlobalLocalAttention.window_attention`."""
    b, c, h, w = x.shape
    ws, heads, d = gla.window_size, gla.num_heads, gla.head_dim
    padded = pad_bottom_right(x, (-h) % ws, (-w) % ws)
    qkv = gla.qkv(padded)
    q_all, k_all, v_all = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    out = torch.zeros_like(padded)
    table = gla.relative_position_bias_table
    bias = torch.empty(heads, ws * ws, ws * ws)
    for i in range(ws * ws):
        for j in range(ws * ws):
            dy, dx = i // ws - j // ws, i % ws - j % ws
            bias[:, i, j] = table[(dy + ws - 1) * (2 * ws - 1) + dx + ws - 1]
    for r in range(0, padded.shape[2], ws):
        for s in range(0, padded.shape[3], ws):

            def tokens(t: Tensor, r: int = r, s: int = s) -> Tensor:
                win = t[:, :, r : r + ws, s : s + ws].reshape(b, heads, d, ws * ws)
                return win.transpose(2, 3)  # (b, heads, N, d)

            q, k, v = tokens(q_all), tokens(k_all), tokens(v_all)
            attn = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5 + bias, dim=-1)
            out[:, :, r : r + ws, s : s + ws] = (attn @ v).transpose(2, 3).reshape(b, c, ws, ws)
    return out[:, :, :h, :w]


@pytest.mark.parametrize(("h", "w"), [(16, 16), (11, 13), (4, 4)])
def test_window_attention_matches_naive_loop(h: int, w: int) -> None:
    gla = GlobalLocalAttention(dim=16, num_heads=4, window_size=4 if h == 4 else 8)
    with torch.no_grad():
        gla.relative_position_bias_table.normal_(0.0, 1.0)  # large enough that a wrong index shows
        x = torch.randn(2, 16, h, w)
        torch.testing.assert_close(gla.window_attention(x), naive_window_attention(gla, x), rtol=1e-4, atol=1e-5)


def test_window_attention_stays_inside_its_window() -> None:
    gla = GlobalLocalAttention(dim=16, num_heads=2, window_size=8).eval()
    x = torch.randn(1, 16, 16, 24)
    y = x.clone()
    y[0, :, 9, 19] += 3.0  # inside window (row 1, col 2)
    with torch.no_grad():
        changed = (gla.window_attention(x) - gla.window_attention(y)).abs().amax(dim=(0, 1)) > 1e-6
    expected = torch.zeros(16, 24, dtype=torch.bool)
    expected[8:16, 16:24] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (4, 4), (5, 7), (8, 8), (9, 17)])
def test_global_local_attention_keeps_any_size(h: int, w: int) -> None:
    gla = GlobalLocalAttention(dim=64, num_heads=8, window_size=8)
    x = torch.randn(2, 64, h, w)
    out = gla(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_weighted_fusion_blends_with_normalised_weights() -> None:
    fusion = WeightedFusionUpsample(skip_channels=8, decode_channels=4)
    assert fusion.weights is not None and fusion.skip_conv is not None
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([3.0, -1.0]))  # relu -> (3, 0): only the skip contributes
        x, skip = torch.randn(2, 4, 3, 3), torch.randn(2, 8, 6, 6)
        torch.testing.assert_close(fusion.fuse(x, skip), fusion.skip_conv(skip), rtol=1e-6, atol=1e-6)
        fusion.reset_parameters()
        up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        torch.testing.assert_close(fusion.fuse(x, skip), 0.5 * fusion.skip_conv(skip) + 0.5 * up)
    with pytest.raises(ValueError, match="no skip"):
        fusion(x)


def test_refinement_head_without_skip_upsamples_twice() -> None:
    frh = FeatureRefinementHead(256, 64, use_skip=False)
    assert frh(torch.randn(2, 64, 5, 6)).shape == (2, 64, 10, 12)
    with pytest.raises(ValueError, match="use_skip=False"):
        frh(torch.randn(2, 64, 5, 6), torch.randn(2, 256, 10, 12))


def test_block_is_residual() -> None:
    """With the attention's and the MLP's last layers zeroed, the block must be the identity."""
    block = TransformerBlock(64, 8, 8).eval()
    proj_out, mlp_out = block.attn.proj[2], block.mlp[2]
    assert isinstance(proj_out, nn.Conv2d) and isinstance(mlp_out, nn.Conv2d)
    with torch.no_grad():
        proj_out.weight.zero_()
        mlp_out.weight.zero_()
        assert mlp_out.bias is not None
        mlp_out.bias.zero_()
        x = torch.randn(2, 64, 8, 8)
        torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("use_skips", [True, False])
def test_decoder_backward_gives_finite_grads_everywhere(use_skips: bool) -> None:
    decoder = UNetFormerDecoder(num_labels=6, use_skips=use_skips)
    maps = pyramid_maps(side=128) if use_skips else [torch.randn(2, 256, 8, 8)]
    for t in maps:
        t.requires_grad_(True)
    logits = decoder(maps, (128, 128))
    F.cross_entropy(logits, torch.randint(0, 6, (2, 128, 128))).backward()
    for name, param in decoder.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in maps)


def test_decoder_eval_is_deterministic_and_train_uses_dropout() -> None:
    decoder = UNetFormerDecoder(num_labels=6)
    maps = pyramid_maps(side=128)
    decoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(decoder(maps, (128, 128)), decoder(maps, (128, 128)))
    assert isinstance(decoder.head[1], nn.Dropout2d) and decoder.head[1].p == 0.1


@pytest.mark.parametrize("use_skips", [True, False])
def test_full_head_under_bf16_autocast(use_skips: bool) -> None:
    decoder = UNetFormerDecoder(num_labels=6, use_skips=use_skips)
    necks = [torch.randn(2, 256, 8, 8) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if use_skips:
            dfm = DeepFusionModule(2, quarter_norms=("layernorm", "batchnorm"))
            logits = decoder(dfm(necks), (128, 128))
        else:
            logits = decoder(necks[0] + necks[1], (128, 128))
        loss = F.cross_entropy(logits.float(), torch.randint(0, 6, (2, 128, 128)))
    loss.backward()
    assert logits.shape == (2, 6, 128, 128)
    assert torch.isfinite(logits.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in decoder.parameters())
