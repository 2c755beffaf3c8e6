"""Loading never executes a file, configs refuse bad numbers, and every loading error is one line naming the
file or field, the value and what to do (issue #16, items 4-5)."""

from __future__ import annotations

import json
import math
import pathlib
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file, save_file

import mfpeft
from mfpeft import EncoderLoadError, MFNetConfig, MFNetForSegmentation, MMAdapterConfig, MMLoraConfig, SamLoadError
from mfpeft.cli import main as cli_main
from tests.models.test_mfnet import save_native_sam
from tests.sam_fixtures import tiny_sam_config


class TouchOnUnpickle:
    """A malicious pickle: unpickling it (without weights_only) creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (self.marker,))


def write_malicious_pickle(path: Path, marker: Path) -> Path:
    """Write a torch-style pickle at `path` that would create `marker`, after checking the payload is live."""
    probe = marker.with_name(marker.name + ".probe")
    pickle.loads(pickle.dumps(TouchOnUnpickle(probe)))  # our own payload: prove it runs
    assert probe.exists(), "the payload must really run when unpickled"
    probe.unlink()
    torch.save({"weight": TouchOnUnpickle(marker)}, path)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny SAM folder and an MMLoRA adapter folder saved over it (built once for the module)."""
    root = tmp_path_factory.mktemp("loading")
    sam = save_native_sam(root / "sam")
    torch.manual_seed(0)
    model = MFNetForSegmentation.from_sam(sam, attn_implementation="eager", decode_channels=16)
    get_peft_model(model, MMLoraConfig()).save_pretrained(root / "adapter")
    return {"root": root, "sam": sam, "adapter": root / "adapter"}


def copy_adapter(saved: dict[str, Path], tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(saved["adapter"], folder)
    return folder


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))  # NaN is written as NaN, which json (and transformers) read back


# ---------------------------------------------------------------------------------------------------------------
# Broken folders: each builder returns (--model folder, --base-model or None, marker that must not appear)


def full_checkpoint_with_pickle(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = tmp_path / "full"
    MFNetConfig(vision_config=tiny_sam_config(), decode_channels=16).save_pretrained(folder)
    marker = tmp_path / "pwned-full"
    write_malicious_pickle(folder / "pytorch_model.bin", marker)
    return folder, None, marker


def adapter_with_pickle(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "adapter-bin")
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned-adapter"
    write_malicious_pickle(folder / "adapter_model.bin", marker)
    return folder, None, marker


def meta_pth_with_pickle(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    marker = tmp_path / "pwned-pth"
    return saved["adapter"], write_malicious_pickle(tmp_path / "sam_vit_b.pth", marker), marker


def sam_folder_with_pickle(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    sam = tmp_path / "sam-bin"
    sam.mkdir()
    shutil.copy(saved["sam"] / "config.json", sam / "config.json")
    marker = tmp_path / "pwned-sam"
    write_malicious_pickle(sam / "pytorch_model.bin", marker)
    return saved["adapter"], sam, marker


def adapter_without_decoder(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "no-decoder")
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v for k, v in weights.items() if ".decoder." not in k}, folder / "adapter_model.safetensors")
    return folder, None, None


def adapter_with_wrong_rank(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "rank")
    edit_json(folder / "adapter_config.json", r=8)
    return folder, None, None


def folder_without_adapter_config(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "no-adapter-config")
    (folder / "adapter_config.json").unlink()
    return folder, None, None


def config_with_nan(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "nan-config")
    edit_json(folder / "config.json", decoder_dropout=math.nan)
    return folder, None, None


def adapter_config_with_nan(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "nan-adapter-config")
    edit_json(folder / "adapter_config.json", init_lambda=math.nan)
    return folder, None, None


def base_model_gone(saved: dict[str, Path], tmp_path: Path) -> tuple[Path, Path | None, Path | None]:
    folder = copy_adapter(saved, tmp_path, "gone")
    edit_json(folder / "config.json", encoder_name_or_path=str(tmp_path / "sam-deleted"))
    return folder, None, None


Builder = Callable[[dict[str, Path], Path], tuple[Path, "Path | None", "Path | None"]]


def load(folder: Path, base_model: Path | None) -> object:
    if base_model is not None and base_model.suffix == ".pth":
        return mfpeft.load_sam_vision_encoder(base_model)
    return MFNetForSegmentation.from_pretrained(folder, base_model=base_model)


# ---------------------------------------------------------------------------------------------------------------
# 1. Pickles are never unpickled


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (full_checkpoint_with_pickle, ValueError, r"full/pytorch_model\.bin is a pickle; mfpeft loads only safe"),
        (adapter_with_pickle, ValueError, r"adapter-bin/adapter_model\.bin is a pickle; mfpeft loads only safe"),
        (sam_folder_with_pickle, ValueError, r"sam-bin/pytorch_model\.bin is a pickle; mfpeft loads only safe"),
        (meta_pth_with_pickle, SamLoadError, r"sam_vit_b\.pth: not a readable PyTorch weights file \(Unsupported"),
    ],
    ids=["full-checkpoint", "adapter-bin", "sam-folder-bin", "meta-pth"],
)
def test_malicious_pickle_is_refused_unopened(
    saved: dict[str, Path], tmp_path: Path, build: Builder, error: type[Exception], message: str
) -> None:
    folder, base_model, marker = build(saved, tmp_path)
    with pytest.raises(error, match=message) as caught:
        load(folder, base_model)
    assert marker is not None and not marker.exists(), "the pickle's code ran"
    text = str(caught.value)
    assert "\n" not in text and ("save_pretrained()" in text or "weights_only=True" in text), text


