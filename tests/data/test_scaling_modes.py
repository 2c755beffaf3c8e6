"""Scaling modes: one string syntax, one parser, the formulas, `stats` resolved once over the training tiles, and a
default for new data that does not depend on the size of the raster a chip comes from (issue #12 item 1)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from mfpeft.data.datasets import RandomChipDataset
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources import get_source
from tests.data.conftest import palette_rgb, write_raster

FOLDER = {"optical": "*_rgb.tif", "dsm": "*_dsm.tif"}


# -- the one parser ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("divide", {"mode": "divide", "divisor": 255.0}),
        ("divide:10000", {"mode": "divide", "divisor": 10000.0}),
        ("linear:0.0000275,-0.2", {"mode": "linear", "scale": 0.0000275, "offset": -0.2}),
        ("range:0,3000", {"mode": "range", "low": 0.0, "high": 3000.0}),
        ("stats", {"mode": "stats", "percentiles": (2.0, 98.0)}),
        ("stats:1,99", {"mode": "stats", "percentiles": (1.0, 99.0)}),
        ("minmax_tile", {"mode": "minmax_tile"}),
        ("minmax_chip", {"mode": "minmax_chip"}),
        ("zscore", {"mode": "zscore"}),
        ("zscore:100,20", {"mode": "zscore", "mean": 100.0, "std": 20.0}),
        ("percentile", {"mode": "percentile"}),
        ("percentile:1,99", {"mode": "percentile", "percentiles": (1.0, 99.0)}),
        ("none", {"mode": "none"}),
        (" Range:0,3000 ", {"mode": "range", "low": 0.0, "high": 3000.0}),
    ],
)
def test_every_mode_parses_from_one_syntax_and_describes_back(text: str, expected: dict) -> None:
    parsed = Scaling.parse(text)
    assert parsed == Scaling(**expected)
    assert Scaling.parse(parsed.describe()) == parsed
    assert Scaling.from_dict(json.loads(json.dumps(parsed.to_dict()))) == parsed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("linear:abc", "SCALE,OFFSET"),
        ("linear:0.1", "SCALE,OFFSET"),
        ("linear:0,1", "SCALE must not be 0"),
        ("range:5,1", "LO < HI"),
        ("range:0,nan", "LO,HI"),
        ("divide:0", "D > 0"),
        ("divide:x", "D > 0"),
        ("stats:98,2", "0 <= PLO < PHI <= 100"),
        ("percentile:1", "PLO,PHI"),
        ("minmax_tile:3", "takes no value"),
        ("zscore:1", "MEAN,STD"),
        ("log", "unknown mode 'log'"),
        ("", "unknown mode ''"),
    ],
)
def test_parse_errors_name_the_option_and_the_value(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        Scaling.parse(text, option="--scaling optical")
    message = str(caught.value)
    assert message.startswith(f"--scaling optical={text}: ") and problem in message, message
    assert "\n" not in message


def test_parse_scalings_takes_the_same_text_from_the_python_api() -> None:
    from mfpeft.data.scaling import parse_scalings

    parsed = parse_scalings({"optical": "range:0,3000", "dsm": Scaling("minmax_tile"), "sar": {"mode": "none"}})
    assert parsed == {
        "optical": Scaling("range", low=0, high=3000),
        "dsm": Scaling("minmax_tile"),
        "sar": Scaling("none"),
    }
    with pytest.raises(ValueError, match=r"^--scaling dsm=linear:abc: "):
        parse_scalings({"dsm": "linear:abc"})


def test_formulas_linear_range_per_band_and_the_legacy_fixed() -> None:
    x = np.array([[[0.0, 7273.0, 43636.0]], [[0.0, 1500.0, 3000.0]]], dtype=np.float32)  # (2, 1, 3)
    landsat = Scaling.parse("linear:0.0000275,-0.2").apply(x)
    np.testing.assert_allclose(landsat[0, 0], [-0.2, 0.0, 1.0], atol=1e-4)  # x * SCALE + OFFSET, not clipped
    per_band = Scaling("range", low=(0.0, 1000.0), high=(40000.0, 2000.0)).apply(x)
    np.testing.assert_allclose(per_band[0, 0], [0.0, 7273 / 40000, 1.0], rtol=1e-6)  # clipped to [0, 1]
    np.testing.assert_allclose(per_band[1, 0], [0.0, 0.5, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"range has 2 per-band bounds but the data has 3 bands"):
        Scaling("range", low=(0.0, 1.0), high=(2.0, 3.0)).apply(np.zeros((3, 2, 2), np.float32))
    legacy = Scaling.from_dict({"mode": "fixed", "low": 0, "high": 20, "divisor": 255.0})  # configs before #12
    assert legacy == Scaling("range", low=0.0, high=20.0) and legacy.describe() == "range:0,20"
    with pytest.raises(ValueError, match="stats.*training tiles"):
        Scaling("stats").apply(x)


def test_the_paper_scaling_is_unchanged() -> None:
    """minmax_tile and divide are the paper's and give bit-identical values to before (ISPRS, MMHunan, demo)."""
    from mfpeft.data.scaling import TileStatistics

    x = np.array([[[0.0, 127.5], [255.0, np.nan]]], dtype=np.float32)
    stats = TileStatistics(np.array([0.0]), np.array([510.0]), np.array([100.0]), np.array([50.0]))
    assert Scaling.parse("minmax_tile").apply(x, stats)[0, 0].tolist() == [0.0, 0.25]
    assert Scaling.parse("divide").apply(x)[0, 0].tolist() == (x[0, 0] / np.float32(255)).tolist()


