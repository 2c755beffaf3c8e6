"""Scaling is part of the model: every command takes the same --scaling, the raw -> input scaling is recorded once
(model config.json, prepared data set) and evaluate / predict read rasters exactly as training did (issue #12 item 1).

Trainings stop once the model is built (its ``input_scaling`` is what config.json records): the recorded value is
all these tests need, and a full tiny run costs ~20 s on 2 busy cores.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mfpeft import MFNetConfig, MFNetForSegmentation
from mfpeft.cli import main as cli_main
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources import get_source
from mfpeft.engine import training
from tests.rasters import write_raster
from tests.sam_fixtures import redraw_, tiny_sam_config
from tests.smoke import smoke_flags

CHIP = 64
SMOKE = smoke_flags(chip=CHIP)
RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train.py"


def write_folder(root: Path) -> Path:
    """train/a, train/b and test/c, 128 x 128: uint16 reflectance (3 bands), float32 heights, ISPRS palette labels."""
    from mfpeft.data.palette import ISPRS_PALETTE

    rng = np.random.default_rng(0)
    for split, names in (("train", ("a", "b")), ("test", ("c",))):
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            classes = rng.integers(0, 6, (128, 128))
            write_raster(
                root / split / f"{name}_label.tif",
                np.asarray(ISPRS_PALETTE, np.uint8)[classes].transpose(2, 0, 1).copy(),
            )
            write_raster(root / split / f"{name}_rgb.tif", rng.gamma(4.0, 500.0, (3, 128, 128)).astype(np.uint16))
            write_raster(root / split / f"{name}_dsm.tif", rng.normal(100, 5, (1, 128, 128)).astype(np.float32))
    return root


def folder_flags(root: Path) -> list[str]:
    return ["--data-dir", str(root), "--optical", "*_rgb.tif", "--dsm", "*_dsm.tif", "--labels", "*_label.tif"]


def save_model(folder: Path, input_scaling: dict[str, Scaling | dict[str, Any]] | None) -> Path:
    """A tiny random MFNet (optical 3, dsm 1, 64² chips) saved as a full checkpoint, recording ``input_scaling``
    (a dict value: as a config.json holds it)."""
    from mfpeft.models.sam.loading import save_quietly

    torch.manual_seed(0)
    recorded = {m: s if isinstance(s, dict) else s.to_dict() for m, s in (input_scaling or {}).items()}
    model = MFNetForSegmentation(
        MFNetConfig(vision_config=tiny_sam_config(image_size=CHIP), decode_channels=16, input_scaling=recorded)
    )
    redraw_(model.vision_encoder, seed=0)
    save_quietly(model.eval(), folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("scaling-recorded") / "data")


@pytest.fixture(scope="module")
def model_dir(data: Path) -> Path:
    # "fixed": how configs before issue #12 spelled a range; they still load.
    return save_model(
        data.parent / "model",
        {"optical": {"mode": "fixed", "low": 0.0, "high": 5000.0}, "dsm": {"mode": "minmax_tile"}},
    )


class Reached(Exception):
    """Raised by the spies once they have seen what they wait for: the rest of the command is not needed."""


def spy_on_chip_readers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Scaling]]:
    """Record the raw -> input scaling of the first reader that reads chips (has a chip size), then stop."""
    seen: list[dict[str, Scaling]] = []
    original = TileReader.__init__

    def spy(self: TileReader, tile: Any, *args: Any, **kwargs: Any) -> None:
        original(self, tile, *args, **kwargs)
        if kwargs.get("chip_size") is not None:
            seen.append(dict(self.scaling))
            self.close()
            raise Reached

    monkeypatch.setattr(TileReader, "__init__", spy)
    return seen


def spy_on_recorded_scaling(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the ``input_scaling`` training writes into the model's config (build_model), then stop."""
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, input_scaling: Any, **kwargs: Any) -> None:
        seen.append(json.loads(json.dumps(dict(input_scaling))))
        raise Reached

    monkeypatch.setattr(training, "build_model", spy)
    return seen


