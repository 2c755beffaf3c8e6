"""Training runs on other encoder families, the Table IV ablation tuners as the authors ran them, --base-model names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import SamVisionModel

import mfpeft
from mfpeft.cli.training import parse_training_arguments
from mfpeft.engine.build import tuner_config
from mfpeft.engine.training import train
from mfpeft.models.encoders import split_random_spec
from tests.smoke import smoke_flags


def _args(tmp_path: Path, *extra: str) -> mfpeft.TrainingArguments:
    return parse_training_arguments([*smoke_flags(), "--output-dir", str(tmp_path / "run"), *extra])


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("tuner", "ablation", "expected", "mlp_scaling"),
    [
        ("lora", "authors", 1_032_192, 0.25),  # MLP LoRA scaled by alpha / r, as the authors' code
        ("lora", "full", 1_032_192, 1.0),
        ("adapter", "authors", 7_100_928, None),  # attention adapters only, as the authors' ablation
        ("adapter", "full", 14_201_856, None),
    ],
)
def test_table_iv_ablation_tuners(
    tmp_path: Path, tuner: str, ablation: str, expected: int, mlp_scaling: float | None
) -> None:
    args = _args(tmp_path, "--tuner", tuner, "--ablation", ablation)
    with torch.device("meta"):
        model = SamVisionModel(mfpeft.sam_vision_config("vit-b"))
    peft_model = get_peft_model(model, tuner_config(args, 2))
    assert _trainable(peft_model) == expected
    if mlp_scaling is not None:
        layer = peft_model.get_submodule("base_model.model.vision_encoder.layers.0.mlp.lin1")
        assert layer.scaling["default"] == mlp_scaling
        qkv = peft_model.get_submodule("base_model.model.vision_encoder.layers.0.attn.qkv")
        assert qkv.scaling["default"] == 0.25  # the attention branch is always alpha / r


def test_random_encoder_names() -> None:
    assert split_random_spec("random:tiny")[0].name == "sam"  # SAM's older form
    assert [
        split_random_spec(s)[0].name for s in ("random:dinov3-small", "random:sam2-tiny", "random:dinov2-reg-base")
    ] == [
        "dinov3",
        "sam2",
        "dinov2-registers",
    ]
    with pytest.raises(ValueError, match=r"'random:vit-x' names no encoder; write random:<family>-<size>"):
        split_random_spec("random:vit-x")
    with pytest.raises(ValueError, match=r"dinov3 sizes are tiny, small, small-plus, base, large"):
        split_random_spec("random:dinov3-huge")
    with pytest.raises(ValueError, match=r"ablation='paper' is not one of \('authors', 'full'\)"):
        _args(Path("."), "--ablation", "paper")


@pytest.mark.parametrize("spec", ["random:dinov3-tiny", "random:sam-hq-tiny"])
def test_training_on_another_family_saves_a_folder_that_reloads(tmp_path: Path, spec: str) -> None:
    result = train(_args(tmp_path, "--base-model", spec))
    out = result.output_dir
    config = json.loads((out / "config.json").read_text())
    family = split_random_spec(spec)[0]
    assert config["vision_config"]["model_type"] == family.model_types[0]
    assert config["encoder_name_or_path"] == "./base-model"
    assert json.loads((out / "adapter_config.json").read_text())["encoder_family"] == family.name
    card = (out / "README.md").read_text()
    assert family.display_name in card and f"license: {family.licence.split()[0]}" in card
    model = mfpeft.MFNetForSegmentation.from_pretrained(out)
    chips = {"optical": torch.rand(1, 3, 64, 64), "dsm": torch.rand(1, 1, 64, 64)}
    with torch.no_grad():
        assert model(pixel_values=chips).logits.shape == (1, 6, 64, 64)


def test_fast_encoder_flags_are_refused_off_sam(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"encoder_dtype='bf16' applies to SAM encoders"):
        train(_args(tmp_path, "--base-model", "random:dinov3-tiny", "--encoder-dtype", "bf16"))
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_encoder_normalisation_is_applied_on_request_and_recorded(tmp_path: Path) -> None:
    from mfpeft.models.encoders import family_named

    dinov3 = family_named("dinov3")
    assert dinov3.normalisation_for("facebook/dinov3-vitl16-pretrain-sat493m")[0] == "sat493m"
    assert dinov3.normalisation_for("facebook/dinov3-vitb16-pretrain-lvd1689m")[0] == "imagenet"
    result = train(_args(tmp_path, "--base-model", "random:dinov3-tiny", "--input-normalisation", "encoder"))
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["input_mean"] == {"optical": [0.485, 0.456, 0.406]}  # the DSM keeps its scaled values
    assert config["input_std"] == {"optical": [0.229, 0.224, 0.225]}
    model = mfpeft.MFNetForSegmentation.from_pretrained(result.output_dir).get_base_model()
    assert torch.allclose(model._std_optical.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    plain = train(_args(tmp_path / "plain", "--base-model", "random:dinov3-tiny"))
    assert json.loads((plain.output_dir / "config.json").read_text())["input_mean"] == {}  # MFNet's default