# ---------------------------------------------------------------------------------------------------------------
# 2-4, 6. Folders that do not match their configs, lack a file, or name a base model that is gone


def test_adapter_without_decoder_names_folder_and_part(saved: dict[str, Path], tmp_path: Path) -> None:
    folder, _, _ = adapter_without_decoder(saved, tmp_path)
    with pytest.raises(ValueError, match=r"no-decoder: adapter_model\.safetensors lacks the decoder \(\d+ weights"):
        MFNetForSegmentation.from_pretrained(folder)


def test_rank_mismatch_names_file_field_and_both_values(saved: dict[str, Path], tmp_path: Path) -> None:
    folder, _, _ = adapter_with_wrong_rank(saved, tmp_path)
    with pytest.raises(ValueError, match=r"rank/adapter_config\.json: r=8 but the saved weights have rank 4"):
        MFNetForSegmentation.from_pretrained(folder)


def test_mmadapter_bottleneck_mismatch_names_the_field(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mmadapter"
    model = MFNetForSegmentation.from_sam(saved["sam"], attn_implementation="eager", decode_channels=16)
    get_peft_model(model, MMAdapterConfig()).save_pretrained(folder)
    edit_json(folder / "adapter_config.json", bottleneck_ratio=0.5)
    with pytest.raises(ValueError, match=r"adapter_config\.json: bottleneck_ratio=0\.5 but .* bottleneck width 8"):
        MFNetForSegmentation.from_pretrained(folder)


def test_folder_without_adapter_config_says_what_a_model_folder_holds(saved: dict[str, Path], tmp_path: Path) -> None:
    folder, _, _ = folder_without_adapter_config(saved, tmp_path)
    with pytest.raises(ValueError, match=r"no-adapter-config: not an mfpeft model folder .*adapter_config\.json") as e:
        MFNetForSegmentation.from_pretrained(folder)
    assert "holds config.json, adapter_config.json and adapter_model.safetensors" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty: not an mfpeft model folder \(no adapter_config\.json nor config"):
        MFNetForSegmentation.from_pretrained(empty)


def test_gone_base_model_names_the_override(saved: dict[str, Path], tmp_path: Path) -> None:
    folder, _, _ = base_model_gone(saved, tmp_path)
    with pytest.raises(EncoderLoadError, match=r"gone/config\.json: the base model it records .*sam-deleted") as e:
        MFNetForSegmentation.from_pretrained(folder)
    assert "--base-model" in str(e.value) and "base_model=" in str(e.value)
    assert isinstance(e.value, OSError)  # the command line's one-line error path
    assert MFNetForSegmentation.from_pretrained(folder, base_model=saved["sam"]) is not None


# ---------------------------------------------------------------------------------------------------------------
# 5. Configs refuse non-finite and out-of-range numbers, naming field and value


def mfnet(**kwargs: object) -> MFNetConfig:
    return MFNetConfig(vision_config=tiny_sam_config(), **kwargs)


def mfnet_vision(**kwargs: object) -> MFNetConfig:
    return MFNetConfig(vision_config={**tiny_sam_config().to_dict(), **kwargs})


NAN, INF = math.nan, math.inf
BAD_VALUES = [
    (MMLoraConfig, "init_lambda", NAN),
    (MMLoraConfig, "init_lambda", INF),
    (MMLoraConfig, "init_lambda", 1.5),
    (MMLoraConfig, "init_lambda", -0.1),
    (MMLoraConfig, "init_lambda", "0.5"),
    (MMLoraConfig, "r", 0),
    (MMLoraConfig, "r", 2.5),
    (MMLoraConfig, "r", True),
    (MMLoraConfig, "alpha", NAN),
    (MMLoraConfig, "alpha", 0),
    (MMLoraConfig, "alpha", -INF),
    (MMLoraConfig, "num_modalities", 0),
    (MMLoraConfig, "num_modalities", 2.0),
    (MMLoraConfig, "encoder_hidden_size", 0),
    (MMLoraConfig, "encoder_num_layers", NAN),
    (MMLoraConfig, "scale_mlp", "yes"),
    (MMAdapterConfig, "bottleneck_ratio", NAN),
    (MMAdapterConfig, "bottleneck_ratio", 0),
    (MMAdapterConfig, "bottleneck_ratio", 5),
    (MMAdapterConfig, "bottleneck_ratio", "0.25"),
    (MMAdapterConfig, "init_lambda", NAN),
    (mfnet, "decoder_dropout", NAN),
    (mfnet, "decoder_dropout", 1.0),
    (mfnet, "decoder_dropout", -0.1),
    (mfnet, "decoder_dropout", "0.1"),
    (mfnet, "decode_channels", 0),
    (mfnet, "decode_channels", 16.5),
    (mfnet, "decode_channels", True),
    (mfnet, "decoder_window_size", 0),
    (mfnet, "semantic_loss_ignore_index", 2),
    (mfnet, "semantic_loss_ignore_index", NAN),
    (mfnet_vision, "image_size", 100),
    (mfnet_vision, "image_size", -32),
    (mfnet_vision, "layer_norm_eps", NAN),
    (mfnet_vision, "attention_dropout", 1.5),
    (mfnet_vision, "global_attn_indexes", [5]),
    (mfnet_vision, "hidden_size", 0),
    (mfnet_vision, "hidden_size", 1.5),
]


@pytest.mark.parametrize(("make", "field", "value"), BAD_VALUES, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_bad_numbers_are_refused_naming_field_and_value(make: Callable[..., object], field: str, value: object) -> None:
    with pytest.raises(ValueError) as caught:
        make(**{field: value})
    text = str(caught.value)
    assert field in text and repr(value) in text, text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_mean": {"dsm": [NAN]}}, r"input_mean\['dsm'\]=nan must be a finite number"),
        ({"input_std": {"dsm": [0.0]}}, r"input_std\['dsm'\]=0\.0 must be a finite number > 0"),
        ({"input_std": {"dsm": [-1.0]}}, r"input_std\['dsm'\]=-1\.0"),
        ({"input_std": {"dsm": [INF]}}, r"input_std\['dsm'\]=inf"),
        ({"input_mean": {"dsm": ["high"]}}, r"input_mean\['dsm'\]=\['high'\] must be a list of numbers"),
        ({"palette": [[0, 0, 0.5]] * 6}, r"palette=\[0, 0, 0\.5\] must be a list of whole numbers"),
        ({"palette": [[0, 0, 256]] * 6}, r"palette needs 6 RGB colours in 0-255"),
        ({"score_classes": [9]}, r"score_classes=\[9\] must index the 6 labels"),
        ({"score_classes": [NAN]}, r"score_classes=\[nan\]"),
        ({"modalities": [["optical", NAN]]}, r"modalities: 'optical' channels=\[nan\]"),
    ],
)
def test_bad_mfnet_list_values_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mfnet(**kwargs)


def test_bottleneck_too_narrow_for_the_encoder_is_named() -> None:
    from tests.sam_fixtures import make_tiny_sam

    with pytest.raises(ValueError, match=r"bottleneck_ratio=0\.01 leaves no bottleneck for .* of width 32"):
        get_peft_model(make_tiny_sam(), MMAdapterConfig(bottleneck_ratio=0.01))


def test_bounds_themselves_are_accepted() -> None:
    assert MMLoraConfig(init_lambda=0).init_lambda == 0 and MMLoraConfig(init_lambda=1.0).init_lambda == 1.0
    assert MMAdapterConfig(bottleneck_ratio=4).bottleneck_ratio == 4
    assert mfnet(decoder_dropout=0, semantic_loss_ignore_index=-100).decoder_dropout == 0
    assert mfnet(input_mean={"dsm": [np.float32(-3.5)]}, score_classes=[np.int64(4)]).input_mean == {"dsm": [-3.5]}


def test_tampered_config_files_are_named(saved: dict[str, Path], tmp_path: Path) -> None:
    folder, _, _ = config_with_nan(saved, tmp_path)
    with pytest.raises(ValueError, match=r"nan-config/config\.json: decoder_dropout=nan must be a finite number"):
        MFNetForSegmentation.from_pretrained(folder)
    folder, _, _ = adapter_config_with_nan(saved, tmp_path)
    with pytest.raises(ValueError, match=r"nan-adapter-config/adapter_config\.json: init_lambda=nan must be"):
        MFNetForSegmentation.from_pretrained(folder)
    typo = copy_adapter(saved, tmp_path, "typo")
    vision = json.loads((typo / "config.json").read_text())["vision_config"]
    edit_json(typo / "config.json", vision_config={**vision, "hidden_size": "32"})
    with pytest.raises(ValueError, match=r"typo/config\.json: vision_config: .*hidden_size"):
        MFNetForSegmentation.from_pretrained(typo)


# ---------------------------------------------------------------------------------------------------------------
# The command line: each broken folder is exit status 1 and exactly one line on stderr


def write_rasters(folder: Path) -> list[str]:
    import rasterio
    from rasterio.transform import from_origin

    args = []
    for name, bands, dtype in (("optical", 3, np.uint8), ("dsm", 1, np.float32)):
        path = folder / f"{name}.tif"
        profile = {
            "driver": "GTiff",
            "height": 64,
            "width": 64,
            "count": bands,
            "dtype": np.dtype(dtype).name,
            "crs": "EPSG:32632",
            "transform": from_origin(500_000, 5_400_000, 0.5, 0.5),
        }
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.ones((bands, 64, 64), dtype))
        args += [f"--{name}", str(path)]
    return args


