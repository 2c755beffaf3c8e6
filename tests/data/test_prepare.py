"""`mfpeft prepare`: round trip, CLI, and no half-written output on errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mfpeft.cli import main
from mfpeft.data.datasets import SlidingWindowDataset, collate_chips
from mfpeft.data.prepare import prepare_dataset
from mfpeft.data.sources import get_source
from tests.data.conftest import palette_rgb, write_raster


@pytest.fixture(scope="module")
def prepared(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "demo-chips"
    assert (
        main(
            [
                "prepare",
                "demo",
                "--data-dir",
                str(demo_dir),
                "--output",
                str(out),
                "--chip-size",
                "256",
                "--stride",
                "256",
            ]
        )
        == 0
    )
    return out


def test_prepared_model_input_equals_the_rasters(prepared: Path, demo_dir: Path) -> None:
    hf_splits = get_source("hf", prepared)
    raster_splits = get_source("demo", demo_dir)
    assert {k: len(v) for k, v in hf_splits.items()} == {"train": 16, "validation": 4, "test": 4}
    for split, labels in (("test", "eroded"), ("train", "full")):
        from_hf = SlidingWindowDataset(hf_splits[split], chip_size=256, stride=256, labels=labels)
        from_rasters = SlidingWindowDataset(raster_splits[split], chip_size=256, stride=256, labels=labels)
        assert len(from_hf) == len(from_rasters)
        a = collate_chips([from_hf[i] for i in range(len(from_hf))])
        b = collate_chips([from_rasters[i] for i in range(len(from_rasters))])
        for m in ("optical", "dsm"):
            assert a["pixel_values"][m].dtype == torch.float32
            assert torch.equal(a["pixel_values"][m], b["pixel_values"][m])
        assert torch.equal(a["labels"], b["labels"])
        assert (a["labels"] != 255).any()


def test_prepared_metadata(prepared: Path) -> None:
    import datasets

    dd = datasets.load_from_disk(str(prepared))
    meta = json.loads(dd["train"].info.description)["mfpeft"]
    assert meta["modalities"] == ["optical", "dsm"] and meta["classes"][1] == "building"
    assert meta["scaling"]["dsm"]["mode"] == "minmax_tile" and meta["scaling"]["optical"]["divisor"] == 255
    assert set(meta["statistics"]) == {"tile0", "tile1", "tile2", "tile3"}
    row = dd["test"][0]
    assert np.asarray(row["optical"]).shape == (3, 256, 256) and row["tile"] == "tile5"


def test_existing_output_is_refused(prepared: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "demo", "--data-dir", str(demo_dir), "--output", str(prepared)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_bad_input_leaves_nothing_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_raster(data / f"{name}_rgb.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))
        write_raster(data / f"{name}_dsm.tif", rng.random((64, 64)).astype(np.float32))
        labels = palette_rgb(np.zeros((64, 64), np.uint8))
        if name == "b":
            labels[:, :2, :3] = 77  # a colour not in the palette, 6 pixels
        write_raster(data / f"{name}_label.tif", labels)
    out = tmp_path / "out" / "chips"
    args = [
        "prepare",
        "folder",
        "--data-dir",
        str(data),
        "--output",
        str(out),
        "--optical",
        "*_rgb.tif",
        "--dsm",
        "*_dsm.tif",
        "--labels",
        "*_label.tif",
        "--chip-size",
        "32",
        "--stride",
        "32",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "b_label.tif" in err and "(77, 77, 77): 6 px" in err
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []
    (data / "b_label.tif").unlink()
    write_raster(data / "b_label.tif", palette_rgb(np.zeros((64, 64), np.uint8)))
    (data / "b_dsm.tif").write_bytes((data / "b_dsm.tif").read_bytes()[:300])
    assert main(args) == 1
    assert "b_dsm.tif" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    (data / "b_dsm.tif").unlink()
    assert main(args) == 1
    assert "tile 'b': no dsm file" in capsys.readouterr().err
    assert main(["prepare", "folder", "--data-dir", str(data), "--output", str(out), "--optical", "a_rgb.tif"]) == 1


def test_cli_without_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "prepare" in capsys.readouterr().err


def test_prepare_rejects_bad_stride(demo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stride"):
        prepare_dataset("demo", demo_dir, tmp_path / "x", chip_size=64, stride=100)
    assert not (tmp_path / "x").exists()
