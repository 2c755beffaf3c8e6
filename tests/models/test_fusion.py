"""Tests for the Deep Fusion Module (spec section 3): parameter counts, shapes, locality, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mfpeft.models.fusion import (
    DeepFusionModule,
    LayerNorm2d,
    SEFusion,
    SimpleFeaturePyramid,
    SqueezeExcitation,
)

REFERENCE_NORMS = ("layernorm", "batchnorm")


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_pyramid_parameter_count(norm: str) -> None:
    pyramid = SimpleFeaturePyramid(256, norm)  # type: ignore[arg-type]
    assert count(pyramid) == 787_712
    assert isinstance(pyramid.up4[1], LayerNorm2d if norm == "layernorm" else nn.BatchNorm2d)


def test_reference_dfm_parameter_counts() -> None:
    dfm = DeepFusionModule(2, 256, quarter_norms=REFERENCE_NORMS)
    assert count(dfm.pyramids) == 1_575_424
    assert count(dfm.fusions) == 67_712
    assert count(SqueezeExcitation(256, 16)) == 8_464
    assert count(dfm) == 1_643_136


@pytest.mark.parametrize(
    "norms",
    [("layernorm",), ("batchnorm",), ("layernorm", "batchnorm"), ("layernorm", "batchnorm", "batchnorm")],
)
def test_dfm_shapes_and_counts_for_m_modalities(norms: tuple[str, ...]) -> None:
    m = len(norms)
    dfm = DeepFusionModule(m, quarter_norms=norms)
    assert count(dfm) == m * (787_712 + 4 * 8_464)
    features = [torch.randn(2, 256, 16, 16) for _ in range(m)]
    out = dfm(features)
    assert [tuple(t.shape) for t in out] == [
        (2, 256, 64, 64),
        (2, 256, 32, 32),
        (2, 256, 16, 16),
        (2, 256, 8, 8),
    ]
    for pyramid, norm in zip(dfm.pyramids, norms):
        assert pyramid.quarter_norm == norm


def test_pyramids_share_no_weights() -> None:
    dfm = DeepFusionModule(2, quarter_norms=("layernorm", "layernorm"))
    first = {id(p) for p in dfm.pyramids[0].parameters()}
    second = {id(p) for p in dfm.pyramids[1].parameters()}
    assert not first & second
    se_ids = [id(p) for fusion in dfm.fusions for p in fusion.parameters()]
    assert len(se_ids) == len(set(se_ids)) == 4 * 2 * 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_modalities": 2, "quarter_norms": ("layernorm",)}, "quarter_norms"),
        ({"num_modalities": 1, "quarter_norms": ("layernorm", "batchnorm")}, "quarter_norms"),
        ({"num_modalities": 2, "quarter_norms": ("layernorm", "groupnorm")}, r"quarter_norms\[1\]"),
        ({"num_modalities": 1, "quarter_norms": "layernorm"}, "quarter_norms"),
        ({"num_modalities": 0, "quarter_norms": ()}, "num_modalities"),
    ],
)
def test_dfm_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeepFusionModule(**kwargs)  # type: ignore[arg-type]


def test_pyramid_rejects_unknown_norm() -> None:
    with pytest.raises(ValueError, match="quarter_norm"):
        SimpleFeaturePyramid(256, "instancenorm")  # type: ignore[arg-type]


def test_dfm_input_errors() -> None:
    dfm = DeepFusionModule(2, 32, quarter_norms=REFERENCE_NORMS)
    with pytest.raises(ValueError, match="expected 2 maps"):
        dfm([torch.randn(2, 32, 8, 8)])
    with pytest.raises(ValueError, match="single tensor"):
        dfm(torch.randn(2, 32, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        dfm([torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)])
    with pytest.raises(ValueError, match="expected a"):
        dfm([torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)])


def test_layernorm2d_normalises_over_channels() -> None:
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    x = torch.randn(2, 8, 5, 3) * 3 + 1
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight[:, None, None] + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    assert norm.eps == 1e-6


def test_pyramid_identity_and_maxpool_levels() -> None:
    pyramid = SimpleFeaturePyramid(16, "layernorm")
    x = torch.randn(2, 16, 6, 6)
    _, _, level16, level32 = pyramid(x)
    assert level16 is x
    torch.testing.assert_close(level32, F.max_pool2d(x, 2))


def test_se_fusion_is_sum_of_gated_maps() -> None:
    fusion = SEFusion(3, channels=8, reduction_channels=2)
    maps = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    expected = torch.zeros_like(maps[0])
    for branch, x in zip(fusion.branches, maps):
        se = branch
        assert isinstance(se, SqueezeExcitation)
        gate = torch.sigmoid(se.expand(torch.relu(se.reduce(x.mean(dim=(2, 3), keepdim=True)))))
        expected = expected + x * gate
    torch.testing.assert_close(fusion(maps), expected)


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_pyramid_upsampling_is_local(norm: str) -> None:
    """ConvT(k2, s2) maps each input pixel to its own 2x2 block: a one-pixel change stays in its footprint."""
    pyramid = SimpleFeaturePyramid(16, norm).eval()  # type: ignore[arg-type]
    x = torch.randn(1, 16, 8, 8)
    y = x.clone()
    y[0, :, 3, 5] += 5.0
    with torch.no_grad():
        a, b = pyramid(x), pyramid(y)
    changed4 = (a[0] - b[0]).abs().amax(dim=(0, 1)) > 1e-6
    changed8 = (a[1] - b[1]).abs().amax(dim=(0, 1)) > 1e-6
    expected4 = torch.zeros(32, 32, dtype=torch.bool)
    expected4[12:16, 20:24] = True
    expected8 = torch.zeros(16, 16, dtype=torch.bool)
    expected8[6:8, 10:12] = True
    assert torch.equal(changed4, expected4)
    assert torch.equal(changed8, expected8)


def test_dfm_backward_gives_finite_grads_everywhere() -> None:
    dfm = DeepFusionModule(2, quarter_norms=REFERENCE_NORMS)
    features = [torch.randn(2, 256, 16, 16, requires_grad=True) for _ in range(2)]
    out = dfm(features)
    sum(o.square().mean() for o in out).backward()  # type: ignore[union-attr]
    for name, param in dfm.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in features)


def test_dfm_runs_under_bf16_autocast() -> None:
    dfm = DeepFusionModule(2, quarter_norms=REFERENCE_NORMS)
    features = [torch.randn(2, 256, 16, 16) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dfm(features)
    assert [tuple(t.shape) for t in out] == [
        (2, 256, 64, 64),
        (2, 256, 32, 32),
        (2, 256, 16, 16),
        (2, 256, 8, 8),
    ]
    assert all(torch.isfinite(t.float()).all() for t in out)
