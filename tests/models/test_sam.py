"""Loading SAM encoders from transformers folders and Meta checkpoints, resized to 256."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import SamConfig, SamModel, SamVisionModel

import mfpeft
from mfpeft.models.sam.loading import SamLoadError, convert_meta_state_dict
from tests.sam_fixtures import redraw_


def native_sam(tmp_path: Path) -> tuple[SamModel, Path]:
    """A tiny full SamModel at SAM's native 1024 input, saved by the test itself."""
    vision = mfpeft.sam_vision_config("tiny", image_size=1024)
    model = redraw_(SamModel(SamConfig(vision_config=vision.to_dict())), seed=4)
    path = tmp_path / "sam-native"
    model.save_pretrained(path)
    return model, path


def to_meta_layout(model: SamModel) -> dict[str, torch.Tensor]:
    """Rename an HF SAM state dict to Meta's segment_anything names (written independently of the loader)."""
    renames = {
        "patch_embed.projection.": "patch_embed.proj.",
        "layer_norm1.": "norm1.",
        "layer_norm2.": "norm2.",
        "neck.conv1.": "neck.0.",
        "neck.norm1.": "neck.1.",
        "neck.conv2.": "neck.2.",
        "neck.norm2.": "neck.3.",
    }
    out = {}
    for key, value in model.state_dict().items():
        if not key.startswith("vision_encoder."):
            out["mask_decoder.dummy"] = value  # other parts of a Meta file are ignored
            continue
        new = key.removeprefix("vision_encoder.").replace("layers.", "blocks.")
        for old, repl in renames.items():
            new = new.replace(old, repl)
        out["image_encoder." + new] = value
    return out


def test_native_checkpoint_loads_at_256_with_documented_resize(tmp_path: Path) -> None:
    native, path = native_sam(tmp_path)
    encoder = mfpeft.load_sam_vision_encoder(path, image_size=256)
    assert encoder.config.image_size == 256
    source = native.vision_encoder
    pos = F.interpolate(source.pos_embed.permute(0, 3, 1, 2), size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(encoder.vision_encoder.pos_embed, pos.permute(0, 2, 3, 1))
    for index, layer in enumerate(encoder.vision_encoder.layers):
        table = source.layers[index].attn.rel_pos_h
        if index in encoder.config.global_attn_indexes:
            assert table.shape[0] == 127
            expected = F.interpolate(table.t()[None], size=31, mode="linear")[0].t()
            torch.testing.assert_close(layer.attn.rel_pos_h, expected)
        else:
            torch.testing.assert_close(layer.attn.rel_pos_h, table)
        torch.testing.assert_close(layer.mlp.lin1.weight, source.layers[index].mlp.lin1.weight)
    out = encoder(pixel_values=torch.rand(1, 3, 256, 256)).last_hidden_state
    assert out.shape == (1, 256, 16, 16)


def test_resize_at_load_equals_sam_get_rel_pos_at_forward(tmp_path: Path) -> None:
    """Resizing once equals what SAM's own attention would compute at every forward."""
    native, path = native_sam(tmp_path)
    encoder = mfpeft.load_sam_vision_encoder(path, image_size=256)
    attn = native.vision_encoder.layers[1].attn
    on_the_fly = attn.get_rel_pos(16, 16, attn.rel_pos_h)
    layer = encoder.vision_encoder.layers[1].attn
    torch.testing.assert_close(layer.get_rel_pos(16, 16, layer.rel_pos_h), on_the_fly)


def test_rel_pos_zero_zeroes_and_freezes_every_table(tmp_path: Path) -> None:
    _, path = native_sam(tmp_path)
    encoder = mfpeft.load_sam_vision_encoder(path, rel_pos="zero")
    tables = [p for n, p in encoder.named_parameters() if re.search(r"rel_pos_[hw]$", n)]
    assert len(tables) == 2 * encoder.config.num_hidden_layers
    assert all(not t.requires_grad and not t.any() for t in tables)


def test_vision_model_checkpoint_loads_too(tmp_path: Path) -> None:
    native, _ = native_sam(tmp_path)
    vision = SamVisionModel(native.config.vision_config)
    vision.vision_encoder.load_state_dict(native.vision_encoder.state_dict())
    vision.save_pretrained(tmp_path / "vision")
    encoder = mfpeft.load_sam_vision_encoder(tmp_path / "vision")
    torch.testing.assert_close(encoder.vision_encoder.neck.conv2.weight, native.vision_encoder.neck.conv2.weight)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_meta_checkpoint_converts_to_the_same_weights(tmp_path: Path, suffix: str) -> None:
    native, path = native_sam(tmp_path)
    meta = to_meta_layout(native)
    file = tmp_path / f"sam_vit_tiny{suffix}"
    if suffix == ".pth":
        torch.save(meta, file)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in meta.items()}, str(file))
    from_meta = mfpeft.load_sam_vision_encoder(file).state_dict()
    from_hf = mfpeft.load_sam_vision_encoder(path).state_dict()
    assert from_meta.keys() == from_hf.keys()
    for key in from_hf:
        torch.testing.assert_close(from_meta[key], from_hf[key], rtol=0, atol=0, msg=key)


def test_meta_conversion_names_the_source_on_bad_input() -> None:
    with pytest.raises(SamLoadError, match="model.pth: not a SAM image-encoder checkpoint"):
        convert_meta_state_dict({"image_encoder.foo": torch.zeros(1)}, source="model.pth")


def test_missing_and_corrupt_checkpoints_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SamLoadError, match="not found"):
        mfpeft.load_sam_vision_encoder(tmp_path / "nowhere.pth")
    corrupt = tmp_path / "sam_vit_b.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(SamLoadError, match="sam_vit_b.pth: not a readable PyTorch weights file"):
        mfpeft.load_sam_vision_encoder(corrupt)
    bad_st = tmp_path / "weights.safetensors"
    bad_st.write_bytes(b"\x00\x01garbage")
    with pytest.raises(SamLoadError, match="weights.safetensors: not a readable safetensors file"):
        mfpeft.load_sam_vision_encoder(bad_st)


def test_pickled_objects_are_not_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("executed",))

    file = tmp_path / "evil.pth"
    torch.save({"image_encoder.pos_embed": Evil()}, file)
    with pytest.raises(SamLoadError, match="evil.pth"):
        mfpeft.load_sam_vision_encoder(file)


def test_unreachable_hub_id_says_how_to_pass_a_local_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SamLoadError, match="pass the local folder"):
        mfpeft.load_sam_vision_encoder("facebook/sam-vit-base-not-cached")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size=250"):
        mfpeft.sam_vision_config("vit-b", image_size=250)
    with pytest.raises(ValueError, match="rel_pos='maybe'"):
        mfpeft.load_sam_vision_encoder("x", rel_pos="maybe")  # type: ignore[arg-type]