def run_recipe(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("recipe_train", RECIPE)
    assert spec is not None and spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    return int(recipe.main())


COMMANDS = ("prepare", "train", "recipe", "evaluate", "predict", "heatmap")
MODES = (
    "divide",
    "divide:10000",
    "linear:0.0000275,-0.2",
    "range:0,3000",
    "stats",
    "stats:5,95",
    "minmax_tile",
    "minmax_chip",
    "zscore",
    "percentile:1,99",
    "none",
)


def command_argv(command: str, data: Path, model_dir: Path, out: Path) -> list[str]:
    test = data / "test"
    scene = ["--optical", str(test / "c_rgb.tif"), "--dsm", str(test / "c_dsm.tif"), "--device", "cpu"]
    return {
        "prepare": [
            "prepare",
            "folder",
            *folder_flags(data),
            "--output",
            str(out / "chips"),
            "--chip-size",
            "64",
            "--stride",
            "64",
        ],
        "train": ["train", *SMOKE, "--output-dir", str(out / "run"), "--dataset", "folder", *folder_flags(data)],
        "recipe": [*SMOKE, "--output-dir", str(out / "run"), "--dataset", "folder", *folder_flags(data)],
        "evaluate": [
            "evaluate",
            "--model",
            str(model_dir),
            "--dataset",
            "folder",
            *folder_flags(data),
            "--stride",
            "64",
            "--device",
            "cpu",
        ],
        "predict": ["predict", "--model", str(model_dir), *scene, "--output", str(out / "labels.tif")],
        "heatmap": ["heatmap", "--model", str(model_dir), *scene, "--output", str(out / "heatmap.png")],
    }[command]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_passes_the_scaling_option_to_the_reader(
    command: str,
    mode: str,
    data: Path,
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = spy_on_chip_readers(monkeypatch)
    argv = [*command_argv(command, data, model_dir, tmp_path), "--scaling", f"optical={mode}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # evaluate / predict say that this is not what the model was trained with
        status = run_recipe(monkeypatch, argv) if command == "recipe" else cli_main(argv)
    err = capsys.readouterr().err
    if mode.startswith("stats") and command in ("predict", "heatmap"):
        # Statistics of training tiles: a scene alone has none. An error, not the scene's own statistics.
        text = Scaling.parse(mode).describe()
        assert status == 1 and not seen and f"--scaling optical={text}: " in err and "training tiles" in err, err
        return
    assert status == 1 and len(seen) == 1, err  # stopped by the spy at the first chip reader
    got = seen[0]["optical"]
    if mode.startswith("stats"):
        # Resolved once over the training tiles (also for evaluate: over the source's train split).
        low, high = (5.0, 95.0) if mode == "stats:5,95" else (2.0, 98.0)
        assert got.mode == "range" and len(got.low) == 3 and len(got.high) == 3, got  # type: ignore[arg-type]
        assert got.resolved_from == f"stats:{low:g},{high:g} over 2 training tiles"
    else:
        assert got == Scaling.parse(mode)


def test_train_records_the_scaling_flag_in_the_model(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(a) ``train --scaling optical=percentile`` used to be ignored: uint16 divided by 255, ``divide`` recorded."""
    seen = spy_on_recorded_scaling(monkeypatch)
    argv = ["train", *SMOKE, "--output-dir", str(tmp_path / "run"), "--dataset", "folder", *folder_flags(data)]
    assert cli_main([*argv, "--scaling", "optical=percentile"]) == 1 and len(seen) == 1
    assert seen[0]["optical"]["mode"] == "percentile"
    assert seen[0]["dsm"]["mode"] == "range"  # the default for new data, resolved to concrete numbers
    assert len(seen[0]["dsm"]["low"]) == 1 and seen[0]["dsm"]["resolved_from"] == "stats:2,98 over 2 training tiles"
    assert cli_main([*argv, "--scaling", "optical=linear:abc"]) == 1 and len(seen) == 1


def test_a_bad_scaling_is_one_line_naming_the_option_and_value(
    data: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in COMMANDS:
        argv = [*command_argv(command, data, model_dir, tmp_path), "--scaling", "optical=linear:abc"]
        status = run_recipe(monkeypatch, argv) if command == "recipe" else cli_main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert status == 1 and len(lines) == 1, (command, lines)
        assert ": error: --scaling optical=linear:abc: linear needs SCALE,OFFSET" in lines[0], (command, lines)
    assert cli_main([*command_argv("predict", data, model_dir, tmp_path), "--scaling", "sar=none"]) == 1
    assert "--scaling names modality 'sar'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared(data: Path) -> Path:
    out = data.parent / "prepared"
    assert (
        cli_main(
            ["prepare", "folder", *folder_flags(data), "--output", str(out), "--chip-size", "64", "--stride", "64"]
        )
        == 0
    )
    return out


def prepared_scaling(prepared: Path) -> dict[str, Scaling]:
    import datasets

    meta = json.loads(datasets.load_from_disk(str(prepared))["train"].info.description)["mfpeft"]
    assert meta["scaled"] is True
    return {m: Scaling.from_dict(s) for m, s in meta["scaling"].items()}


def test_training_on_a_prepared_set_records_the_raw_scaling_and_predict_reads_rasters_the_same(
    data: Path, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(b) a model trained on a prepared set recorded ``none``, so predict on raw GeoTIFFs fed raw values."""
    seen = spy_on_recorded_scaling(monkeypatch)
    assert (
        cli_main(
            ["train", *SMOKE, "--output-dir", str(tmp_path / "run"), "--dataset", "hf", "--data-dir", str(prepared)]
        )
        == 1
    )
    recorded = {m: Scaling.from_dict(s) for m, s in seen[0].items()}
    assert recorded == prepared_scaling(prepared) and recorded["optical"].mode == "range"
    # The model reads a raw GeoTIFF into exactly the chip the prepared set stores for it.
    raw = get_source("folder", data, modalities={"optical": "*_rgb.tif", "dsm": "*_dsm.tif"})["test"][0]
    with TileReader(raw, scaling=recorded, labels="none") as reader:
        chip = reader.read(ChipWindow(0, 0, CHIP, CHIP))["pixel_values"]
    row = get_source("hf", prepared)["test"][0]
    for m in ("optical", "dsm"):
        np.testing.assert_array_equal(chip[m], np.asarray(row.modalities[m]()), err_msg=m)
    # Training on a prepared set with another --scaling would scale it twice: refused.
    capsys.readouterr()
    assert (
        cli_main(
            [
                "train",
                *SMOKE,
                "--output-dir",
                str(tmp_path / "run2"),
                "--dataset",
                "hf",
                "--data-dir",
                str(prepared),
                "--scaling",
                "optical=divide",
            ]
        )
        == 1
    )
    assert len(seen) == 1 and "modality 'optical' is prepared: its values are already scaled with range:[" in (
        capsys.readouterr().err
    )


def test_evaluate_on_raw_tiles_and_on_the_same_tiles_prepared_is_equal(
    data: Path, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """(b) evaluate --dataset hf applied the model's scaling on top of the stored, already scaled values."""
    model = save_model(tmp_path / "model", prepared_scaling(prepared))
    inputs: dict[str, list[torch.Tensor]] = {"raw": [], "hf": []}
    original = MFNetForSegmentation.forward
    current: list[str] = []

    def record(self: MFNetForSegmentation, pixel_values: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        inputs[current[0]].append(torch.cat([pixel_values["optical"], pixel_values["dsm"]], dim=1).clone())
        return original(self, pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(MFNetForSegmentation, "forward", record)
    scores = {}
    for name, source in (
        ("raw", ["--dataset", "folder", *folder_flags(data)]),
        ("hf", ["--dataset", "hf", "--data-dir", str(prepared)]),
    ):
        current[:] = [name]
        out = tmp_path / f"{name}.json"
        assert (
            cli_main(
                [
                    "evaluate",
                    "--model",
                    str(model),
                    *source,
                    "--split",
                    "test",
                    "--stride",
                    "64",
                    "--batch-size",
                    "1",
                    "--device",
                    "cpu",
                    "--output",
                    str(out),
                ]
            )
            == 0
        )
        scores[name] = json.loads(out.read_text())
    assert "warning" not in capsys.readouterr().err
    assert len(inputs["raw"]) == len(inputs["hf"]) == 4
    for a, b in zip(inputs["raw"], inputs["hf"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the identical model input
    assert scores["raw"]["confusion_matrix"] == scores["hf"]["confusion_matrix"]
    assert scores["raw"]["mean_iou"] == scores["hf"]["mean_iou"]
    # A model that expects another scaling than the set was prepared with: an error, not a second scaling.
    other = save_model(tmp_path / "other", {"optical": Scaling("divide"), "dsm": Scaling("minmax_tile")})
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(other),
                "--dataset",
                "hf",
                "--data-dir",
                str(prepared),
                "--split",
                "test",
                "--stride",
                "64",
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "is prepared: its values are already scaled with range:" in capsys.readouterr().err


def test_evaluate_and_predict_share_one_fallback_for_a_model_without_recorded_scaling(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(c) evaluation fell back to the source's default, prediction to the paper's: two answers for one model."""
    from mfpeft.data import scaling as scaling_module
    from mfpeft.engine import evaluation, predict

    assert not hasattr(evaluation, "model_scaling") and not hasattr(predict, "model_scalings")
    assert evaluation.model_input_scaling is predict.model_input_scaling is scaling_module.model_input_scaling
    config = MFNetConfig(vision_config=tiny_sam_config(image_size=CHIP))
    with pytest.warns(UserWarning) as record:
        fallback = scaling_module.model_input_scaling(config)
    assert [str(w.message).split(";")[:2] for w in record] == [
        ["the model records no input scaling for modality 'optical'", " reading it with divide:255 (the paper's"],
        ["the model records no input scaling for modality 'dsm'", " reading it with minmax_tile (the paper's"],
    ]
    assert fallback == {"optical": Scaling("divide"), "dsm": Scaling("minmax_tile")}
    model = save_model(tmp_path / "old-model", None)
    seen: list[dict[str, Scaling]] = []
    with pytest.MonkeyPatch.context() as patch:
        seen = spy_on_chip_readers(patch)
        cli_main(command_argv("evaluate", data, model, tmp_path))
        cli_main(command_argv("predict", data, model, tmp_path))
    assert seen == [fallback, fallback]  # folder tiles default to stats; the model's fallback wins in both
    err = capsys.readouterr().err
    assert err.count("records no input scaling for modality 'optical'") == 2


def test_predict_warns_when_the_scene_lies_outside_the_trained_range(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_model(
        tmp_path / "uint8-model",
        {"optical": {"mode": "divide", "divisor": 255.0}, "dsm": {"mode": "fixed", "low": 0.0, "high": 50.0}},
    )
    test = data / "test"
    scene = ["--optical", str(test / "c_rgb.tif"), "--dsm", str(test / "c_dsm.tif"), "--device", "cpu"]
    status = cli_main(["predict", "--model", str(model), *scene, "--output", str(tmp_path / "labels.tif")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert status == 0
    optical = [line for line in lines if "modality 'optical'" in line]
    dsm = [line for line in lines if "modality 'dsm'" in line]
    assert len(optical) == 1 and len(dsm) == 1, lines
    assert "c_rgb.tif" in optical[0] and "band 1 (" in optical[0] and "band 3 (" in optical[0]
    assert "outside 0..255" in optical[0] and "divide:255" in optical[0]
    assert "band 1 (100.0 %)" in dsm[0] and "outside 0..50" in dsm[0]
    # In range: no warning.
    fine = save_model(
        tmp_path / "fine-model",
        {"optical": {"mode": "divide", "divisor": 20000.0}, "dsm": {"mode": "fixed", "low": 50.0, "high": 150.0}},
    )
    assert cli_main(["predict", "--model", str(fine), *scene, "--output", str(tmp_path / "fine.tif")]) == 0
    assert "warning" not in capsys.readouterr().err
