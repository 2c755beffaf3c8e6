"""Training says what it is about to learn from: splits, scaling, the value range the model sees, and scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfpeft.cli import main as cli_main
from mfpeft.data.palette import ISPRS_PALETTE
from tests.smoke import smoke_flags

from ..rasters import write_raster

SMOKE = smoke_flags(steps=1)


def write_uint16_folder(root: Path) -> Path:
    """Landsat-like uint16 reflectance (7,000..12,000), a float DSM and palette labels; a train and a test tile."""
    rng = np.random.default_rng(0)
    for split, name in (("train", "a"), ("test", "b")):
        (root / split).mkdir(parents=True)
        classes = rng.integers(0, 6, (96, 96))
        write_raster(
            root / split / f"{name}_label.tif", np.asarray(ISPRS_PALETTE, np.uint8)[classes].transpose(2, 0, 1).copy()
        )
        write_raster(root / split / f"{name}_rgb.tif", rng.integers(7000, 12000, (3, 96, 96)).astype(np.uint16))
        write_raster(root / split / f"{name}_dsm.tif", rng.normal(250, 5, (1, 96, 96)).astype(np.float32))
    return root


def folder(root: Path) -> list[str]:
    return [
        "--dataset",
        "folder",
        "--data-dir",
        str(root),
        "--optical",
        "*_rgb.tif",
        "--dsm",
        "*_dsm.tif",
        "--labels",
        "*_label.tif",
    ]


def test_the_run_summarises_its_data_and_warns_about_a_saturated_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_uint16_folder(tmp_path / "data")
    argv = ["train", *SMOKE, "--output-dir", str(tmp_path / "run"), *folder(root), "--scaling", "optical=divide"]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "Data: train 1 tile (0.01 MP, 1,200 random chips an epoch); test 1 tile (0.01 MP, 4 windows" in out
    assert "Scaling: optical divide:255 -> [" in out and "; dsm " in out
    assert "Training labels: 1 tiles, 9,216 px (0.0 % ignored)" in out
    warned = [line for line in err.splitlines() if line.startswith("mfpeft train: warning: optical band")]
    assert len(warned) == 3 and "100.0 % of the sampled values are at or beyond 0 or 1" in warned[0]
    assert "Scores: test mIoU" in out


def test_a_well_scaled_input_gets_no_saturation_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_uint16_folder(tmp_path / "data")
    argv = ["train", *SMOKE, "--output-dir", str(tmp_path / "run"), *folder(root), "--scaling", "optical=percentile"]
    assert cli_main(argv) == 0
    assert "saturated" not in capsys.readouterr().err
