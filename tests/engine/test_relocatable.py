"""A trained model folder names its encoder, not a path of this machine: it loads after a move, a copy or a push."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mfpeft
from mfpeft.cli.training import parse_training_arguments
from mfpeft.engine.build import recorded_base_model
from mfpeft.engine.training import train
from mfpeft.models.adapter_io import push_adapter_to_hub
from tests.smoke import smoke_flags

SMOKE = smoke_flags(steps=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("relocatable") / "run"
    train(parse_training_arguments([*SMOKE, "--output-dir", str(out)]))
    return out


def logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(0)
    pixel_values = {"optical": torch.rand(1, 3, 64, 64), "dsm": torch.rand(1, 1, 64, 64)}
    with torch.no_grad():
        return model(pixel_values=pixel_values).logits  # type: ignore[no-any-return]


def test_config_and_card_hold_no_path_of_this_machine(trained: Path) -> None:
    for name in ("config.json", "README.md", "adapter_config.json"):
        text = (trained / name).read_text()
        assert str(trained.parent) not in text and str(Path.home()) + "/" not in text, name
    assert json.loads((trained / "config.json").read_text())["encoder_name_or_path"] == "./base-model"


def test_a_moved_or_copied_folder_loads_and_predicts_the_same(trained: Path, tmp_path: Path) -> None:
    expected = logits(mfpeft.MFNetForSegmentation.from_pretrained(trained))
    copied = tmp_path / "copy"
    shutil.copytree(trained, copied)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(shutil.copytree(trained, tmp_path / "to-move")), moved)
    for folder in (copied, moved):
        assert torch.equal(logits(mfpeft.MFNetForSegmentation.from_pretrained(folder)), expected)


def test_a_pushed_repo_carries_its_encoder_and_loads(
    trained: Path, tmp_path: Path, hub_uploads: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mfpeft.MFNetForSegmentation.from_pretrained(trained)
    with pytest.raises(ValueError, match=r"carries its encoder in \./base-model/.*base_model_dir"):
        push_adapter_to_hub(model, "user/no-encoder")
    assert not hub_uploads, "a refused push uploads nothing"
    push_adapter_to_hub(model, "user/mfnet", base_model_dir=trained / "base-model")
    repo = tmp_path / "hub-snapshot"
    for name, data in hub_uploads.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(repo))
    assert torch.equal(logits(mfpeft.MFNetForSegmentation.from_pretrained("user/mfnet")), logits(model))


def test_a_folder_without_its_encoder_names_the_fix(trained: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(trained, bare, ignore=shutil.ignore_patterns("base-model"))
    with pytest.raises(OSError, match=r"base-model.*--base-model PATH.*base_model=PATH"):
        mfpeft.MFNetForSegmentation.from_pretrained(bare)
    loaded = mfpeft.MFNetForSegmentation.from_pretrained(bare, base_model=trained / "base-model")
    assert loaded is not None


def test_recorded_base_model_names_the_encoder_not_the_path(tmp_path: Path) -> None:
    assert recorded_base_model("random:tiny") == recorded_base_model("demo:tiny") == "./base-model"
    assert recorded_base_model("facebook/sam-vit-base") == "facebook/sam-vit-base"
    meta = tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    meta.parent.mkdir()
    meta.write_bytes(b"")
    assert recorded_base_model(str(meta)) == "facebook/sam-vit-base"
    folder = tmp_path / "sam-local"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "facebook/sam-vit-large"}))
    assert recorded_base_model(str(folder)) == "facebook/sam-vit-large"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(folder)}))
    assert recorded_base_model(str(folder)) == "sam-local"
