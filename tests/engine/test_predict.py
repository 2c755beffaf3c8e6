"""Whole-scene prediction: streamed output equals an in-memory reference, georeferencing, atomic output, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from mfpeft import MFNetConfig, MFNetForSegmentation
from mfpeft.cli import main as cli_main
from mfpeft.common.files import TEMP_MARK
from mfpeft.data.geometry import sliding_chip_windows
from mfpeft.engine.predict import predict_scene
from mfpeft.engine.stitching import stitch_in_memory, window_weights
from tests.rasters import ORIGIN, write_raster, write_scene
from tests.sam_fixtures import redraw_, tiny_sam_config

REPO = Path(__file__).resolve().parents[2]


def tiny_mfnet(seed: int = 0, modalities: list[tuple[str, int]] | None = None) -> MFNetForSegmentation:
    """A tiny random MFNet (2-layer SAM, 16 decoder channels) whose logits vary over the chip.

    ``modalities``: (name, channels) pairs; default optical (3) and dsm (1).
    """
    from mfpeft.data.scaling import default_scaling

    torch.manual_seed(seed)
    extra = {} if modalities is None else {"modalities": [list(m) for m in modalities]}
    # Recorded as training records it (here the paper's scaling, which reference_prediction applies).
    names = [name for name, _ in modalities or [("optical", 3), ("dsm", 1)]]
    extra["input_scaling"] = {name: default_scaling(name).to_dict() for name in names}
    model = MFNetForSegmentation(MFNetConfig(vision_config=tiny_sam_config(), decode_channels=16, **extra))
    redraw_(model.vision_encoder, seed=seed)
    return model.eval()


def save_tiny_model(folder: Path, modalities: list[tuple[str, int]] | None = None) -> Path:
    """:func:`tiny_mfnet` saved as a full MFNet checkpoint folder (what ``mfpeft predict --model`` loads)."""
    from mfpeft.models.sam.loading import save_quietly

    save_quietly(tiny_mfnet(modalities=modalities), folder)
    return folder


def adapter_folder(tmp_path: Path) -> Path:
    """A saved MFNet adapter (MMLoRA + head) over a tiny SAM saved locally at SAM's native 1024 input."""
    from peft import get_peft_model

    import mfpeft
    from tests.models.test_mfnet import save_native_sam

    sam_dir = save_native_sam(tmp_path / "sam-local")
    torch.manual_seed(0)
    model = MFNetForSegmentation.from_sam(sam_dir, attn_implementation="eager", decode_channels=16)
    peft_model = get_peft_model(model, mfpeft.MMLoraConfig())
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


@pytest.fixture(scope="module")
def model() -> MFNetForSegmentation:
    return tiny_mfnet()


def reference_prediction(
    model: MFNetForSegmentation, rasters: dict[str, Path], stride: int, batch_size: int, weights: str = "uniform"
) -> tuple[np.ndarray, np.ndarray]:
    """Read whole rasters, scale as the paper does, run every sliding window, stitch the whole scene at once."""
    with rasterio.open(rasters["optical"]) as src:
        optical_raw = src.read().astype(np.float32)
        nodata = src.nodata
    with rasterio.open(rasters["dsm"]) as src:
        dsm_raw = src.read().astype(np.float32)
    missing = (optical_raw == nodata).all(axis=0)
    optical = np.where(optical_raw == nodata, np.float32(0), optical_raw / np.float32(255.0))
    lo, hi = np.float32(np.nanmin(dsm_raw)), np.float32(np.nanmax(dsm_raw))
    dsm = ((dsm_raw - lo) / (hi - lo)).astype(np.float32)
    dsm = np.where(np.isnan(dsm), np.float32(0), dsm)
    height, width = missing.shape
    size = model.config.image_size
    windows = sliding_chip_windows(height, width, size, stride)

    def chip(image: np.ndarray, window) -> np.ndarray:
        rows, cols = window.slices
        part = image[:, rows, cols]
        return np.pad(part, ((0, 0), (0, size - part.shape[1]), (0, size - part.shape[2])))

    pairs = []
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        pixel_values = {
            "optical": torch.from_numpy(np.stack([chip(optical, w) for w in batch])),
            "dsm": torch.from_numpy(np.stack([chip(dsm, w) for w in batch])),
        }
        with torch.inference_mode():
            logits = model(pixel_values=pixel_values).logits
        pairs.extend(zip(batch, logits))
    class_ids, confidence = stitch_in_memory(
        pairs, height, width, model.config.num_labels, size, weights=window_weights(size, weights)
    )
    class_ids[missing] = 255
    confidence[missing] = 0
    return class_ids, confidence