CLI_CASES = [
    (full_checkpoint_with_pickle, "pytorch_model.bin is a pickle"),
    (adapter_with_pickle, "adapter_model.bin is a pickle"),
    (meta_pth_with_pickle, "sam_vit_b.pth: not a readable PyTorch weights file"),
    (sam_folder_with_pickle, "pytorch_model.bin is a pickle"),
    (adapter_without_decoder, "lacks the decoder"),
    (adapter_with_wrong_rank, "r=8 but the saved weights have rank 4"),
    (folder_without_adapter_config, "not an mfpeft model folder"),
    (config_with_nan, "config.json: decoder_dropout=nan"),
    (adapter_config_with_nan, "adapter_config.json: init_lambda=nan"),
    (base_model_gone, "--base-model"),
]


@pytest.mark.parametrize(("build", "expected"), CLI_CASES, ids=[b.__name__ for b, _ in CLI_CASES])
def test_command_line_reports_one_line(
    saved: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    build: Builder,
    expected: str,
) -> None:
    monkeypatch.delenv("MFPEFT_DEBUG", raising=False)
    folder, base_model, marker = build(saved, tmp_path)
    argv = ["predict", "--model", str(folder), *write_rasters(tmp_path), "--output", str(tmp_path / "out.tif")]
    argv += ["--device", "cpu"] + (["--base-model", str(base_model)] if base_model is not None else [])
    capsys.readouterr()
    status = cli_main(argv)
    err = capsys.readouterr().err
    assert status == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.startswith("mfpeft predict: error: ") and expected in err, err
    assert marker is None or not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out.tif").exists()
