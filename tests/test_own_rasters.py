"""End to end on rasters as users bring them: Landsat-like band files, an offset elevation with nodata, codes.

prepare (in-scene split, top classes) -> train a few steps on the prepared set -> evaluate on raw and on prepared
-> predict from the band files -> move the model folder -> predict again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from mfpeft.cli import main

from .rasters import write_raster

SIZE, PIXEL, ORIGIN = 256, 30.0, (600_000.0, 4_500_000.0)
CODES = [11, 21, 22, 23, 24, 31, 41, 42, 43, 52, 71, 81, 82, 90, 95, 101, 102, 103, 110, 120, 130, 140]


def write_scene(root: Path) -> dict[str, Path]:
    """uint16 reflectance in three band files (30 m), an int16 DEM (nodata -32768) offset by 0.4 px and 20 px
    smaller, and int16 vegetation codes (22 codes, nodata 32767, none of them 0)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    region = ((yy // 32) * 8 + xx // 32) % len(CODES)
    codes = np.asarray(CODES, np.int16)[region]
    codes[:5, :] = 32767
    grid = from_origin(*ORIGIN, PIXEL, PIXEL)
    paths = {"labels": write_raster(root / "s1_veg.tif", codes[None], transform=grid, nodata=32767)}
    for band in (4, 5, 6):
        reflectance = 7273 + 300 * band + 40 * region + rng.integers(0, 200, (SIZE, SIZE))
        paths[f"b{band}"] = write_raster(root / f"s1_b{band}.tif", reflectance.astype(np.uint16)[None], transform=grid)
    dem = (200 + 3 * region + rng.normal(0, 0.5, (SIZE, SIZE))).astype(np.int16)[: SIZE - 20, : SIZE - 20]
    dem[:10, :10] = -32768
    shifted = from_origin(ORIGIN[0] + 0.4 * PIXEL, ORIGIN[1] - 0.4 * PIXEL, PIXEL, PIXEL)
    paths["dem"] = write_raster(root / "s1_dem.tif", dem[None], transform=shifted, nodata=-32768)
    return paths


# What evaluate needs again: the files and the split; the classes and the scaling come from the model.
RASTERS = [
    "--optical",
    "*_b4.tif,*_b5.tif,*_b6.tif",
    "--dsm",
    "*_dem.tif",
    "--labels",
    "*_veg.tif",
    "--split-blocks",
    "validation=0.25,test=0.25",
    "--block-size",
    "64",
]
SOURCE = [*RASTERS, "--top-classes", "5", "--scaling", "optical=linear:0.0000275,-0.2"]


def test_own_rasters_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    paths = write_scene(data)
    prepared, run = tmp_path / "prepared", tmp_path / "run"
    assert (
        main(
            [
                "prepare",
                "folder",
                "--data-dir",
                str(data),
                "--output",
                str(prepared),
                "--chip-size",
                "64",
                "--stride",
                "64",
                *SOURCE,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "32767" not in out.split("wrote")[0] or "ignore" in out  # nodata is not a code of the histogram
    assert (prepared / "split_blocks.json").is_file() and (prepared / "split_blocks.png").is_file()

    assert (
        main(
            [
                "train",
                "--preset",
                "demo",
                "--base-model",
                "random:tiny",
                "--chip-size",
                "64",
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--eval-stride",
                "64",
                "--dataset",
                "hf",
                "--data-dir",
                str(prepared),
                "--output-dir",
                str(run),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    # recorded scaling = what was asked (optical), resolved stats (DEM); the raw -> input one, not "none"
    assert config["input_scaling"]["optical"]["mode"] == "linear"
    assert config["input_scaling"]["optical"]["scale"] == pytest.approx(0.0000275)
    assert config["input_scaling"]["dsm"]["mode"] == "range"
    # no phantom code: 0 is not in the rasters, and neither is nodata a class
    encoding = config["label_encoding"]
    assert 0 not in {int(k) for k in encoding["code_map"] if k != "*"} and 32767 not in {
        int(k) for k in encoding["code_map"] if k != "*"
    }
    assert len(config["id2label"]) == 5
    # the scaled optical sample is not saturated (linear SR scaling of 7,000..12,000 gives about 0..0.15)
    assert "optical linear:" in out and "saturated" not in capsys.readouterr().err

    scores = {}
    for name, flags in (
        ("raw", ["--dataset", "folder", "--data-dir", str(data), *RASTERS]),
        ("prepared", ["--dataset", "hf", "--data-dir", str(prepared)]),
    ):
        report = tmp_path / f"{name}.json"
        assert (
            main(
                ["evaluate", "--model", str(run), "--stride", "64", "--device", "cpu", "--output", str(report), *flags]
            )
            == 0
        )
        scores[name] = json.loads(report.read_text())
        summary = capsys.readouterr().err
        assert "evaluating " in summary and "% ignored)" in summary
        assert "scaling optical linear:2.75e-05,-0.2" in summary
    assert scores["raw"]["confusion_matrix"] == scores["prepared"]["confusion_matrix"]
    assert scores["raw"]["mean_iou"] == scores["prepared"]["mean_iou"]

    optical = ",".join(str(paths[f"b{b}"]) for b in (4, 5, 6))
    labels_tif = tmp_path / "labels.tif"
    argv = ["predict", "--optical", optical, "--dsm", str(paths["dem"]), "--device", "cpu"]
    assert main([*argv, "--model", str(run), "--output", str(labels_tif)]) == 0
    with rasterio.open(labels_tif) as out_ras, rasterio.open(paths["b4"]) as ref:
        assert (out_ras.width, out_ras.height, out_ras.transform, out_ras.crs) == (
            ref.width,
            ref.height,
            ref.transform,
            ref.crs,
        )
        colours = out_ras.colormap(1)
    assert all(colours[k][:3] != (0, 0, 0) for k in range(5)), "no class is black in the colour table"

    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    shutil.move(str(run), moved)
    again = tmp_path / "again.tif"
    assert main([*argv, "--model", str(moved), "--output", str(again)]) == 0
    with rasterio.open(labels_tif) as a, rasterio.open(again) as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_top_classes_are_chosen_on_the_training_blocks_only(tmp_path: Path) -> None:
    from mfpeft.data.labels import count_tile_codes
    from mfpeft.data.sources import get_source

    write_scene(tmp_path / "data")
    splits = get_source(
        "folder",
        tmp_path / "data",
        modalities={"optical": "*_b4.tif,*_b5.tif,*_b6.tif"},
        labels="*_veg.tif",
        top_classes=5,
        split_blocks="validation=0.25,test=0.25",
        block_size=64,
    )
    counts, _ = count_tile_codes(splits["train"])
    expected = sorted(sorted(counts, key=lambda code: (-counts[code], code))[:5])
    table = splits["train"][0].label_encoding.code_map or {}
    assert sorted(code for code, index in table.items() if index != 255) == expected
    assert all(t.label_encoding == splits["train"][0].label_encoding for ts in splits.values() for t in ts)
