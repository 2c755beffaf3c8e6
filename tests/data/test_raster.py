"""Grid alignment, nodata, padding and bad-input errors of the TileReader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.tile import LabelEncoding, Tile
from tests.data.conftest import CRS, ORIGIN, palette_rgb, write_raster

# A feature (a "building") drawn at fixed map coordinates, metres in UTM 32N.
X0, X1 = ORIGIN[0] + 20, ORIGIN[0] + 32
Y1, Y0 = ORIGIN[1] - 18, ORIGIN[1] - 30  # top, bottom


def _feature_mask(transform: rasterio.Affine, height: int, width: int) -> np.ndarray:
    """Pixels of a grid whose centre lies inside the feature."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform @ (cols, rows)
    return (xs > X0) & (xs < X1) & (ys > Y0) & (ys < Y1)


def _rim(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the mask's boundary."""
    pad = np.pad(mask, 1, mode="edge")
    h, w = mask.shape
    shifted = [pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.any([s != mask for s in shifted], axis=0)


def test_modalities_on_other_grids_land_on_the_same_pixels(tmp_path: Path) -> None:
    # Optical: 1 m grid, 64 x 64.
    t_opt = from_origin(*ORIGIN, 1.0, 1.0)
    opt = np.where(_feature_mask(t_opt, 64, 64), 200, 20).astype(np.uint8)
    write_raster(tmp_path / "opt.tif", np.stack([opt] * 3), transform=t_opt)
    # DSM: shifted origin (inside the optical extent) and 0.5 m pixels, so the usable area shrinks.
    t_dsm = from_origin(ORIGIN[0] + 7, ORIGIN[1] - 3, 0.5, 0.5)
    dsm = np.where(_feature_mask(t_dsm, 100, 100), 12.0, 2.0).astype(np.float32)
    write_raster(tmp_path / "dsm.tif", dsm, transform=t_dsm)
    # Labels: another CRS (geographic WGS84), reprojected from a 0.25 m UTM drawing with nearest.
    t_fine = from_origin(*ORIGIN, 0.25, 0.25)
    fine = np.where(_feature_mask(t_fine, 256, 256), 1, 0).astype(np.uint8)
    dst_t, w, h = calculate_default_transform(
        CRS, "EPSG:4326", 256, 256, *rasterio.transform.array_bounds(256, 256, t_fine)
    )
    geo = np.zeros((h, w), np.uint8)
    reproject(
        fine,
        geo,
        src_transform=t_fine,
        src_crs=CRS,
        dst_transform=dst_t,
        dst_crs="EPSG:4326",
        resampling=Resampling.nearest,
    )
    write_raster(tmp_path / "lab.tif", palette_rgb(geo), crs="EPSG:4326", transform=dst_t)

    tile = Tile("t", {"optical": tmp_path / "opt.tif", "dsm": tmp_path / "dsm.tif"}, labels=tmp_path / "lab.tif")
    with TileReader(tile, scaling={"dsm": Scaling("fixed", low=0, high=20)}) as reader:
        # The overlap starts at the DSM origin: 7 columns and 3 rows into the optical grid.
        assert reader.transform.c == ORIGIN[0] + 7 and reader.transform.f == ORIGIN[1] - 3
        assert reader.crs == CRS
        assert (reader.height, reader.width) == (50, 50)
        expected = _feature_mask(reader.transform, reader.height, reader.width)
        out = reader.read(ChipWindow(0, 0, reader.height, reader.width))
    optical = out["pixel_values"]["optical"][0] > 0.5
    dsm_mask = out["pixel_values"]["dsm"][0] > 0.35  # 7 m of 20 m: halfway between ground and roof
    labels = out["labels"] == 1
    assert expected.sum() == 144
    np.testing.assert_array_equal(optical, expected)
    np.testing.assert_array_equal(dsm_mask, expected)  # same CRS: exact, resolution and offset handled
    # Other CRS: nearest resampling may move the edge by a pixel, never more.
    inner = ~_rim(expected)
    np.testing.assert_array_equal(labels[inner], expected[inner])
    assert (labels != expected).sum() <= 4 * 12


def test_whole_pixel_offset_on_the_same_grid_is_read_directly(tmp_path: Path) -> None:
    t_opt = from_origin(*ORIGIN, 1.0, 1.0)
    opt = np.where(_feature_mask(t_opt, 64, 64), 200, 20).astype(np.uint8)
    write_raster(tmp_path / "opt.tif", np.stack([opt] * 3), transform=t_opt)
    # Same resolution, origin 5 columns left and 4 rows below the optical's: the DSM starts before it.
    t_dsm = from_origin(ORIGIN[0] - 5, ORIGIN[1] - 4, 1.0, 1.0)
    dsm = np.where(_feature_mask(t_dsm, 50, 60), 12.0, 2.0).astype(np.float32)
    write_raster(tmp_path / "dsm.tif", dsm, transform=t_dsm)
    tile = Tile("t", {"optical": tmp_path / "opt.tif", "dsm": tmp_path / "dsm.tif"})
    with TileReader(tile, scaling={"dsm": Scaling("fixed", low=0, high=20)}) as reader:
        assert reader._layers["dsm"]._vrt is None and reader._layers["dsm"].offset == (-4, 5)
        assert (reader.height, reader.width) == (50, 55)
        assert reader.transform.c == ORIGIN[0] and reader.transform.f == ORIGIN[1] - 4
        expected = _feature_mask(reader.transform, reader.height, reader.width)
        out = reader.read(ChipWindow(0, 0, reader.height, reader.width))
    np.testing.assert_array_equal(out["pixel_values"]["optical"][0] > 0.5, expected)
    np.testing.assert_array_equal(out["pixel_values"]["dsm"][0] > 0.35, expected)
    np.testing.assert_allclose(out["pixel_values"]["dsm"][0][expected], 0.6)


def test_no_overlap_names_both_files(tmp_path: Path) -> None:
    write_raster(tmp_path / "a.tif", np.zeros((3, 8, 8), np.uint8))
    write_raster(
        tmp_path / "b.tif", np.zeros((8, 8), np.float32), transform=from_origin(ORIGIN[0] + 100, ORIGIN[1], 1, 1)
    )
    tile = Tile("t", {"optical": tmp_path / "a.tif", "dsm": tmp_path / "b.tif"})
    with pytest.raises(ValueError, match=r"b\.tif.*does not overlap.*a\.tif"):
        TileReader(tile)


def test_ungeoreferenced_shapes_must_match(tmp_path: Path) -> None:
    write_raster(tmp_path / "a.tif", np.zeros((3, 8, 8), np.uint8), georeferenced=False)
    write_raster(tmp_path / "b.tif", np.zeros((9, 8), np.float32), georeferenced=False)
    with pytest.raises(ValueError, match=r"b\.tif.*9x8.*a\.tif.*8x8.*equal shapes"):
        TileReader(Tile("t", {"optical": tmp_path / "a.tif", "dsm": tmp_path / "b.tif"}))


def test_truncated_and_unreadable_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_raster(
        tmp_path / "big.tif",
        rng.integers(0, 255, (3, 512, 512), dtype=np.uint8).astype(np.uint8),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with (
        pytest.raises(ValueError, match=r"big\.tif.*(unreadable|truncated)"),
        TileReader(Tile("t", {"optical": path})) as reader,
    ):
        reader.read(ChipWindow(0, 0, 512, 512))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ValueError, match=r"notes\.tif: unreadable or not a raster"):
        TileReader(Tile("t", {"optical": text}))
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        TileReader(Tile("t", {"optical": tmp_path / "missing.tif"}))


def test_nodata_nan_padding_and_label_ignore(tmp_path: Path) -> None:
    opt = np.full((3, 10, 12), 100, np.uint8)
    opt[:, 0, 0] = 0
    dsm = np.linspace(0, 10, 120, dtype=np.float32).reshape(10, 12)
    dsm[5, 5] = np.nan
    dsm[6, 6] = -9999
    labels = np.ones((10, 12), np.uint8)
    write_raster(tmp_path / "o.tif", opt, nodata=0)
    write_raster(tmp_path / "d.tif", dsm, nodata=-9999)
    write_raster(tmp_path / "l.tif", palette_rgb(labels))
    tile = Tile("t", {"optical": tmp_path / "o.tif", "dsm": tmp_path / "d.tif"}, labels=tmp_path / "l.tif")
    with TileReader(tile, chip_size=16) as reader:
        stats = reader.statistics["dsm"]
        assert stats.minimum[0] == 0 and stats.maximum[0] == 10  # nodata left out of the statistics
        out = reader.read(ChipWindow(0, 0, 10, 12))
    d, o, lab = out["pixel_values"]["dsm"], out["pixel_values"]["optical"], out["labels"]
    assert d.shape == (1, 16, 16) and o.shape == (3, 16, 16) and lab.shape == (16, 16)
    assert np.isfinite(d).all() and d[0, 5, 5] == 0 and d[0, 6, 6] == 0 and o[0, 0, 0] == 0
    assert lab[5, 5] == lab[6, 6] == lab[0, 0] == 255 and lab[1, 1] == 1
    assert (lab[10:] == 255).all() and (lab[:, 12:] == 255).all() and (d[:, 10:] == 0).all()
    with TileReader(tile, mask_nodata=False) as reader:
        assert reader.read(ChipWindow(5, 5, 1, 1))["labels"][0, 0] == 1
    with pytest.raises(ValueError, match="outside tile"):
        TileReader(tile).read(ChipWindow(5, 5, 10, 10))


def test_index_labels_out_of_range_and_in_memory_arrays() -> None:
    enc = LabelEncoding("index", ("a", "b"), ((0, 0, 0), (1, 1, 1)))
    tile = Tile("m", {"x": np.zeros((2, 4, 4), np.float32)}, labels=np.full((4, 4), 7, np.uint8), label_encoding=enc)
    with pytest.raises(ValueError, match=r"outside the class indices 0\.\.1.*7: 16 px"):
        TileReader(tile, scaling={"x": Scaling("none")}).read(ChipWindow(0, 0, 4, 4))
    good = Tile("m", {"x": np.ones((2, 4, 4), np.float32)}, labels=np.ones((4, 4), np.uint8), label_encoding=enc)
    out = TileReader(good, scaling={"x": Scaling("none")}).read(ChipWindow(0, 0, 4, 4))
    assert out["labels"].tolist() == [[1] * 4] * 4 and out["pixel_values"]["x"].shape == (2, 4, 4)


def test_profile_for_writing_predictions(tmp_path: Path) -> None:
    write_raster(tmp_path / "a.tif", np.zeros((3, 8, 9), np.uint8))
    with TileReader(Tile("t", {"optical": tmp_path / "a.tif"}), labels="none") as reader:
        profile = reader.profile
    assert profile["height"] == 8 and profile["width"] == 9 and profile["crs"] == CRS
    assert profile["transform"] == from_origin(*ORIGIN, 1.0, 1.0)
