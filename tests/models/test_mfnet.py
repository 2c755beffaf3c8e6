"""MFNetForSegmentation: head counts, forward/backward, peft wrapping, adapter folders, Hub upload, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSemanticSegmentation, SamConfig, SamModel

import mfpeft
from mfpeft import MFNetConfig, MFNetForSegmentation
from tests.sam_fixtures import redraw_, tiny_sam_config

TUNERS = {"mmlora": mfpeft.MMLoraConfig, "mmadapter": mfpeft.MMAdapterConfig}
README = Path(__file__).resolve().parents[2] / "README.md"


def tiny_config(modalities=(("optical", 3), ("dsm", 1)), attn: str = "eager", **kwargs: object) -> MFNetConfig:
    return MFNetConfig(vision_config=tiny_sam_config(attn=attn), modalities=modalities, **kwargs)


def inputs(config: MFNetConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(batch, c, 256, 256, generator=generator) for n, c in config.modalities}


def save_native_sam(path: Path, seed: int = 0) -> Path:
    """A tiny full SamModel at SAM's native 1024 input, as a user's local copy of SAM."""
    vision = tiny_sam_config(image_size=1024)
    redraw_(SamModel(SamConfig(vision_config=vision.to_dict())), seed=seed).save_pretrained(path)
    return path


def randomise_(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmlora_" in name or "mmadapter_" in name:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))


def test_reference_head_has_the_spec_parameter_count() -> None:
    with torch.device("meta"):
        model = MFNetForSegmentation(MFNetConfig(vision_config=mfpeft.sam_vision_config("vit-b")))
        head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vision_encoder."))
        assert head == 2_158_238
        peft_model = get_peft_model(model, mfpeft.MMLoraConfig())
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == 1_032_240 + 2_158_238
    assert all("mmlora_" in n or ".modules_to_save." in n for n in trainable)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("use_dfm", [True, False])
@pytest.mark.parametrize(
    "modalities", [(("optical", 3),), (("optical", 3), ("dsm", 1)), (("optical", 3), ("dsm", 1), ("sar", 1))]
)
def test_forward_backward_for_1_2_3_modalities(modalities: tuple, use_dfm: bool, attn: str) -> None:
    config = tiny_config(modalities=modalities, use_dfm=use_dfm, attn=attn)
    model = get_peft_model(MFNetForSegmentation(config), mfpeft.MMLoraConfig(num_modalities=len(modalities)))
    labels = torch.randint(0, 6, (2, 256, 256))
    labels[:, :10] = 255
    out = model(pixel_values=inputs(config), labels=labels)
    assert out.logits.shape == (2, 6, 256, 256)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.base_model.model.vision_encoder.layers[0].layer_norm1.weight.grad is None


def test_loss_is_cross_entropy_ignoring_255() -> None:
    config = tiny_config()
    model = MFNetForSegmentation(config).eval()
    labels = torch.randint(0, 6, (2, 256, 256))
    labels[0] = 255
    out = model(pixel_values=inputs(config), labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[1:], labels[1:])
    torch.testing.assert_close(out.loss, expected)


def test_model_input_scaling_and_one_channel_repeat() -> None:
    config = tiny_config(input_mean={"dsm": [0.5]}, input_std={"dsm": [0.25]})
    model = MFNetForSegmentation(config)
    x = inputs(config)
    stacked = model.stack_modalities(x)
    assert stacked.shape == (4, 3, 256, 256)
    torch.testing.assert_close(stacked[2:], ((x["dsm"] - 0.5) / 0.25).expand(-1, 3, -1, -1))
    torch.testing.assert_close(stacked[:2], x["optical"])


def test_auto_classes_know_mfnet(tmp_path: Path) -> None:
    config = tiny_config()
    config.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MFNetConfig)
    assert isinstance(AutoModelForSemanticSegmentation.from_config(config), MFNetForSegmentation)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"modalities: 'optical' channels=0 must be an integer >= 1 and <= 256"):
        tiny_config(modalities=(("optical", 0),))
    with pytest.raises(ValueError, match=r"name 'a\.b' must be non-empty and without '\.'"):
        tiny_config(modalities=(("a.b", 3),))
    with pytest.raises(ValueError, match="rel_pos='sometimes'"):
        tiny_config(rel_pos="sometimes")
    with pytest.raises(ValueError, match="quarter_norms"):
        tiny_config(quarter_norms=["layernorm"])
    with pytest.raises(ValueError, match="palette"):
        tiny_config(id2label={0: "a", 1: "b"}, palette=[[0, 0, 0]])
    with pytest.raises(ValueError, match="input_std names unknown modalities"):
        tiny_config(input_std={"lidar": [1.0]})
    config = MFNetConfig(vision_config=tiny_sam_config().to_dict())
    assert config.vision_config.hidden_size == 32


def test_bad_inputs_get_clear_errors() -> None:
    config = tiny_config()
    model = MFNetForSegmentation(config)
    x = inputs(config)
    with pytest.raises(ValueError, match=r"missing \['dsm'\]"):
        model(pixel_values={"optical": x["optical"]})
    with pytest.raises(ValueError, match=r"unexpected \['sar'\]"):
        model(pixel_values={**x, "sar": x["dsm"]})
    with pytest.raises(
        ValueError, match=r"pixel_values\['dsm'\] has 3 channels, but the model's modality 'dsm' takes 1"
    ):
        model(pixel_values={**x, "dsm": x["optical"]})
    with pytest.raises(ValueError, match="takes 256x256 chips"):
        model(pixel_values={k: v[..., :128, :128] for k, v in x.items()})
    with pytest.raises(ValueError, match="labels must be"):
        model(pixel_values=x, labels=torch.zeros(2, 128, 128, dtype=torch.long))
    with pytest.raises(ValueError, match="must be a dict"):
        model(pixel_values=torch.rand(2, 3, 256, 256))


def build_trained(tmp_path: Path, tuner: str, seed: int = 0) -> tuple[PeftModel, Path]:
    sam_dir = save_native_sam(tmp_path / "sam-local", seed=seed)
    torch.manual_seed(seed)
    model = MFNetForSegmentation.from_sam(sam_dir, attn_implementation="eager")
    peft_model = get_peft_model(model, TUNERS[tuner]())
    randomise_(peft_model, seed)
    # one training step so the head and BatchNorm statistics differ from initialisation
    peft_model.train()
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.01)
    labels = torch.randint(0, 6, (2, 256, 256))
    peft_model(pixel_values=inputs(model.config), labels=labels).loss.backward()
    optimizer.step()
    return peft_model.eval(), sam_dir


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_save_and_from_pretrained_in_a_fresh_process(tmp_path: Path, tuner: str) -> None:
    peft_model, _ = build_trained(tmp_path, tuner)
    x = inputs(peft_model.base_model.model.config, seed=5)
    with torch.no_grad():
        expected = peft_model(pixel_values=x).logits
    out_dir = tmp_path / "adapter"
    peft_model.save_pretrained(out_dir)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["README.md", "adapter_config.json", "adapter_model.safetensors", "config.json"]
    )
    saved = load_file(out_dir / "adapter_model.safetensors")
    assert not any(k.startswith("base_model.model.vision_encoder.") and f"{tuner}_" not in k for k in saved)
    assert any(".decoder." in k for k in saved) and any(".fusion." in k for k in saved)
    card = (out_dir / "README.md").read_text()
    assert {"impervious_surfaces", "(0, 0, 255)", "dsm", "from_pretrained", "license"} <= {
        w for w in ["impervious_surfaces", "(0, 0, 255)", "dsm", "from_pretrained", "license"] if w in card
    }
    torch.save({"x": x, "y": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from mfpeft import MFNetForSegmentation
        data = torch.load({str(tmp_path / "io.pt")!r})
        model = MFNetForSegmentation.from_pretrained({str(out_dir)!r})
        with torch.no_grad():
            y = model(pixel_values=data["x"]).logits
        assert torch.equal(y, data["y"]), (y - data["y"]).abs().max()
        print("identical")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "identical" in result.stdout, result.stderr[-3000:]


def test_vit_b_mmlora_folder_is_small_and_holds_no_sam_weight(tmp_path: Path) -> None:
    model = MFNetForSegmentation(MFNetConfig(vision_config=mfpeft.sam_vision_config("vit-b")))
    get_peft_model(model, mfpeft.MMLoraConfig()).save_pretrained(tmp_path)
    size = (tmp_path / "adapter_model.safetensors").stat().st_size
    assert size < 15 * 2**20, size
    keys = load_file(tmp_path / "adapter_model.safetensors")
    assert not any(".vision_encoder." in k and "mmlora_" not in k for k in keys)
    weights = {k: v for k, v in keys.items() if "running_" not in k and "num_batches_tracked" not in k}
    assert sum(v.numel() for v in weights.values()) == 1_032_240 + 2_158_238


def test_base_model_override_and_continued_training(tmp_path: Path) -> None:
    peft_model, sam_dir = build_trained(tmp_path, "mmlora")
    out_dir = tmp_path / "adapter"
    peft_model.save_pretrained(out_dir)
    moved = tmp_path / "sam-moved"
    sam_dir.rename(moved)
    with pytest.raises(mfpeft.EncoderLoadError):
        MFNetForSegmentation.from_pretrained(out_dir)
    model = MFNetForSegmentation.from_pretrained(out_dir, base_model=moved, is_trainable=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("mmlora_" in n for n in trainable) and any(".decoder." in n for n in trainable)
    assert not any("vision_encoder" in n and "mmlora_" not in n for n in trainable)


def test_push_to_hub_uploads_exactly_the_four_files(tmp_path: Path, hub_uploads: dict[str, bytes]) -> None:
    peft_model, _ = build_trained(tmp_path, "mmlora")
    uploaded = hub_uploads
    peft_model.push_to_hub("user/mfnet-test", token="hf_fake")
    assert sorted(uploaded) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "config.json"]
    uploaded.clear()
    mfpeft.push_adapter_to_hub(peft_model, "user/mfnet-test", token="hf_fake")
    assert sorted(uploaded) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "config.json"]
    assert b"impervious_surfaces" in uploaded["README.md"]  # our card, not the Hub's generic one


def test_bad_adapter_folders_get_clear_errors(tmp_path: Path) -> None:
    peft_model, _ = build_trained(tmp_path, "mmlora")
    good = tmp_path / "adapter"
    peft_model.save_pretrained(good)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises((ValueError, OSError)):
        MFNetForSegmentation.from_pretrained(empty)

    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    data = (corrupt / "adapter_model.safetensors").read_bytes()
    (corrupt / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or unreadable safetensors"):
        MFNetForSegmentation.from_pretrained(corrupt)

    mislabelled = tmp_path / "mislabelled"
    shutil.copytree(good, mislabelled)
    config = json.loads((mislabelled / "config.json").read_text())
    config["id2label"] = {str(i): f"c{i}" for i in range(7)}
    config["label2id"] = {f"c{i}": i for i in range(7)}
    config["palette"] = None
    (mislabelled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="predicts 6 classes but .* num_labels=7"):
        MFNetForSegmentation.from_pretrained(mislabelled)
    with pytest.raises(ValueError, match="num_labels=7 does not match"):
        MFNetForSegmentation.from_pretrained(good, num_labels=7)

    other_sam = tmp_path / "other-sam"
    vision = tiny_sam_config(image_size=1024, hidden_size=48)
    SamModel(SamConfig(vision_config=vision.to_dict())).save_pretrained(other_sam)
    with pytest.raises(ValueError, match="trained on SAM custom \\(hidden 32"):
        MFNetForSegmentation.from_pretrained(good, base_model=other_sam)

    not_mfnet = tmp_path / "not-mfnet"
    shutil.copytree(good, not_mfnet)
    (not_mfnet / "config.json").unlink()
    with pytest.raises(ValueError, match="not saved from an MFNet model"):
        MFNetForSegmentation.from_pretrained(not_mfnet)


def test_readme_load_and_predict_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's three-line snippet, run verbatim against an adapter saved here (128-pixel chips, as the demo)."""
    model = MFNetForSegmentation.from_sam(save_native_sam(tmp_path / "sam"), image_size=128)
    get_peft_model(model, mfpeft.MMLoraConfig()).save_pretrained(tmp_path / "outputs" / "demo")
    text = README.read_text()
    block = text.split("<!-- snippet:load-and-predict -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code_lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(code_lines) == 3, code_lines
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)
    logits = namespace["logits"]
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 6, 128, 128)


def test_full_checkpoint_round_trip_keeps_input_normalisation(tmp_path: Path) -> None:
    config = tiny_config(input_mean={"dsm": [0.25]}, input_std={"dsm": [0.5]})
    model = MFNetForSegmentation(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MFNetForSegmentation.from_pretrained(tmp_path).eval()
    x = inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