# -- sources: the default for new data, and the paper's sources --------------------------------------------
def _write_tile(folder: Path, name: str, optical: np.ndarray, dsm: np.ndarray, **creation: object) -> None:
    labels = np.zeros(optical.shape[1:], np.uint8)
    write_raster(folder / f"{name}_rgb.tif", optical, **creation)
    write_raster(folder / f"{name}_dsm.tif", dsm, **creation)
    write_raster(folder / f"{name}_label.tif", palette_rgb(labels), **creation)


def _training_folder(root: Path, seed: int = 0) -> Path:
    """train/a, train/b (uint16 reflectance, float32 heights, 96 x 96) and test/c with outliers."""
    rng = np.random.default_rng(seed)
    for split, names in (("train", ("a", "b")), ("test", ("c",))):
        for name in names:
            optical = rng.gamma(4.0, 400.0, (3, 96, 96)).astype(np.uint16)
            dsm = rng.normal(120.0, 8.0, (1, 96, 96)).astype(np.float32)
            if split == "test":
                optical[:, :10] = 60000  # outliers outside the training tiles: must not move the range
                dsm[:, :10] = 900.0
            _write_tile(root / split, name, optical, dsm)
    return root


def test_folder_and_hf_default_to_stats_and_the_paper_sources_keep_theirs(tmp_path: Path, demo_dir: Path) -> None:
    splits = get_source("folder", _training_folder(tmp_path / "f"), modalities=FOLDER, labels="*_label.tif")
    assert {m: s.mode for m, s in splits["train"][0].scaling.items()} == {"optical": "stats", "dsm": "stats"}
    demo = get_source("demo", demo_dir)["train"][0]
    with TileReader(demo, labels="none") as reader:  # the README demo results: the paper's scaling, unchanged
        assert reader.scaling == {"optical": Scaling("divide"), "dsm": Scaling("minmax_tile")}
    with pytest.raises(
        ValueError,
        match=r"tile 'a' modality 'optical': scaling stats:2,98 is resolved over the "
        r"training tiles",
    ):
        TileReader(splits["train"][0])


