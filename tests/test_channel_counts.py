"""Any channel count per modality: the trainable input stem, and a 13-band Sentinel-2 + 2-band SAR scene end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from peft import get_peft_model
from rasterio.transform import from_origin

from mfpeft import MFNetConfig, MFNetForSegmentation, MMLoraConfig
from mfpeft.cli import main
from mfpeft.models.input_stem import InputStem
from tests.rasters import write_raster
from tests.sam_fixtures import make_tiny_sam

LABELS = {0: "a", 1: "b", 2: "c"}


def _model(modalities: list[tuple[str, int]], seed: int = 0) -> MFNetForSegmentation:
    sam = make_tiny_sam(seed=seed, image_size=64)
    torch.manual_seed(seed)
    config = MFNetConfig(vision_config=sam.config, modalities=modalities, id2label=LABELS)
    return MFNetForSegmentation.from_sam(sam, config).eval()


def test_the_stem_starts_as_today_for_3_and_1_bands_and_continues_them() -> None:
    x = torch.rand(2, 13, 8, 8)
    four, two = InputStem(4), InputStem(2)
    assert torch.equal(four(x[:, :4]), x[:, :3])  # the first three bands pass through, the fourth starts at 0
    torch.testing.assert_close(two(x[:, :2]), x[:, :2].mean(1, keepdim=True).expand(-1, 3, -1, -1))
    # a 4-band model at init is the 3-band model on the first three bands
    chips = {"optical": torch.rand(2, 4, 64, 64), "dsm": torch.rand(2, 1, 64, 64)}
    with torch.no_grad():
        four_band = _model([("optical", 4), ("dsm", 1)])(pixel_values=chips).logits
        three_band = _model([("optical", 3), ("dsm", 1)])(
            pixel_values={"optical": chips["optical"][:, :3], "dsm": chips["dsm"]}
        ).logits
    assert torch.equal(four_band, three_band)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 13])
def test_each_channel_count_trains_a_step_and_round_trips(tmp_path: Path, channels: int) -> None:
    modalities = [("optical", 3), ("extra", channels)]
    sam = make_tiny_sam(image_size=64)
    sam.save_pretrained(tmp_path / "sam")
    model = MFNetForSegmentation.from_encoder(
        tmp_path / "sam", image_size=64, modalities=modalities, id2label=LABELS, attn_implementation="eager"
    )
    peft_model = get_peft_model(model, MMLoraConfig())
    chips = {"optical": torch.rand(2, 3, 64, 64), "extra": torch.rand(2, channels, 64, 64)}
    peft_model.train()
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    peft_model(pixel_values=chips, labels=torch.randint(0, 3, (2, 64, 64))).loss.backward()
    optimizer.step()
    stems = [n for n, p in peft_model.named_parameters() if "input_stem_extra" in n and p.requires_grad]
    assert bool(stems) == (channels not in (1, 3))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = MFNetForSegmentation.from_pretrained(tmp_path / "adapter")
    peft_model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=chips).logits, peft_model(pixel_values=chips).logits)
    with pytest.raises(ValueError, match=rf"pixel_values\['extra'\] has {channels + 1} channels, but the model's "):
        loaded(pixel_values={**chips, "extra": torch.rand(2, channels + 1, 64, 64)})


def _write_scene(root: Path) -> dict[str, Path]:
    """13-band uint16 Sentinel-2 reflectance (10 m), a 2-band float32 SAR backscatter in dB on a 20 m grid offset by
    half a pixel, and uint8 class codes."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    size, pixel = 256, 10.0
    yy, xx = np.mgrid[0:size, 0:size]
    region = (yy // 32 + xx // 32) % 3
    s2 = np.stack([1000 + 400 * b + 900 * region + rng.integers(0, 300, (size, size)) for b in range(13)])
    grid = from_origin(400_000.0, 5_000_000.0, pixel, pixel)
    paths = {"s2": write_raster(root / "t1_s2.tif", s2.astype(np.uint16), transform=grid, nodata=0)}
    sar = np.stack([-15 + 4 * region[::2, ::2] + rng.normal(0, 1, (128, 128)) for _ in range(2)]).astype(np.float32)
    offset = from_origin(400_000.0 + 5.0, 5_000_000.0 - 5.0, 2 * pixel, 2 * pixel)
    paths["sar"] = write_raster(root / "t1_sar.tif", sar, transform=offset)
    paths["labels"] = write_raster(root / "t1_label.tif", region.astype(np.uint8)[None], transform=grid)
    return paths


def test_sentinel2_and_sar_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _write_scene(tmp_path / "data")
    run = tmp_path / "run"
    data = ["--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--optical", "*_s2.tif"]
    data += ["--modality", "sar=*_sar.tif", "--labels", "*_label.tif", "--split-blocks", "validation=0.25,test=0.25"]
    data += ["--block-size", "128"]
    flags = ["--base-model", "random:tiny", "--chip-size", "64", "--max-steps", "2", "--batch-size", "2"]
    flags += ["--eval-stride", "64", "--optimizer", "adamw", "--learning-rate", "1e-3", "--output-dir", str(run)]
    assert main(["train", *flags, *data]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["modalities"] == [["optical", 13], ["sar", 2]]
    output = tmp_path / "labels.tif"
    argv = ["predict", "--model", str(run), "--optical", str(paths["s2"]), "--modality", f"sar={paths['sar']}"]
    assert main([*argv, "--output", str(output), "--device", "cpu"]) == 0
    with rasterio.open(output) as out, rasterio.open(paths["s2"]) as ref:
        assert (out.width, out.height, out.transform, out.crs) == (ref.width, ref.height, ref.transform, ref.crs)
        classes = out.read(1)
        assert set(np.unique(classes)) <= {0, 1, 2, 255}  # 255: the border the half-pixel-offset SAR leaves uncovered
        assert (classes != 255).mean() > 0.95
    capsys.readouterr()
    with rasterio.open(paths["sar"]) as sar:
        three = write_raster(tmp_path / "sar3.tif", np.concatenate([sar.read(), sar.read(1)[None]]), sar.transform)
    bad = ["predict", "--model", str(run), "--optical", str(paths["s2"]), "--modality", f"sar={three}"]
    assert main([*bad, "--output", str(tmp_path / "bad.tif")]) != 0
    error = capsys.readouterr().err
    assert "sar" in error and "3" in error and "2" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "bad.tif").exists()
    prepared = tmp_path / "prepared"
    source = [a for a in data if a not in ("--dataset", "folder")]
    assert main(["prepare", "folder", *source, "--output", str(prepared), "--chip-size", "64", "--stride", "64"]) == 0
    from datasets import load_from_disk

    train_split = load_from_disk(str(prepared))["train"]
    assert np.asarray(train_split[0]["optical"]).shape[0] == 13 and np.asarray(train_split[0]["sar"]).shape[0] == 2
