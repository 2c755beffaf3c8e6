"""``mfpeft predict`` on two gloo processes and resumed after SIGKILL: the rasters equal one process's, bit for bit.

Two processes (Accelerate's debug launcher) share out the row bands of one scene and the scenes of a scenes
file; a run killed by SIGKILL once its first band is staged, rerun with ``--resume``, continues from the
staged bands; a resume with another stride is refused in one line naming it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import rasterio
import torch

from mfpeft.cli import main as cli_main
from mfpeft.common.files import TEMP_MARK
from mfpeft.engine.predict_job import BAND_GLOB, staging_folder
from tests.engine.test_predict import save_tiny_model
from tests.engine.test_predict_scale import write_scenes_csv
from tests.launch import launch_two_processes
from tests.rasters import write_scene

REPO = Path(__file__).resolve().parents[2]
SCENE_FLAGS = ["--stride", "64", "--batch-size", "3", "--device", "cpu", "--bf16", "off"]
"""1024 x 256 at stride 64 with 256 chips: 13 row bands of one chip each; 3 chips a batch, so a process starting
inside the scene starts at a batch boundary before its first band.

Bit for bit with the same threads per process: torch's CPU kernels round differently with another thread
count (one ulp of the confidence here), so every run of a comparison uses this process's thread count."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict-distributed")
    rasters = write_scene(root / "scene", 1024, 256)
    rows = []
    for k, (height, width) in enumerate([(260, 270), (200, 300), (280, 140)]):
        scene = write_scene(root / "in" / f"s{k}", height, width, seed=k)
        rows.append({"optical": str(scene["optical"]), "dsm": str(scene["dsm"]), "output": f"s{k}.tif"})
    rows[1]["confidence"] = "s1_c.tif"
    rows[1]["probabilities"] = "s1_p.tif"
    for row in rows:
        row.setdefault("confidence", "")
        row.setdefault("probabilities", "")
    scenes = write_scenes_csv(root / "scenes.csv", rows)
    return {**rasters, "scenes": scenes, "model": save_tiny_model(root / "model")}


def scene_argv(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "predict",
        "--model",
        str(inputs["model"]),
        "--optical",
        str(inputs["optical"]),
        "--dsm",
        str(inputs["dsm"]),
        "--output",
        str(out / "labels.tif"),
        "--confidence",
        str(out / "confidence.tif"),
        "--probabilities",
        str(out / "probabilities.tif"),
        *SCENE_FLAGS,
        *extra,
    ]


def scenes_argv(inputs: dict[str, Path], out: Path) -> list[str]:
    argv = ["predict", "--model", str(inputs["model"]), "--scenes", str(inputs["scenes"]), "--output-dir", str(out)]
    # Column sections of 256: the 270 and 300 wide scenes are stitched in two each, shared out like scenes.
    return [*argv, "--stride", "128", "--batch-size", "2", "--device", "cpu", "--bf16", "off", "--section-width", "256"]


def files_of(folder: Path) -> dict[str, Any]:
    """Every file of ``folder`` (hidden ones too) by name: a raster's grid, tags, colour table, mask and pixels
    as bytes (GDAL's block cache may write a tile twice, so equal rasters need not be equal files)."""
    return {p.name: raster_content(p) for p in sorted(folder.iterdir())}


def raster_content(path: Path) -> Any:
    if path.is_dir():
        return "a folder"
    with rasterio.open(path) as src:
        colours = src.colormap(1) if src.dtypes[0] == "uint8" and src.count == 1 else None
        tags = [src.tags(), *(src.tags(b) for b in src.indexes), src.descriptions]
        return (src.profile, tags, colours, src.read().tobytes(), src.read_masks().tobytes())


def run_commands(out_dir: Path) -> None:
    """Each command of ``out_dir/commands.json`` through the CLI; records per process its status, stdout and
    the chips it ran."""
    from mfpeft.engine import predict as predict_module

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    chips, chip_logits = [0], predict_module.chip_logits

    def counting(model: Any, pixel_values: dict[str, torch.Tensor], **options: Any) -> torch.Tensor:
        chips[0] += len(next(iter(pixel_values.values())))
        return chip_logits(model, pixel_values, **options)

    predict_module.chip_logits = counting  # type: ignore[assignment]  # what stitched_bands calls
    records = []
    for argv in json.loads((out_dir / "commands.json").read_text()):
        chips[0], stdout = 0, io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = cli_main(argv)
        records.append({"code": code, "stdout": stdout.getvalue(), "chips": chips[0]})
    (out_dir / f"rank{rank}.json").write_text(json.dumps(records))