@pytest.mark.parametrize(
    ("height", "width", "stride", "weights", "prefetch"),
    [
        (300, 310, 100, "uniform", True),  # sizes not divisible by the stride: last window snapped inside
        (200, 150, 64, "uniform", False),  # smaller than a chip along both axes: one padded chip
        (180, 530, 128, "gaussian", True),  # shorter than a chip, several windows across
        (512, 256, 256, "cosine", False),  # exact fit
    ],
)
def test_streamed_prediction_equals_in_memory_reference(
    tmp_path: Path, model: MFNetForSegmentation, height: int, width: int, stride: int, weights: str, prefetch: bool
) -> None:
    rasters = write_scene(tmp_path, height, width)
    out, conf = tmp_path / "labels.tif", tmp_path / "confidence.tif"
    result = predict_scene(
        model,
        rasters,
        out,
        stride=stride,
        batch_size=3,
        weights=weights,
        confidence=conf,
        device="cpu",
        bf16=False,
        prefetch=prefetch,
    )
    expected_ids, expected_conf = reference_prediction(model, rasters, stride, 3, weights)
    with rasterio.open(out) as src:
        got = src.read(1)
    np.testing.assert_array_equal(got, expected_ids)
    with rasterio.open(conf) as src:
        np.testing.assert_allclose(src.read(1), expected_conf, rtol=1e-5, atol=1e-6)
    assert len(np.unique(got[got != 255])) >= 2, "the test model must predict several classes"
    assert sum(result.class_counts.values()) == int((got != 255).sum())
    assert result.chips == len(sliding_chip_windows(height, width, 256, stride))


def test_output_georeferencing_colour_table_names_and_nodata(tmp_path: Path, model: MFNetForSegmentation) -> None:
    rasters = write_scene(tmp_path, 300, 280)
    # The DSM on another grid: 1 m pixels, starting 20 m (40 optical pixels) east and 10 m south of the optical.
    dsm = np.linspace(10, 40, 120 * 140, dtype=np.float32).reshape(1, 120, 140)
    shifted = write_raster(tmp_path / "dsm_1m.tif", dsm, from_origin(ORIGIN[0] + 20, ORIGIN[1] - 10, 1.0, 1.0))
    out = tmp_path / "labels.tif"
    predict_scene(
        model, {"optical": rasters["optical"], "dsm": shifted}, out, stride=128, cog=True, device="cpu", prefetch=True
    )
    with rasterio.open(rasters["optical"]) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
        optical_missing = (src.read() == 0).all(axis=0)
    with rasterio.open(out) as src:
        assert (src.crs, src.transform, (src.height, src.width)) == (crs, transform, shape)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert src.compression is not None and src.profile["tiled"]
        assert src.overviews(1), "a COG has overviews"
        colours = src.colormap(1)
        assert colours[1][:3] == (0, 0, 255) and colours[0][:3] == (255, 255, 255)
        names = json.loads(src.tags()["CLASS_NAMES"])
        assert names[1] == "building" and src.tags(1)["CLASS_3"] == "tree"
        labels = src.read(1)
    assert (labels[optical_missing] == 255).all()
    # Outside the DSM's footprint (rows < 20, cols < 40 and beyond its far edges) there is no prediction.
    assert (labels[:20] == 255).all() and (labels[:, :40] == 255).all()
    assert (labels[260:] == 255).all()
    inside = labels[20:260, 40:280]
    covered = ~optical_missing[20:260, 40:280]
    assert (inside[covered] < 6).all()
    assert not list(tmp_path.glob(f".labels{TEMP_MARK}*")), "no temporary file is left"


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from mfpeft.engine.predict import predict_scene
from tests.engine.test_predict import tiny_mfnet

def progress(done, total):
    print(f"band {{done}}/{{total}}", flush=True)
    time.sleep(60)  # hold the scene half-written until the test kills us