def test_stats_resolves_once_over_the_training_tiles_to_a_per_band_range(tmp_path: Path) -> None:
    from mfpeft.data.scaling import resolve_input_scaling

    root = _training_folder(tmp_path / "f")
    splits = get_source("folder", root, modalities=FOLDER, labels="*_label.tif")
    resolved = resolve_input_scaling(splits["train"], ["optical", "dsm"])
    optical, dsm = resolved["optical"], resolved["dsm"]
    assert optical.mode == "range" and dsm.mode == "range" and optical.clip
    assert optical.resolved_from == "stats:2,98 over 2 training tiles"
    pooled = {}
    for m, suffix in (("optical", "rgb"), ("dsm", "dsm")):
        arrays = []
        for n in ("a", "b"):
            with rasterio.open(root / "train" / f"{n}_{suffix}.tif") as src:
                arrays.append(src.read().reshape(src.count, -1))
        pooled[m] = np.concatenate(arrays, axis=1)  # (C, pixels of both training tiles)
    for name, scaling in resolved.items():
        data = pooled[name].astype(np.float64)
        width = (data.max(axis=1) - data.min(axis=1)) / 65536 * 2
        assert isinstance(scaling.low, tuple) and len(scaling.low) == data.shape[0]  # per band, concrete numbers
        # The histogram's percentile: the (centre of the) bin of the first value whose share reaches it.
        for q, got in ((2, scaling.low), (98, scaling.high)):
            expected = np.percentile(data, q, axis=1, method="inverted_cdf")
            np.testing.assert_allclose(got, expected, atol=float(width.max()))
    assert max(optical.high) < 10000 and max(dsm.high) < 200  # the test tile's outliers played no part
    # The training set resolves the same way and every split is read with that one range.
    train_set = RandomChipDataset(splits["train"], chip_size=32, length=1)
    assert train_set.scalings[0] == resolved and train_set.scalings[1] == resolved
    with TileReader(splits["test"][0], scaling=resolved) as reader:
        chip = reader.read(ChipWindow(0, 0, 32, 32))["pixel_values"]
    assert chip["optical"][:, :10].max() == 1.0 and chip["optical"].min() >= 0.0  # outliers saturate, not rescale


def _sparse_raster(path: Path, size: int, count: int, dtype: str, offset: tuple[int, int], data: np.ndarray) -> None:
    """A tiled, deflate-compressed ``size`` x ``size`` GeoTIFF that is 0 except ``data`` at ``offset``."""
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from tests.data.conftest import CRS, ORIGIN

    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": count,
        "dtype": dtype,
        "crs": CRS,
        "transform": from_origin(ORIGIN[0] - offset[1], ORIGIN[1] + offset[0], 1.0, 1.0),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "SPARSE_OK": True,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, window=Window(offset[1], offset[0], data.shape[2], data.shape[1]))


