"""A third multimodal tuner, defined here and registered through the public API, works end to end with MFNet.

MMBias adds a learned per-modality bias, scaled by a config field, to the attention ``qkv`` and ``proj`` linears of
SAM's encoder. Nothing under mfpeft/ names it: saving, loading, load errors and the model card go through the
tuners' self-description interface (`MultimodalConfig`) and the registry of multimodal peft types.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn

import mfpeft
from mfpeft import MFNetConfig, MFNetForSegmentation
from mfpeft.tuners import (
    ENCODER_LAYER_PATTERN,
    MultimodalConfig,
    MultimodalTuner,
    MultimodalTunerLayer,
    is_multimodal_peft_type,
    register_multimodal_tuner,
    split_modalities,
)
from tests.sam_fixtures import make_tiny_sam

PACKAGE = Path(mfpeft.__file__).parent


@dataclass
class MMBiasConfig(MultimodalConfig):
    """MMBias: ``out_m = W0·x_m + b0 + scale·β_m``, one learned bias β_m (out,) per modality m."""

    scale: float = field(default=1.0, metadata={"help": "factor applied to every learned bias"})
    cross_modal: bool = field(default=False, metadata={"help": "MMBias has no cross-modal term"})

    weight_dimensions: ClassVar[dict[str, tuple[tuple[int, str, str], ...]]] = {
        "mmbias_bias": ((0, "num_modalities", "modalities"),),  # (M, out)
    }
    display_name: ClassVar[str] = "MMBias"

    def describe(self) -> str:
        return f"bias scale {self.scale}"

    def card_description(self) -> str:
        return f"per-modality bias, scale = {self.scale}"


class MMBiasLayer(nn.Module, MultimodalTunerLayer):
    """Wraps an `nn.Linear`; ``mmbias_bias`` (M, out) per adapter name."""

    adapter_layer_names = ("mmbias_bias",)
    other_param_names = ("scale", "num_modalities", "cross_modal")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: MMBiasConfig, module_name: str) -> None:
        super().__init__()
        self._init_multimodal(base_layer, module_name)
        self.mmbias_bias = nn.ParameterDict()
        self.scale: dict[str, float] = {}
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: MMBiasConfig) -> None:
        out_features = self.get_base_layer().out_features
        self.mmbias_bias[adapter_name] = nn.Parameter(torch.zeros(config.num_modalities, out_features))
        self.scale[adapter_name] = config.scale
        self.num_modalities[adapter_name] = config.num_modalities
        self.cross_modal[adapter_name] = False
        self.set_adapter(self.active_adapters)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """x: (M·B, ..., in) modality-major -> (M·B, ..., out)."""
        result = self.base_layer(x, *args, **kwargs)
        for name in self._adapters_to_run():
            streams = split_modalities(result, self.num_modalities[name], self.module_name)  # (M, N, out)
            bias = (self.scale[name] * self.mmbias_bias[name]).to(result.dtype)
            result = (streams + bias[:, None]).reshape(result.shape)
        return result


class MMBiasModel(MultimodalTuner):
    prefix = "mmbias_"
    tuner_layer_cls = MMBiasLayer
    target_module_mapping = {"mfnet": ENCODER_LAYER_PATTERN + r"attn\.(?:qkv|proj)"}

    def _create_new_module(  # type: ignore[override]
        self, peft_config: MMBiasConfig, adapter_name: str, target: nn.Module, key: str
    ) -> nn.Module:
        return MMBiasLayer(target, adapter_name, peft_config, key)


register_multimodal_tuner("MMBIAS", MMBiasConfig, MMBiasModel)


def _inputs(config: MFNetConfig, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(2, c, 256, 256, generator=generator) for n, c in config.modalities}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], torch.Tensor]:
    """A tiny MFNet tuned with MMBias for one optimizer step and saved: (folder, inputs, logits before saving)."""
    root = tmp_path_factory.mktemp("mmbias")
    make_tiny_sam(seed=2).save_pretrained(root / "sam")
    torch.manual_seed(0)
    model = MFNetForSegmentation.from_sam(root / "sam", attn_implementation="eager")
    peft_model = get_peft_model(model, MMBiasConfig(scale=2.0))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(".mmbias_bias." in n for n in trainable)
    assert all(".mmbias_bias." in n or ".modules_to_save." in n for n in trainable), trainable
    with torch.no_grad():  # start from biases at a real scale: zeros would leave the tuner untested
        generator = torch.Generator().manual_seed(3)
        for name, param in peft_model.named_parameters():
            if ".mmbias_bias." in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    peft_model.train()
    labels = torch.randint(0, 6, (2, 256, 256), generator=torch.Generator().manual_seed(1))
    peft_model(pixel_values=_inputs(model.config, seed=0), labels=labels).loss.backward()
    optimizer.step()
    assert all(p.grad is not None for n, p in peft_model.named_parameters() if ".mmbias_bias." in n)
    peft_model.eval()
    x = _inputs(model.config, seed=5)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).logits
    peft_model.save_pretrained(root / "adapter")
    return root / "adapter", x, expected


def test_the_folder_holds_the_four_files_and_the_card_names_the_tuner(saved: tuple) -> None:
    folder, _, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
    ]
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "MMBIAS"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mfnet"
    card = (folder / "README.md").read_text()
    assert "**MMBias** (per-modality bias, scale = 2.0, cross-modal)" not in card  # cross_modal=False
    assert "**MMBias** (per-modality bias, scale = 2.0, per-modality, no cross-modal term)" in card
    assert "tags: [mfpeft, mfnet, remote-sensing, semantic-segmentation, sam, mmbias]" in card


def test_from_pretrained_gives_the_same_logits(saved: tuple) -> None:
    folder, x, expected = saved
    assert is_multimodal_peft_type("MMBIAS")
    model = MFNetForSegmentation.from_pretrained(folder)
    assert isinstance(model, PeftModel) and isinstance(model.peft_config["default"], MMBiasConfig)
    assert model.peft_config["default"].describe() == "bias scale 2.0"
    with torch.no_grad():
        logits = model(pixel_values=x).logits
        assert torch.equal(logits, expected), (logits - expected).abs().max()
        # The loaded biases take part: without them the logits move by far more than rounding.
        for name, param in model.named_parameters():
            if ".mmbias_bias." in name:
                param.zero_()
        without = model(pixel_values=x).logits
    assert (without - expected).abs().max() > 1e-2 * expected.abs().max()


def test_peft_loads_the_folder_onto_mfnet(saved: tuple) -> None:
    folder, x, expected = saved
    config = MFNetConfig.from_pretrained(folder)
    base = MFNetForSegmentation.from_sam(config.sam_name_or_path, config)
    model = PeftModel.from_pretrained(base, folder).eval()
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits, expected)


def test_a_wrong_field_is_named_through_the_interface(saved: tuple, tmp_path: Path) -> None:
    folder, _, _ = saved
    broken = shutil.copytree(folder, tmp_path / "broken")
    settings = json.loads((broken / "adapter_config.json").read_text())
    settings["num_modalities"] = 3
    (broken / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"num_modalities=3 but the saved weights have modalities 2"):
        MFNetForSegmentation.from_pretrained(broken)


def test_no_file_under_mfpeft_names_the_third_tuner() -> None:
    pattern = re.compile(r"mmbias", re.IGNORECASE)
    named = [str(p) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert not named


def test_registration_refuses_a_tuner_whose_prefix_transformers_cannot_find() -> None:
    class Misnamed(MMBiasModel):
        prefix = "bias_"

    with pytest.raises(ValueError, match="prefix='bias_' must be 'mmbias2_'"):
        register_multimodal_tuner("MMBIAS2", MMBiasConfig, Misnamed)
    with pytest.raises(ValueError, match="one of peft's own methods"):
        register_multimodal_tuner("LORA", MMBiasConfig, MMBiasModel)
