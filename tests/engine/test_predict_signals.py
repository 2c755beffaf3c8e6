"""``mfpeft predict`` stopped part-way: SIGTERM / SIGINT and a full disk leave nothing at the output paths.

The signal tests run the real command in a subprocess (the signal handlers of `mfpeft.errors.run_command`
live in the main thread of the process that receives the signal) and stop it while it is writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from mfpeft.cli import main as cli_main
from mfpeft.common.files import TEMP_MARK
from mfpeft.data import writer as writer_module
from mfpeft.engine import predict as predict_module
from tests.engine.test_predict import save_tiny_model
from tests.rasters import write_scene

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1024 x 1024 scene (169 chips at stride 64: a few seconds of prediction) and a saved tiny model."""
    root = tmp_path_factory.mktemp("predict-signals")
    rasters = write_scene(root, 1024, 1024)
    return {**rasters, "model": save_tiny_model(root / "model")}


def predict_argv(scene: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(scene["model"]),
        "--optical",
        str(scene["optical"]),
        "--dsm",
        str(scene["dsm"]),
        "--output",
        str(output),
        "--device",
        "cpu",
        *extra,
    ]


def wait_for(pattern: str, folder: Path, child: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Until a file matching ``pattern`` exists in ``folder`` (the run is writing), or fail."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        if child.poll() is not None:
            pytest.fail(f"predict ended (status {child.returncode}) before writing: {child.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern} in {folder} after {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_writing_leaves_nothing_and_says_so_in_one_line(
    scene: dict[str, Path], tmp_path: Path, signum: signal.Signals
) -> None:
    output = tmp_path / "labels.tif"
    argv = [sys.executable, "-m", "mfpeft.cli", *predict_argv(scene, output, "--stride", "64", "--batch-size", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MFPEFT_DEBUG": ""}
    child = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f".labels{TEMP_MARK}*.tif", tmp_path, child)
        time.sleep(0.3)  # into the prediction loop, with bands written
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"mfpeft predict: interrupted by {signum.name}; nothing written at {output}"], err
    assert "Traceback" not in err
    assert child.returncode == 128 + signum
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "no output and no temporary file"


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 1 MiB tmpfs (needs root and permission to mount); unmounted afterwards."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True
        )
    except OSError as error:  # no mount command
        pytest.skip(f"cannot mount a small tmpfs: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_is_one_line_with_the_bytes_and_leaves_nothing(
    small_disk: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rasters = write_scene(tmp_path / "scene", 2048, 256)
    model = save_tiny_model(tmp_path / "model")
    output, confidence = small_disk / "labels.tif", small_disk / "confidence.tif"
    argv = [
        "predict",
        "--model",
        str(model),
        "--optical",
        str(rasters["optical"]),
        "--dsm",
        str(rasters["dsm"]),
        "--output",
        str(output),
        "--confidence",
        str(confidence),
        "--device",
        "cpu",
        "--stride",
        "128",
    ]
    capfd.readouterr()
    status = cli_main(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1
    assert len(lines) == 1, err
    need = 2048 * 256 * 5
    assert lines[0].startswith(f"mfpeft predict: error: {output} and {confidence}: not enough disk space: "), lines
    assert f"needs up to {need:,} bytes (2.5 MiB; 2048 x 256 pixels x 5 byte(s), uncompressed)" in lines[0]
    assert f"are free in {small_disk}" in lines[0]
    assert list(small_disk.iterdir()) == [], "no partial output, no temporary file"


def test_full_disk_that_gdal_hits_first_is_reported_the_same(
    small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the check before each band GDAL runs into ENOSPC itself ("Write failed"): same error, no files.
    monkeypatch.setattr(writer_module.DiskSpace, "before_rows", lambda self, rows: None)
    rasters = write_scene(tmp_path / "scene", 2048, 256)
    output = small_disk / "labels.tif"
    with pytest.raises(predict_module.InsufficientSpaceError, match=rf"^{output} and .*: not enough disk space"):
        predict_module.predict_scene(
            save_tiny_model(tmp_path / "model"),
            rasters,
            output,
            confidence=small_disk / "c.tif",
            stride=128,
            device="cpu",
        )
    assert list(small_disk.iterdir()) == []
    with rasterio.open(rasters["dsm"]) as src:  # GDAL still works after the failed write
        assert src.width == 256