def test_default_chip_input_does_not_depend_on_the_size_of_its_raster(tmp_path: Path) -> None:
    """Acceptance: a chip read from a 2048² raster and from the same pixels inside a 16384² raster is the same
    model input under the default scaling for new data (the paper's per-tile min-max is not)."""
    started = time.perf_counter()
    training = _training_folder(tmp_path / "train-set")
    train_tiles = get_source("folder", training, modalities=FOLDER, labels="*_label.tif")["train"]
    scaling = RandomChipDataset(train_tiles, chip_size=64, length=1).scalings[0]  # what a model records
    rng = np.random.default_rng(1)
    optical = np.full((3, 2048, 2048), 1500, np.uint16)
    dsm = np.full((1, 2048, 2048), 118.0, np.float32)
    optical[:, 1000:1256, 700:956] = rng.gamma(4.0, 400.0, (3, 256, 256)).astype(np.uint16)
    dsm[:, 1000:1256, 700:956] = rng.normal(120.0, 8.0, (1, 256, 256)).astype(np.float32)
    small, big = tmp_path / "small", tmp_path / "big"
    _write_tile(small, "s", optical, dsm, tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    offset = (9000, 5000)
    _sparse_raster(big / "s_rgb.tif", 16384, 3, "uint16", offset, optical)
    _sparse_raster(big / "s_dsm.tif", 16384, 1, "float32", offset, dsm)
    window = ChipWindow(1040, 760, 128, 128)
    chips = []
    for folder, (row, col) in ((small, (0, 0)), (big, offset)):
        tile = get_source("folder", folder, modalities=FOLDER)["train"][0]
        with TileReader(tile, scaling=scaling, labels="none") as reader:
            chips.append(reader.read(ChipWindow(window.row + row, window.col + col, 128, 128))["pixel_values"])
    for name in ("optical", "dsm"):
        assert chips[0][name].std() > 0.05  # a real chip, not a saturated or flat one
        np.testing.assert_array_equal(chips[0][name], chips[1][name], err_msg=name)
    assert time.perf_counter() - started < 20


def test_an_explicit_scaling_overrides_the_default_and_is_validated(tmp_path: Path) -> None:
    from mfpeft.data.scaling import resolve_input_scaling

    splits = get_source("folder", _training_folder(tmp_path / "f"), modalities=FOLDER, labels="*_label.tif")
    resolved = resolve_input_scaling(splits["train"], ["optical", "dsm"], {"optical": "divide:10000"})
    assert resolved["optical"] == Scaling("divide", divisor=10000.0) and resolved["dsm"].mode == "range"
    with pytest.raises(ValueError, match=r"^--scaling optical=range:1: "):
        resolve_input_scaling(splits["train"], ["optical"], {"optical": "range:1"})
    with pytest.raises(ValueError, match=r"--scaling names modality 'sar', which the tiles do not have"):
        resolve_input_scaling(splits["train"], ["optical"], {"sar": "none"})


# -- prepared data sets --------------------------------------------------------------------------------------
def test_a_prepared_set_records_the_resolved_scaling_and_is_never_scaled_twice(tmp_path: Path) -> None:
    import datasets

    from mfpeft.data.prepare import prepare_dataset
    from mfpeft.data.scaling import resolve_input_scaling

    root = _training_folder(tmp_path / "f")
    options = {"modalities": FOLDER, "labels": "*_label.tif"}
    out = tmp_path / "prepared"
    prepare_dataset("folder", root, out, chip_size=32, stride=32, source_options=options)
    raw = get_source("folder", root, **options)
    expected = resolve_input_scaling(raw["train"], ["optical", "dsm"])
    for split in ("train", "test"):
        meta = json.loads(datasets.load_from_disk(str(out))[split].info.description)["mfpeft"]
        assert meta["scaled"] is True
        assert {m: Scaling.from_dict(s) for m, s in meta["scaling"].items()} == expected  # one range, every split
    tile = get_source("hf", out)["test"][0]
    with TileReader(tile, labels="none") as reader:
        assert reader.scaling == expected  # the raw -> input scaling, not "none"
        stored = reader.read(ChipWindow(0, 0, 32, 32))["pixel_values"]
    with TileReader(raw["test"][0], scaling=expected, labels="none") as reader:
        again = reader.read(ChipWindow(0, 0, 32, 32))["pixel_values"]
    for m in ("optical", "dsm"):
        np.testing.assert_array_equal(stored[m], again[m])  # the stored values as they are
    with TileReader(tile, scaling=expected, labels="none") as reader:  # asking for the same scaling: fine
        np.testing.assert_array_equal(reader.read(ChipWindow(0, 0, 32, 32))["pixel_values"]["dsm"], stored["dsm"])
    with pytest.raises(
        ValueError,
        match=r"tile 'test-0' modality 'optical' is prepared: its values are already "
        r"scaled with range:\[.*\]; it cannot be read with divide:255",
    ):
        TileReader(tile, scaling={"optical": Scaling("divide")})
