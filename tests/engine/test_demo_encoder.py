"""The demo encoder: a tiny SAM pre-trained on the demo's optical chips, deterministic and cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mfpeft
from mfpeft.engine import build, demo_encoder
from mfpeft.engine.demo_encoder import DemoPretrainingConfig, demo_encoder_dir, pretrain_demo_encoder
from mfpeft.models.sam.loading import random_sam_vision_model

SMALL = DemoPretrainingConfig(steps=4, batch_size=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "vit-xl"),
        ("image_size", 100),
        ("steps", 0),
        ("batch_size", -1),
        ("learning_rate", 0.0),
        ("mask_ratio", 1.0),
        ("weight_decay", -1.0),
        ("visible_weight", -0.5),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DemoPretrainingConfig(**{field: value})  # type: ignore[arg-type]


def test_pretraining_is_deterministic_and_moves_the_weights() -> None:
    first, losses = pretrain_demo_encoder(SMALL)
    second, again = pretrain_demo_encoder(SMALL)
    assert losses == again and len(losses) == SMALL.steps
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    untouched = random_sam_vision_model("tiny", image_size=128, seed=SMALL.seed)
    moved = first.vision_encoder.patch_embed.projection.weight - untouched.vision_encoder.patch_embed.projection.weight
    assert moved.abs().max() > 1e-4
    assert first.name_or_path == "demo:tiny" and not first.training


@pytest.mark.slow
def test_default_pretraining_learns_without_collapsing() -> None:
    encoder, losses = pretrain_demo_encoder(DemoPretrainingConfig())
    # The zero head starts at the centred targets' variance (~0.0125); measured: ~0.0053 after 150 steps.
    assert sum(losses[-10:]) / 10 < 0.6 * losses[0], losses[::10]
    chips = demo_encoder._random_chips(demo_encoder._training_images(0), 16, 128, torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = encoder(pixel_values=chips).last_hidden_state
    # Not collapsed to one vector: each neck channel still varies across chips and positions (measured 0.56;
    # a random-head run collapses to ~0.015).
    assert float(features.std(dim=(0, 2, 3)).mean()) > 0.2


def test_pretraining_reads_only_the_optical_training_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds: list[int] = []
    import mfpeft.data.demo as demo

    original = demo.make_demo_scene

    def spy(size: int = 512, seed: int = 0) -> demo.DemoScene:
        seeds.append(seed)
        return original(size=64, seed=seed)

    monkeypatch.setattr(demo, "make_demo_scene", spy)
    images = demo_encoder._training_images(data_seed=3)
    assert seeds == [3000 + i for i in demo.DEMO_SPLITS["train"]]
    assert images.shape == (len(demo.DEMO_SPLITS["train"]), 3, 64, 64)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_cache_is_built_once_and_loads_at_any_chip_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = demo_encoder_dir(SMALL, cache_dir=tmp_path)
    assert (folder / "COMPLETE").is_file() and folder.parent == tmp_path
    assert len((folder / "pretraining_loss.txt").read_text().split()) == SMALL.steps
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind

    def must_not_run(config: DemoPretrainingConfig | None = None) -> None:
        raise AssertionError("the cached encoder was pre-trained again")

    monkeypatch.setattr(demo_encoder, "pretrain_demo_encoder", must_not_run)
    assert demo_encoder_dir(SMALL, cache_dir=tmp_path) == folder
    encoder = mfpeft.load_sam_vision_encoder(folder, image_size=256)
    assert tuple(encoder.vision_encoder.pos_embed.shape) == (1, 16, 16, 96)  # type: ignore[union-attr]
    out = encoder(pixel_values=torch.rand(1, 3, 256, 256)).last_hidden_state
    assert out.shape == (1, 256, 16, 16) and torch.isfinite(out).all()


def test_training_factory_writes_the_demo_encoder_beside_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MFPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "DemoPretrainingConfig", lambda size, data_seed: SMALL)
    build.write_generated_base_model("demo:tiny", 128, tmp_path / "run", seed=42)
    source = build.base_model_source("demo:tiny", tmp_path / "run")
    assert Path(source) == (tmp_path / "run" / "base-model").resolve()
    cached = mfpeft.load_sam_vision_encoder(demo_encoder_dir(SMALL, cache_dir=tmp_path / "cache"), image_size=128)
    written = mfpeft.load_sam_vision_encoder(source, image_size=128)
    for (name, a), (_, b) in zip(cached.state_dict().items(), written.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="demo:huge"):
        build.write_generated_base_model("demo:huge", 128, tmp_path / "run", seed=42)
