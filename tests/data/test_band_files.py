"""A modality from several single-band files: stacked in order, aligned like any raster, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from mfpeft.cli import main as cli_main
from mfpeft.data.checks import check_tile_inputs, valid_share
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources import get_source
from mfpeft.data.tile import Tile, describe_ref
from tests.rasters import ORIGIN, PIXEL, write_raster, write_scene

BANDS = "*_b4.tif,*_b5.tif,*_b6.tif"
HALF_EAST = from_origin(ORIGIN[0] + PIXEL / 2, ORIGIN[1], PIXEL, PIXEL)
RAW = {"optical": Scaling("none")}


def ramp(offset: int, height: int = 40, width: int = 50) -> np.ndarray:
    """uint16 (1, H, W): ``offset + 2 * col`` (even steps, so a half-pixel bilinear shift stays integer)."""
    return np.broadcast_to(offset + 2 * np.arange(width, dtype=np.uint16), (1, height, width)).copy()


def write_bands(folder: Path, name: str = "a", shifted: bool = True) -> list[Path]:
    """b4, b5, b6 of tile ``name``: ramps from 1000, 2000, 3000; b6 half a pixel east when ``shifted``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_raster(folder / f"{name}_b4.tif", ramp(1000)),
        write_raster(folder / f"{name}_b5.tif", ramp(2000)),
        write_raster(folder / f"{name}_b6.tif", ramp(3000), transform=HALF_EAST if shifted else None),
    ]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_band_files_stack_in_pattern_order_on_the_first_files_grid(tmp_path: Path) -> None:
    files = write_bands(tmp_path)
    tile = get_source("folder", tmp_path, modalities={"optical": BANDS})["train"][0]
    assert tile.modalities["optical"] == tuple(files)
    assert describe_ref(tile.modalities["optical"]) == ",".join(map(str, files))
    with TileReader(tile, labels="none", scaling=RAW) as reader:
        # b6's first column is not covered on b4's grid: the usable area starts one column in.
        assert reader.area == ChipWindow(0, 1, 40, 49)
        values = reader.read_raw("optical", ChipWindow(0, 0, 3, 49))
    cols = np.arange(1, 50)
    np.testing.assert_array_equal(values[0, 0], 1000 + 2 * cols)
    np.testing.assert_array_equal(values[1, 0], 2000 + 2 * cols)
    np.testing.assert_array_equal(values[2, 0], 3000 + 2 * cols - 1)  # bilinear, half a pixel west on b6's grid
    # --bands chooses among the stacked band files, in the order given.
    chosen = get_source("folder", tmp_path, modalities={"optical": BANDS}, bands={"optical": [3, 1]})["train"][0]
    with TileReader(chosen, labels="none", scaling=RAW) as reader:
        picked = reader.read_raw("optical", ChipWindow(0, 0, 1, 49))
    np.testing.assert_array_equal(picked[:, 0], values[[2, 0], 0])


def test_a_band_file_with_several_bands_or_no_data_is_refused_naming_it(tmp_path: Path) -> None:
    b4, _, _ = write_bands(tmp_path, shifted=False)
    rgb = write_raster(tmp_path / "a_rgb.tif", np.ones((3, 40, 50), np.uint16))
    with pytest.raises(ValueError, match=r"a_rgb\.tif: band file 2 of .* has 3 bands"):
        TileReader(Tile("a", {"optical": (b4, rgb)}), labels="none", scaling=RAW)
    empty = write_raster(tmp_path / "a_b7.tif", np.zeros((1, 40, 50), np.uint16), nodata=0)
    with pytest.raises(ValueError, match=r"a_b7\.tif: modality 'optical' has no data"):
        check_tile_inputs([Tile("a", {"optical": (b4, empty)})], ["optical"])
    assert valid_share((b4, empty)).valid == 0  # the band file with the fewest values
    assert valid_share((b4, empty), [1]).valid == 40 * 50


def test_predict_with_band_files_equals_a_stacked_raster(tmp_path: Path) -> None:
    from tests.engine.test_predict import save_tiny_model

    rasters = write_scene(tmp_path, 150, 170)
    with rasterio.open(rasters["optical"]) as src:
        rgb = src.read()
    bands = [write_raster(tmp_path / f"band{k}.tif", rgb[k : k + 1], nodata=0) for k in range(3)]
    model = save_tiny_model(tmp_path / "model")
    common = ["--model", str(model), "--dsm", str(rasters["dsm"]), "--stride", "128", "--device", "cpu"]
    stacked, split = tmp_path / "stacked.tif", tmp_path / "split.tif"
    assert cli_main(["predict", *common, "--optical", str(rasters["optical"]), "--output", str(stacked)]) == 0
    assert cli_main(["predict", *common, "--optical", ",".join(map(str, bands)), "--output", str(split)]) == 0
    with rasterio.open(stacked) as a, rasterio.open(split) as b:
        assert a.profile == b.profile
        first, second = a.read(), b.read()
    np.testing.assert_array_equal(first, second)
    assert (first == 255).any(), "the optical nodata block is nodata in both"


def test_a_missing_band_file_is_one_line_naming_the_pattern_and_tile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_bands(data, "a")
    write_bands(data, "b")
    (data / "b_b5.tif").unlink()
    out = tmp_path / "prepared"
    status = cli_main(
        [
            "prepare",
            "folder",
            "--data-dir",
            str(data),
            "--output",
            str(out),
            "--optical",
            BANDS,
            "--chip-size",
            "32",
            "--stride",
            "32",
        ]
    )
    assert status == 1
    line = one_error_line(capsys)
    assert "tile 'b'" in line and "'*_b5.tif'" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing written"


def test_band_files_that_do_not_overlap_are_one_line_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    b4, b5, _ = write_bands(data, shifted=False)
    write_raster(b5, ramp(2000), transform=from_origin(ORIGIN[0] + 1000.0, ORIGIN[1], PIXEL, PIXEL))
    out = tmp_path / "prepared"
    status = cli_main(
        [
            "prepare",
            "folder",
            "--data-dir",
            str(data),
            "--output",
            str(out),
            "--optical",
            BANDS,
            "--chip-size",
            "32",
            "--stride",
            "32",
        ]
    )
    assert status == 1
    line = one_error_line(capsys)
    assert f"{b5} does not overlap {b4}" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing written"
