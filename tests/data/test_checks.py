"""valid_share / check_valid_share: exact block-wise counts of pixels with data, errors and warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mfpeft.data.checks import _windows, check_valid_share, valid_share
from tests.rasters import write_nan_dsm, write_patchy_int16_dsm, write_raster


def test_all_nan_float32_dsm_has_no_data_and_is_an_error(tmp_path: Path) -> None:
    path = write_nan_dsm(tmp_path / "dsm.tif", 70, 90)
    counted = valid_share(path)
    assert (counted.valid, counted.total, counted.share) == (0, 70 * 90, 0.0)
    assert counted.describe_missing() == "NaN"
    with pytest.raises(ValueError, match=r"dsm\.tif: modality 'dsm' has no data: every pixel is NaN; give a raster"):
        check_valid_share("dsm", path)


def test_int16_dsm_with_30_percent_nodata_warns_once_with_the_share(tmp_path: Path) -> None:
    path = write_patchy_int16_dsm(tmp_path / "dsm.tif", 300, 130, missing=0.3)
    with pytest.warns(UserWarning) as record:
        counted = check_valid_share("dsm", path)
    assert counted.valid == 210 * 130 and counted.nodata == -32768.0 and not counted.floating
    assert [str(w.message) for w in record] == [
        f"{path}: 30.0 % of the pixels of modality 'dsm' are the nodata value -32768 (no data); they are read as 0"
    ]


def test_below_the_threshold_no_warning_and_all_nodata_integer_is_an_error(tmp_path: Path) -> None:
    data = np.ones((1, 100, 100), np.int16)
    data[0, :4] = -1  # 4 %
    few = write_raster(tmp_path / "few.tif", data, nodata=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_valid_share("dsm", few).share == pytest.approx(0.96)
    empty = write_raster(tmp_path / "empty.tif", np.full((1, 20, 20), -1, np.int16), nodata=-1)
    with pytest.raises(ValueError, match=r"every pixel is the nodata value -1; "):
        check_valid_share("dsm", empty)


def test_a_pixel_is_missing_only_where_every_band_is(tmp_path: Path) -> None:
    data = np.full((3, 40, 50), 7, np.uint8)
    data[:, :10] = 0  # all bands nodata: missing
    data[0, 10:20] = 0  # one band only: still data
    path = write_raster(tmp_path / "rgb.tif", data, nodata=0)
    assert valid_share(path).valid == 30 * 50
    assert valid_share(path, bands=[1]).valid == 20 * 50  # band 1 alone is nodata in rows 0..19


def test_float_nodata_and_nan_both_count_as_missing(tmp_path: Path) -> None:
    data = np.ones((1, 30, 30), np.float32)
    data[0, 0] = -9999
    data[0, 1] = np.nan
    counted = valid_share(write_raster(tmp_path / "dsm.tif", data, nodata=-9999))
    assert counted.valid == 28 * 30 and counted.describe_missing() == "NaN or the nodata value -9999"


@pytest.mark.parametrize("layout", [{"tiled": True, "blockxsize": 32, "blockysize": 32}, {}])
def test_block_wise_count_equals_a_whole_read(tmp_path: Path, layout: dict[str, object]) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2, 150, 170)).astype(np.float32)
    data[:, rng.random((150, 170)) < 0.2] = np.nan
    data[0, rng.random((150, 170)) < 0.1] = np.nan  # band 0 alone: the pixel still has data
    path = write_raster(tmp_path / "x.tif", data, **layout)
    expected = int((~np.isnan(data).all(axis=0)).sum())
    for block_pixels in (1, 1000, 1 << 22):  # one block per read, a few, the whole raster
        assert valid_share(path, block_pixels=block_pixels).valid == expected
    assert valid_share(data).valid == expected  # the same count from the in-memory array


def test_windows_cover_the_raster_once_in_whole_blocks() -> None:
    for height, width, block, pixels in [
        (100, 70, (32, 32), 3000),
        (10, 100_000, (1, 100_000), 1 << 17),
        (5, 5, (8, 8), 1),
    ]:
        seen = np.zeros((height, width), np.int64)
        for w in _windows(height, width, block, pixels):
            seen[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
            assert w.row_off % min(block[0], height) == 0 and w.col_off % min(block[1], width) == 0
        assert (seen == 1).all()


def test_bad_bands_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = write_nan_dsm(tmp_path / "dsm.tif", 10, 10)
    with pytest.raises(ValueError, match=r"dsm\.tif has 1 band\(s\); bands \[2\] were asked for"):
        valid_share(path, bands=[2])
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tif: file not found"):
        valid_share(tmp_path / "nowhere.tif")
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(ValueError, match=r"text\.tif: unreadable or not a raster"):
        valid_share(tmp_path / "text.tif")
