"""Palette conversions and input scaling."""

from __future__ import annotations

import numpy as np
import pytest

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import ISPRS_PALETTE, labels_to_rgb, map_codes, rgb_to_labels
from mfpeft.data.scaling import Scaling, TileStatistics, compute_tile_statistics, default_scaling


def test_rgb_to_labels_roundtrip_and_black_is_ignore() -> None:
    labels = np.array([[0, 1, 2], [3, 4, 5], [255, 0, 1]], dtype=np.uint8)
    rgb = labels_to_rgb(labels, ISPRS_PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 3, 3)
    assert tuple(rgb[2, 0]) == (0, 0, 0)
    back = rgb_to_labels(rgb, ISPRS_PALETTE, source="x.tif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_unknown_colours_are_listed_with_counts_and_file() -> None:
    rgb = labels_to_rgb(np.zeros((4, 4), dtype=np.uint8), ISPRS_PALETTE)
    rgb[0, :3] = (10, 20, 30)
    rgb[1, 0] = (1, 2, 3)
    with pytest.raises(ValueError, match=r"labels/a\.tif.*\(10, 20, 30\): 3 px.*\(1, 2, 3\): 1 px"):
        rgb_to_labels(rgb, ISPRS_PALETTE, source="labels/a.tif")


def test_map_codes_and_unknown_codes() -> None:
    codes = np.array([[10, 20], [0, 10]])
    out = map_codes(codes, {10: 0, 20: 1, 0: 255}, source="lc.tif")
    np.testing.assert_array_equal(out, [[0, 1], [255, 0]])
    with pytest.raises(ValueError, match=r"lc\.tif.*30: 1 px"):
        map_codes(np.array([[30, 10]]), {10: 0}, source="lc.tif")


def test_scaling_modes() -> None:
    x = np.array([[[0.0, 127.5], [255.0, np.nan]]], dtype=np.float32)
    np.testing.assert_allclose(Scaling().apply(x)[0, 0], [0.0, 0.5])
    stats = TileStatistics(np.array([0.0]), np.array([510.0]), np.array([100.0]), np.array([50.0]))
    np.testing.assert_allclose(Scaling("minmax_tile").apply(x, stats)[0, 0], [0.0, 0.25])
    np.testing.assert_allclose(Scaling("minmax_chip").apply(x)[0, 1, 0], 1.0)
    np.testing.assert_allclose(Scaling("fixed", low=0, high=100).apply(x)[0, 0], [0.0, 1.0])
    np.testing.assert_allclose(Scaling("zscore").apply(x, stats)[0, 0], [-2.0, 0.55])
    np.testing.assert_allclose(Scaling("zscore", mean=0.0, std=255.0).apply(x)[0, 1, 0], 1.0)
    assert np.isnan(Scaling("minmax_tile").apply(x, stats)[0, 1, 1])
    flat = np.ones((1, 2, 2), dtype=np.float32)
    assert (Scaling("minmax_chip").apply(flat) == 0).all()
    with pytest.raises(ValueError, match="statistics"):
        Scaling("minmax_tile").apply(x)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "log"}, "mode"),
        ({"mode": "fixed", "low": 1.0}, "high"),
        ({"mode": "fixed", "low": 2.0, "high": 1.0}, "high"),
        ({"divisor": 0.0}, "divisor"),
        ({"percentiles": (98.0, 2.0)}, "percentiles"),
        ({"mode": "zscore", "mean": 1.0}, "std"),
    ],
)
def test_scaling_validates(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Scaling(**kwargs)


def test_scaling_dict_roundtrip() -> None:
    s = Scaling("percentile", percentiles=(1, 99), per_band=False)
    assert Scaling.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown"):
        Scaling.from_dict({"mode": "divide", "nope": 1})
    assert default_scaling("dsm").mode == "minmax_tile"
    assert default_scaling("optical").mode == "divide"


def test_streaming_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 300.0, size=(2, 97, 53)).astype(np.float32)
    data[0, 5, 7] = np.nan
    reads: list[ChipWindow] = []

    def read(w: ChipWindow) -> np.ndarray:
        reads.append(w)
        return data[(slice(None), *w.slices)]

    stats = compute_tile_statistics(read, 97, 53, percentiles=(2.0, 98.0), block_pixels=500)
    assert len(reads) > 2 and max(w.height for w in reads) < 97  # really block-wise
    np.testing.assert_allclose(stats.minimum, np.nanmin(data, axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(stats.maximum, np.nanmax(data, axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(stats.mean, np.nanmean(data, axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats.std, np.nanstd(data, axis=(1, 2)), rtol=1e-4)
    assert stats.low is not None and stats.high is not None
    span = stats.maximum - stats.minimum
    np.testing.assert_allclose(stats.low, np.nanpercentile(data, 2, axis=(1, 2)), atol=float(span.max()) / 1000)
    np.testing.assert_allclose(stats.high, np.nanpercentile(data, 98, axis=(1, 2)), atol=float(span.max()) / 1000)
    assert TileStatistics.from_dict(stats.to_dict()).minimum.tolist() == stats.minimum.tolist()
