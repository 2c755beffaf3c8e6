"""Quick-look previews and the Fig. 11 heatmaps: produced, of the expected size, and not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from peft import get_peft_model

import mfpeft
from mfpeft.engine.heatmap import activation_heatmaps, heatmap_figure
from mfpeft.engine.predict import predict_scene
from mfpeft.engine.preview import colourise, write_preview
from tests.engine.test_predict import tiny_mfnet, write_raster, write_scene

PALETTE = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
NAMES = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]


def distinct_colours(image: np.ndarray) -> set[tuple[int, ...]]:
    rgb = (image[..., :3] * 255).round().astype(np.uint8) if image.dtype != np.uint8 else image[..., :3]
    return {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}


def test_colourise_maps_ids_to_palette_and_nodata_to_transparent() -> None:
    ids = np.array([[0, 1], [5, 255]], dtype=np.uint8)
    rgba = colourise(ids, PALETTE)
    assert rgba.shape == (2, 2, 4)
    assert tuple(rgba[0, 1]) == (0, 0, 255, 255) and tuple(rgba[1, 0]) == (255, 0, 0, 255)
    assert rgba[1, 1, 3] == 0


def test_preview_with_legend_alone_and_beside_the_inputs(tmp_path: Path) -> None:
    labels = np.repeat(np.arange(6, dtype=np.uint8), 50)[None, :].repeat(200, axis=0)
    labels[:20] = 255
    label_path = write_raster(tmp_path / "labels.tif", labels[None], nodata=255)
    rasters = write_scene(tmp_path / "scene", 200, 300)
    alone = write_preview(label_path, tmp_path / "alone.png", class_names=NAMES, palette=PALETTE)
    beside = write_preview(
        label_path,
        tmp_path / "beside.png",
        class_names=NAMES,
        palette=PALETTE,
        optical=rasters["optical"],
        dsm=rasters["dsm"],
        title="demo",
    )
    small, large = imread(alone), imread(beside)
    assert small.shape[0] >= 300 and small.shape[1] >= 500
    assert large.shape[1] > 2 * small.shape[1] - 200, "three panels are wider than one"
    colours = distinct_colours(small)
    for colour in PALETTE:
        assert colour in colours, f"class colour {colour} missing from the preview"
    assert len(distinct_colours(large)) > 200, "the optical and DSM panels add many colours"
    assert not list(tmp_path.glob(".*.png")), "no temporary file is left"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_preview(label_path, tmp_path / "nowhere" / "p.png", class_names=NAMES, palette=PALETTE)


def test_predict_scene_writes_a_preview(tmp_path: Path) -> None:
    rasters = write_scene(tmp_path, 200, 220)
    result = predict_scene(tiny_mfnet(), rasters, tmp_path / "labels.tif", preview=tmp_path / "quicklook.png")
    assert result.preview == tmp_path / "quicklook.png"
    image = imread(result.preview)
    assert image.shape[0] > 200 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05


@pytest.fixture(scope="module")
def peft_model() -> torch.nn.Module:
    model = get_peft_model(tiny_mfnet(), mfpeft.MMLoraConfig())
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmlora_" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model.eval()


def test_activation_heatmaps_shapes_ranges_and_frozen_vs_tuned(peft_model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    pixel_values = {"optical": torch.rand(1, 3, 256, 256, generator=generator), "dsm": torch.rand(1, 1, 256, 256)}
    result = activation_heatmaps(peft_model, pixel_values, classes=[1, 3])
    assert result.frozen.shape == result.tuned.shape == (2, 2, 256, 256)
    assert result.class_names == ["building", "tree"] and result.modalities == ["optical", "dsm"]
    for maps in (result.frozen, result.tuned):
        assert maps.min() >= 0 and maps.max() <= 1
        assert (maps.amax(dim=(-2, -1)) > 0).any()
    assert not torch.allclose(result.frozen, result.tuned), "switching the tuner off changes the features"
    # The tuned view is what the model predicts: its head output from the tuned features.
    with torch.no_grad():
        logits = peft_model(pixel_values=pixel_values).logits
    assert torch.equal(result.tuned_prediction, logits[0].argmax(0))
    with pytest.raises(ValueError, match="must carry a tuner"):
        activation_heatmaps(tiny_mfnet(), pixel_values)
    with pytest.raises(ValueError, match=r"classes \[9\]"):
        activation_heatmaps(peft_model, pixel_values, classes=[9])


def test_heatmap_figure_from_a_scene(tmp_path: Path, peft_model: torch.nn.Module) -> None:
    rasters = write_scene(tmp_path, 300, 280)
    path, result = heatmap_figure(peft_model, rasters, tmp_path / "fig11.png", classes=["building", "2"], row=10)
    assert result.classes == [1, 2]
    image = imread(path)
    # 2 class rows x (2 inputs + 2 frozen + 2 tuned) columns of about 2.2 inches at 100 dpi.
    assert image.shape[0] >= 400 and image.shape[1] >= 1200
    assert len(distinct_colours(image)) > 100, "jet-coloured heatmaps and the inputs, not a blank figure"
    with pytest.raises(ValueError, match=r"class 'roads' is not one of the model's classes"):
        heatmap_figure(peft_model, rasters, tmp_path / "x.png", classes=["roads"])