@pytest.fixture(scope="module")
def reference(inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One plain process's outputs: ``scene/`` (one scene, every output) and ``scenes/`` (the scenes file)."""
    one = tmp_path_factory.mktemp("one-process")
    for name in ("scene", "scenes"):
        (one / name).mkdir()
    assert cli_main(scene_argv(inputs, one / "scene")) == 0
    assert cli_main(scenes_argv(inputs, one / "scenes")) == 0
    return one


def test_two_processes_write_what_one_process_writes(inputs: dict[str, Path], reference: Path, tmp_path: Path) -> None:
    one, two = reference, tmp_path / "two"
    for name in ("scene", "scenes"):
        (two / name).mkdir(parents=True)
    commands = [scene_argv(inputs, two / "scene"), scenes_argv(inputs, two / "scenes")]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    launch_two_processes("tests.engine.test_predict_distributed", "run_commands", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["code"] for rank in ranks for r in rank] == [0, 0, 0, 0]
    for name in ("scene", "scenes"):
        assert files_of(two / name) == files_of(one / name), name  # bit for bit, and no staging left
    scene, scenes = ([rank[k]["chips"] for rank in ranks] for k in (0, 1))
    assert all(n > 0 for n in scene + scenes), (scene, scenes)  # both processes ran chips of each job
    # Each ran only part of the scene's 13 chips; the windows reaching across the cut ran on both (at stride 64
    # a 256 chip reaches 3 grid rows up), in whole one-process batches (up to 2 more chips at either end).
    assert max(scene) < 13 and 13 <= sum(scene) <= 13 + 3 + 2 * 2
    assert "wrote" in ranks[0][0]["stdout"] and ranks[1][0]["stdout"] == ""  # process 0 reports


def start_killable(inputs: dict[str, Path], out: Path) -> subprocess.Popen[str]:
    """``mfpeft predict --resume`` in a subprocess (this process's thread count: see SCENE_FLAGS)."""
    argv = [sys.executable, "-m", "mfpeft.cli", *scene_argv(inputs, out, "--resume")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads()), "MFPEFT_DEBUG": ""}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_band(staging: Path, child: subprocess.Popen[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not list(staging.glob(BAND_GLOB)):
        if child.poll() is not None:
            pytest.fail(f"predict ended (status {child.returncode}) before a band was staged: {child.communicate()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no staged band in {staging} after {timeout} s")
        time.sleep(0.02)


def test_killed_run_resumes_from_its_staged_bands(
    inputs: dict[str, Path], reference: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    staging = staging_folder(out / "labels.tif")
    child = start_killable(inputs, out)
    try:
        wait_for_band(staging, child)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    done = len(list(staging.glob(BAND_GLOB)))
    assert 1 <= done < 13, "killed part-way"
    assert not (out / "labels.tif").exists()

    capfd.readouterr()
    other = scene_argv(inputs, out, "--resume")
    other[other.index("--stride") + 1] = "128"
    assert cli_main(other) == 1
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stride differs from the interrupted run's (64 then, 128 now)" in lines[0], lines
    assert not (out / "labels.tif").exists() and len(list(staging.glob(BAND_GLOB))) == done  # nothing written

    resumed = scene_argv(inputs, out, "--resume")
    assert cli_main(resumed) == 0
    stdout = capfd.readouterr().out
    assert f"resuming {out / 'labels.tif'}: {done} of 13 row bands already done" in stdout, stdout
    assert files_of(out) == files_of(reference / "scene")  # bit for bit; no staging folder, no temporary left
    assert not list(out.glob(f".*{TEMP_MARK}*"))

    assert cli_main(resumed) == 0  # everything complete: skipped, one line
    assert f"skipped {out / 'labels.tif'}: complete from an earlier run" in capfd.readouterr().out
    assert files_of(out) == files_of(reference / "scene")


def test_interrupt_keeps_the_staged_bands_and_says_how_to_resume(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    staging = staging_folder(out / "labels.tif")
    child = start_killable(inputs, out)
    try:
        wait_for_band(staging, child)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    expected = "mfpeft predict: interrupted by SIGINT; the completed row bands are kept; rerun with --resume to "
    expected += "continue"
    assert lines == [expected], err
    assert child.returncode == 128 + signal.SIGINT
    assert [p.name for p in out.iterdir()] == [staging.name], "no output, no temporary file: only the staging"
    assert list(staging.glob(BAND_GLOB)) and not list(staging.glob(f".*{TEMP_MARK}*"))


def test_a_mosaic_input_has_the_same_fingerprint_in_every_run(tmp_path: Path) -> None:
    """Mosaics (and URLs) are read through a VRT written at a new temporary path each run: resuming compares
    the VRT's content and its tiles, not that path; changing a tile changes the fingerprint."""
    from mfpeft.data.mosaic import materialise_rasters
    from mfpeft.engine.predict_job import _file_stamp
    from tests.engine.test_predict_scale import write_tiles

    scene = write_scene(tmp_path, 64, 80)
    tiles = write_tiles(scene["optical"], tmp_path / "tiles", [0, 30, 64], [0, 80], "rgb")
    stamps = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        local = materialise_rasters({"optical": str(tmp_path / "tiles" / "rgb_*.tif")}, tmp_path / run, "labels")
        stamps.append(_file_stamp(Path(local["optical"])))
    assert stamps[0] == stamps[1]
    os.utime(tiles[1], ns=(1, 1))  # another tile now
    assert _file_stamp(Path(local["optical"])) != stamps[0]


def test_resumed_scenes_file_skips_the_complete_scenes_one_line_each(
    inputs: dict[str, Path], reference: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert cli_main([*scenes_argv(inputs, tmp_path), "--resume"]) == 0  # one process, staged
    assert files_of(tmp_path) == files_of(reference / "scenes")
    (tmp_path / "s1.tif").unlink()  # as if killed before s1 was written (its bands gone too)
    capfd.readouterr()
    summary = tmp_path / "run.json"
    assert cli_main([*scenes_argv(inputs, tmp_path), "--resume", "--summary", str(summary)]) == 0
    lines = [line for line in capfd.readouterr().out.splitlines() if not line.startswith("wrote")]
    assert lines == [f"skipped {tmp_path / name}: complete from an earlier run" for name in ("s0.tif", "s2.tif")]
    run = json.loads(summary.read_text())
    assert [scene["name"] for scene in run["scenes"]] == ["s1"]  # the one predicted; the others listed apart
    assert run["skipped"] == [str(tmp_path / name) for name in ("s0.tif", "s2.tif")]
    assert run["totals"]["scenes"] == 1 and run["totals"]["skipped_scenes"] == 2
    summary.unlink()
    assert files_of(tmp_path) == files_of(reference / "scenes")
