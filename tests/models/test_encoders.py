"""Every supported encoder family under MFNet and the multimodal tuners, on tiny random configs.

Per family: the tuners need no argument; MMLoRA at initialisation equals the frozen model (MMAdapter's paper
initialisation is not zero: it equals the frozen model with its adapters switched off); one optimizer step changes
only tuner and head weights; save -> `from_pretrained` in a fresh process gives identical logits; the adapter file
holds no encoder weight; one encoder pass for all modalities keeps samples independent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import ViTConfig

from mfpeft import MFNetConfig, MFNetForSegmentation, MMAdapterConfig, MMLoraConfig
from mfpeft.tuners.mmlora.layer import MMLoraLayer
from tests.encoder_fixtures import FAMILY_NAMES, chip_size, save_tiny_encoder, tiny_encoder, tiny_encoder_config

TUNERS = {"mmlora": MMLoraConfig, "mmadapter": MMAdapterConfig}
LABELS = {0: "a", 1: "b", 2: "c"}


def build(family: str, seed: int = 0) -> MFNetForSegmentation:
    torch.manual_seed(seed)
    return MFNetForSegmentation.from_encoder(tiny_encoder(family, seed), id2label=LABELS).eval()


def chips(family: str, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    size, generator = chip_size(family), torch.Generator().manual_seed(seed)
    return {
        "optical": torch.rand(batch, 3, size, size, generator=generator),
        "dsm": torch.rand(batch, 1, size, size, generator=generator),
    }


def randomise_(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmlora_" in name or "mmadapter_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator) + (0.5 if "lambda" in name else 0))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tuners_need_no_argument_and_start_from_the_frozen_model(family: str) -> None:
    frozen = build(family)
    x = chips(family)
    with torch.no_grad():
        reference = frozen(pixel_values=x).logits
    lora = get_peft_model(build(family), MMLoraConfig()).eval()
    adapter = get_peft_model(build(family), MMAdapterConfig()).eval()
    with torch.no_grad():
        assert torch.equal(lora(pixel_values=x).logits, reference)  # B = 0: exactly the frozen model
        assert not torch.equal(adapter(pixel_values=x).logits, reference)  # the paper's adapter init is not zero
        with adapter.disable_adapter():
            assert torch.equal(adapter(pixel_values=x).logits, reference)
    for model in (lora, adapter):
        tuned = [n for n, p in model.named_parameters() if p.requires_grad and "vision_encoder" in n]
        assert tuned and all(("mmlora_" in n or "mmadapter_" in n) for n in tuned), tuned[:3]
        assert model.peft_config["default"].encoder_family == family


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_step_changes_only_tuner_and_head_weights(family: str) -> None:
    model = get_peft_model(build(family), MMLoraConfig())
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = torch.randint(0, 3, (2, chip_size(family), chip_size(family)))
    model(pixel_values=chips(family), labels=labels).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    head = ("neck", "fusion", "decoder")
    assert changed and all("mmlora_" in n or any(f".{h}." in n for h in head) for n in changed), sorted(changed)[:5]
    assert any("mmlora_" in n for n in changed)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_perturbing_one_sample_of_one_modality_changes_only_that_sample(family: str) -> None:
    model = get_peft_model(build(family), MMLoraConfig()).eval()
    randomise_(model)  # non-zero B and λ: the cross-modal term is live
    x = chips(family, batch=3)
    y = {k: v.clone() for k, v in x.items()}
    y["dsm"][1] += 0.5
    with torch.no_grad():
        a, b = model(pixel_values=x).logits, model(pixel_values=y).logits
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], b[1])


def test_save_and_load_in_a_fresh_process_give_identical_logits(tmp_path: Path) -> None:
    cases = []
    for family in FAMILY_NAMES:
        encoder_dir = save_tiny_encoder(family, tmp_path / f"{family}-encoder")
        for tuner, config_cls in TUNERS.items():
            torch.manual_seed(0)
            model = MFNetForSegmentation.from_encoder(encoder_dir, image_size=chip_size(family), id2label=LABELS)
            peft_model = get_peft_model(model, config_cls()).eval()
            randomise_(peft_model)
            x = chips(family)
            with torch.no_grad():
                logits = peft_model(pixel_values=x).logits
            adapter_dir = tmp_path / f"{family}-{tuner}"
            peft_model.save_pretrained(adapter_dir)
            torch.save({"x": x, "y": logits}, tmp_path / f"{family}-{tuner}.pt")
            saved = load_file(adapter_dir / "adapter_model.safetensors")
            tuner_keys = [k for k in saved if "vision_encoder" in k]
            assert tuner_keys and all(f"{tuner}_" in k for k in tuner_keys), tuner_keys[:3]  # no encoder weight
            assert json.loads((adapter_dir / "adapter_config.json").read_text())["encoder_family"] == family
            card = (adapter_dir / "README.md").read_text()
            assert f", {family}, " in card and "licence of its weights" in card
            cases.append((str(adapter_dir), str(tmp_path / f"{family}-{tuner}.pt")))
    script = textwrap.dedent(
        f"""
        import torch, mfpeft
        for folder, data in {cases!r}:
            data = torch.load(data)
            model = mfpeft.MFNetForSegmentation.from_pretrained(folder)
            with torch.no_grad():
                out = model(pixel_values=data["x"]).logits
            assert torch.equal(out, data["y"]), (folder, (out - data["y"]).abs().max())
        print("identical", len({cases!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and f"identical {len(cases)}" in result.stdout, result.stderr[-2000:]


def test_an_unsupported_family_names_the_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"model_type 'vit' is not a supported encoder; supported families: sam, "):
        MFNetConfig(vision_config=ViTConfig())
    with pytest.raises(ValueError, match=r"'vit' is not a supported encoder"):
        MFNetConfig(vision_config={"model_type": "vit", "hidden_size": 32})


@pytest.mark.parametrize(("family", "size", "message"), [("dinov2", 256, "multiple of 224"), ("dinov3", 80, "of 32")])
def test_a_chip_size_the_encoder_cannot_take_is_refused(family: str, size: int, message: str) -> None:
    config = tiny_encoder_config(family)
    config.image_size = size
    with pytest.raises(ValueError, match=rf"image_size={size}: a .* encoder \(patch \d+\) .*{message}"):
        MFNetConfig(vision_config=config)


def test_an_adapter_of_one_family_is_refused_on_another(tmp_path: Path) -> None:
    dinov2 = save_tiny_encoder("dinov2-registers", tmp_path / "dinov2-registers")
    save_tiny_encoder("dinov2", tmp_path / "dinov2")
    model = get_peft_model(MFNetForSegmentation.from_encoder(dinov2, image_size=224, id2label=LABELS), MMLoraConfig())
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match=r"is DINOv2 tiny, but the adapter .* was trained on DINOv2 with registers"):
        MFNetForSegmentation.from_pretrained(tmp_path / "adapter", base_model=tmp_path / "dinov2")
    with pytest.raises(
        ValueError, match=r"trained on a dinov2-registers encoder, but the base model's encoder is dinov2"
    ):
        get_peft_model(build("dinov2"), MMLoraConfig(encoder_family="dinov2-registers"))


def test_a_gated_mlp_block_cannot_carry_lora() -> None:
    model = build("dinov3")
    with pytest.raises(ValueError, match=r"model\.layer\.0\.mlp is a DINOv3ViTGatedMLP \(a gated MLP block"):
        get_peft_model(model, MMLoraConfig(target_modules=r".*model\.layer\.0\.mlp"))
    lora = get_peft_model(build("dinov3"), MMLoraConfig())
    wrapped = {n.rsplit(".", 1)[-1] for n, m in lora.named_modules() if isinstance(m, MMLoraLayer)}
    assert wrapped == {"q_proj", "v_proj", "up_proj", "down_proj"}  # the gate stays frozen


@pytest.mark.parametrize("family", ["sam2", "dinov3"])
def test_heatmaps_work_on_a_hierarchical_and_a_plain_vit(family: str) -> None:
    from mfpeft.engine.heatmap import activation_heatmaps

    model = get_peft_model(build(family), MMLoraConfig())
    result = activation_heatmaps(model, {k: v[:1] for k, v in chips(family).items()})
    size = chip_size(family)
    assert result.frozen.shape == result.tuned.shape == (2, 3, size, size)
    assert float(result.tuned.min()) >= 0 and float(result.tuned.max()) <= 1
