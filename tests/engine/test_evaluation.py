"""Sliding-window evaluation: equals a naive whole-tile reference; 1 and 2 processes give the same matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model

import mfpeft
from mfpeft.data.geometry import ChipWindow, sliding_chip_windows
from mfpeft.data.raster import TileReader
from mfpeft.data.sources import get_source
from mfpeft.engine.evaluation import evaluate_tiles
from mfpeft.engine.stitching import stitch_in_memory
from mfpeft.metrics.confusion import confusion_matrix
from tests.launch import launch_two_processes
from tests.sam_fixtures import redraw_, tiny_sam_config

CHIP, STRIDE = 64, 48


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = mfpeft.MFNetConfig(vision_config=tiny_sam_config(image_size=CHIP))
    model = mfpeft.MFNetForSegmentation(config)
    redraw_(model.vision_encoder, seed=seed)
    return get_peft_model(model, mfpeft.MMLoraConfig()).eval()


def naive_matrix(model: torch.nn.Module, tiles: list) -> np.ndarray:
    """Read each tile whole, run every window, sum logits in memory, argmax, count against eroded labels."""
    total = np.zeros((6, 6), dtype=np.int64)
    for tile in tiles:
        with TileReader(tile, ["optical", "dsm"], chip_size=CHIP, labels="eroded") as reader:
            whole = reader.read(ChipWindow(0, 0, reader.height, reader.width))
            chips = []
            for window in sliding_chip_windows(reader.height, reader.width, CHIP, STRIDE):
                rows, cols = window.slices
                pixel_values = {k: torch.from_numpy(v[None, :, rows, cols]) for k, v in whole["pixel_values"].items()}
                with torch.no_grad():
                    chips.append((window, model(pixel_values=pixel_values).logits[0]))
            classes, _ = stitch_in_memory(chips, reader.height, reader.width, 6, CHIP)
            total += confusion_matrix(classes, whole["labels"][: reader.height, : reader.width], 6)
    return total


def test_streamed_evaluation_equals_the_naive_reference() -> None:
    tiles = get_source("demo")["validation"]
    model = tiny_model()
    matrix = evaluate_tiles(
        model, tiles, modalities=["optical", "dsm"], num_labels=6, chip_size=CHIP, stride=STRIDE, progress=False
    )
    expected = naive_matrix(model, tiles)
    np.testing.assert_array_equal(matrix.matrix, expected)
    assert matrix.matrix.sum() > 0.8 * 512 * 512  # eroded boundaries are ignored, the rest is counted


def _evaluate_in_process(out_dir: str | Path) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    tiles = get_source("demo")["train"]
    matrix = evaluate_tiles(
        tiny_model(),
        tiles,
        modalities=["optical", "dsm"],
        num_labels=6,
        chip_size=CHIP,
        stride=64,
        accelerator=accelerator,
        progress=False,
    )
    path = Path(out_dir) / f"rank{accelerator.process_index}-of-{accelerator.num_processes}.json"
    path.write_text(json.dumps(matrix.matrix.tolist()))


def test_one_and_two_processes_give_the_identical_matrix(tmp_path: Path) -> None:

    from accelerate.state import AcceleratorState, GradientState

    get_source("demo")  # generate the demo set once, before the processes start
    try:
        _evaluate_in_process(str(tmp_path))
    finally:  # Accelerate keeps process-wide singletons: do not leak this one into other tests
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    launch_two_processes("tests.engine.test_evaluation", "_evaluate_in_process", tmp_path)
    single = json.loads((tmp_path / "rank0-of-1.json").read_text())
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}-of-2.json").read_text()) == single
    assert np.asarray(single).sum() > 0


def test_evaluate_command_scores_a_saved_adapter(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from mfpeft.cli import main
    from mfpeft.cli.training import parse_training_arguments
    from mfpeft.engine.training import train

    args = parse_training_arguments(
        [
            "--preset",
            "demo",
            "--base-model",
            "random:tiny",
            "--chip-size",
            "64",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--eval-stride",
            "64",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    result = train(args)
    code = main(
        [
            "evaluate",
            "--model",
            str(result.output_dir),
            "--dataset",
            "demo",
            "--split",
            "test",
            "--stride",
            "64",
            "--output",
            str(tmp_path / "scores.json"),
        ]
    )
    assert code == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["mean_iou"] == json.loads((result.output_dir / "metrics.json").read_text())["test"]["mean_iou"]
    assert '"mean_iou"' in capsys.readouterr().out
    assert main(["evaluate", "--model", str(tmp_path / "nowhere"), "--dataset", "demo"]) == 1
