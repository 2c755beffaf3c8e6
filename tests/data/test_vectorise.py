"""Class polygons of a class map: areas per class equal the pixel counts, the CRS is kept, options work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfpeft.data.vectorise import VectorOptions, write_class_polygons
from tests.rasters import CRS, PIXEL, write_raster

pyogrio = pytest.importorskip("pyogrio")

NAMES = ["road", "building", "tree"]


def _class_map(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:100, 0:130]
    classes = ((yy // 20 + xx // 26) % 3).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.01] = 1  # speckle: one-pixel polygons
    classes[:7, :9] = 255  # nodata
    write_raster(path, classes[None], nodata=255)
    return classes


def test_polygon_areas_equal_pixel_counts_and_the_crs_is_kept(tmp_path: Path) -> None:
    classes = _class_map(tmp_path / "labels.tif")
    summary = write_class_polygons(tmp_path / "labels.tif", tmp_path / "labels.gpkg", NAMES, VectorOptions(block=48))
    meta = pyogrio.read_info(tmp_path / "labels.gpkg", layer="labels")
    assert meta["features"] == summary.polygons > 0
    assert list(meta["fields"]) == ["class_id", "class_name", "area"]
    from rasterio.crs import CRS as RasterCRS

    assert RasterCRS.from_user_input(meta["crs"]) == RasterCRS.from_user_input(CRS)
    _, _, _, fields = pyogrio.raw.read(tmp_path / "labels.gpkg", layer="labels", read_geometry=False)
    ids, names, areas = fields
    for index, name in enumerate(NAMES):
        expected = float((classes == index).sum()) * PIXEL * PIXEL
        assert areas[ids == index].sum() == pytest.approx(expected)
        assert summary.class_areas[name] == pytest.approx(expected)
        assert set(names[ids == index]) == {name}


def test_simplify_and_min_area(tmp_path: Path) -> None:
    classes = _class_map(tmp_path / "labels.tif")
    plain = write_class_polygons(tmp_path / "labels.tif", tmp_path / "plain.gpkg", NAMES)
    sieved = write_class_polygons(
        tmp_path / "labels.tif", tmp_path / "sieved.gpkg", NAMES, VectorOptions(min_area=2 * PIXEL * PIXEL)
    )
    assert sieved.polygons < plain.polygons  # the one-pixel speckles are gone
    simple = write_class_polygons(
        tmp_path / "labels.tif", tmp_path / "simple.gpkg", NAMES, VectorOptions(simplify=PIXEL)
    )
    for index, name in enumerate(NAMES):
        pixels = float((classes == index).sum()) * PIXEL * PIXEL
        assert simple.class_areas[name] == pytest.approx(pixels, rel=0.05)  # within the simplification tolerance


def test_bad_options_and_ids_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"vector_simplify=-1"):
        VectorOptions(simplify=-1)
    _class_map(tmp_path / "labels.tif")
    with pytest.raises(ValueError, match=r"class ids \[2\] are not among the model's 2 classes"):
        write_class_polygons(tmp_path / "labels.tif", tmp_path / "bad.gpkg", NAMES[:2])
    assert not list(tmp_path.glob("*.gpkg")) and not list(tmp_path.glob(".*gpkg*"))