predict_scene(tiny_mfnet(), {rasters!r}, {out!r}, stride=128, batch_size=2, device="cpu", progress=progress)
"""


def test_killed_run_leaves_no_output_and_rerun_completes(tmp_path: Path, model: MFNetForSegmentation) -> None:
    rasters = write_scene(tmp_path, 520, 300)
    out = tmp_path / "labels.tif"
    script = KILL_SCRIPT.format(repo=str(REPO), rasters={k: str(v) for k, v in rasters.items()}, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the first band is written
        assert line.startswith("band "), line
        assert list(tmp_path.glob(f".labels{TEMP_MARK}*.tif")), "the scene is being written to a temporary file"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    stale = list(tmp_path.glob(f".labels{TEMP_MARK}*.tif"))
    assert stale, "SIGKILL cannot clean up; the next run must cope with the stale file"

    model_dir = adapter_folder(tmp_path)
    status = cli_main(
        [
            "predict",
            "--model",
            str(model_dir),
            "--optical",
            str(rasters["optical"]),
            "--dsm",
            str(rasters["dsm"]),
            "--output",
            str(out),
            "--stride",
            "128",
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    with rasterio.open(out) as src:
        assert (src.height, src.width) == (520, 300)
        assert (src.read(1) < 6).any()
    assert not any(p.exists() for p in stale), "the stale temporary file of the dead run is removed"
    assert not list(tmp_path.glob(f".labels{TEMP_MARK}*.tif"))


def test_interrupted_run_removes_its_temporary_file(tmp_path: Path, model: MFNetForSegmentation) -> None:
    rasters = write_scene(tmp_path, 300, 240)
    out = tmp_path / "labels.tif"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_scene(model, rasters, out, stride=128, progress=interrupt, confidence=tmp_path / "c.tif")
    assert not out.exists() and not (tmp_path / "c.tif").exists()
    assert not list(tmp_path.glob(f".*{TEMP_MARK}*"))


def test_bad_input_gets_clear_errors(tmp_path: Path, model: MFNetForSegmentation) -> None:
    rasters = write_scene(tmp_path, 200, 200)
    out = tmp_path / "labels.tif"
    with pytest.raises(ValueError, match=r"expects modalities optical, dsm; no raster was given for dsm; give --"):
        predict_scene(model, {"optical": rasters["optical"]}, out)
    far = write_raster(tmp_path / "far.tif", np.ones((1, 50, 50), np.float32), from_origin(600_000, 5_000_000, 1, 1))
    with pytest.raises(ValueError, match=r"far\.tif.*does not overlap.*rgb\.tif"):
        predict_scene(model, {"optical": rasters["optical"], "dsm": far}, out)
    not_adapter = tmp_path / "not-a-model"
    not_adapter.mkdir()
    (not_adapter / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"not-a-model: not an MFNet adapter folder .*model_type 'bert'"):
        predict_scene(not_adapter, rasters, out)
    with pytest.raises(FileNotFoundError, match=r"missing-folder/labels\.tif: the output folder .* does not exist"):
        predict_scene(model, rasters, tmp_path / "missing-folder" / "labels.tif")
    with pytest.raises(ValueError, match=r"chip_size=512: this model takes 256 x 256 chips only"):
        predict_scene(model, rasters, out, chip_size=512)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tif: file not found \(modality 'dsm'\)"):
        predict_scene(model, {"optical": rasters["optical"], "dsm": tmp_path / "nowhere.tif"}, out)
    four = write_raster(tmp_path / "rgbi.tif", np.ones((4, 200, 200), np.uint8))
    with pytest.raises(ValueError, match=r"rgbi\.tif: modality 'optical' reads 4 band\(s\).*takes 3"):
        predict_scene(model, {"optical": four, "dsm": rasters["dsm"]}, out)
    with pytest.raises(ValueError, match="is one of the input rasters"):
        predict_scene(model, rasters, rasters["dsm"])
    assert not out.exists()
    # The command line reports the same errors in one line and exits with status 1.
    status = cli_main(
        [
            "predict",
            "--model",
            str(not_adapter),
            "--optical",
            str(rasters["optical"]),
            "--dsm",
            str(rasters["dsm"]),
            "--output",
            str(out),
        ]
    )
    assert status == 1


def test_four_band_raster_with_band_selection_and_tta(tmp_path: Path, model: MFNetForSegmentation) -> None:
    rasters = write_scene(tmp_path, 200, 230)
    with rasterio.open(rasters["optical"]) as src:
        rgb = src.read()
    rgbi = write_raster(tmp_path / "rgbi.tif", np.concatenate([rgb, rgb[:1]]), nodata=0)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    predict_scene(model, rasters, a, stride=128, tta=True)
    predict_scene(
        model, {"optical": rgbi, "dsm": rasters["dsm"]}, b, stride=128, tta=True, bands={"optical": (1, 2, 3)}
    )
    with rasterio.open(a) as first, rasterio.open(b) as second:
        np.testing.assert_array_equal(first.read(1), second.read(1))
