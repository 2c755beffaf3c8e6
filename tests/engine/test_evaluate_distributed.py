"""``mfpeft evaluate`` on two processes: each reads about half the windows, the scores equal one process's bit
for bit, and the report is printed and written once."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfpeft.data.sources import get_source
from mfpeft.engine import evaluation
from mfpeft.engine.evaluation import _cuts, _reach, _shares
from tests.launch import launch_two_processes

CHIP, STRIDE, BATCH = 64, 48, 4
"""Overlapping windows (stride < chip), so a cut inside a tile runs the overlap again; a batch size that does
not divide a grid row, so that re-run starts at a batch boundary inside a grid row. The demo test tile is
512 x 512: an 11 x 11 grid of 121 windows."""
TEST_WINDOWS = 121


def save_adapter(root: Path) -> Path:
    """An MMLoRA adapter + head over a tiny SAM (saved locally) resized to CHIP, as ``mfpeft evaluate`` loads."""
    from peft import get_peft_model

    import mfpeft
    from tests.models.test_mfnet import save_native_sam

    sam_dir = save_native_sam(root / "sam")
    torch.manual_seed(0)
    model = mfpeft.MFNetForSegmentation.from_sam(
        sam_dir, attn_implementation="eager", decode_channels=16, image_size=CHIP
    )
    get_peft_model(model, mfpeft.MMLoraConfig()).save_pretrained(str(root / "adapter"))
    return root / "adapter"


def evaluate_command(out_dir: Path) -> None:
    """``mfpeft evaluate`` through the CLI; records, per process, the windows read, the stdout and the writes."""
    from mfpeft import cli
    from mfpeft.common import files as reports  # the JSON writer the command calls
    from mfpeft.data.raster import TileReader

    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else evaluation._env_int(["RANK"], 0)
    chips, pooled, writes = [0], [], []
    read, write_json, evaluate_tiles = TileReader.read, reports.write_json, evaluation.evaluate_tiles

    def counting_read(self: TileReader, window: Any) -> dict[str, Any]:
        chips[0] += window.height == CHIP and window.width == CHIP  # labels are read in full-width bands
        return read(self, window)

    def recording_evaluate(*args: Any, **kwargs: Any) -> Any:
        matrix = evaluate_tiles(*args, **kwargs)
        pooled.append(list(matrix.windows_read))
        return matrix

    def recording_write(path: Path, data: Any, **options: Any) -> None:
        writes.append(str(path))
        write_json(path, data, **options)

    TileReader.read = counting_read  # type: ignore[method-assign]
    reports.write_json = recording_write  # type: ignore[assignment]
    evaluation.evaluate_tiles = recording_evaluate  # type: ignore[assignment]
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            code = cli.main(
                [
                    "evaluate",
                    "--model",
                    str(out_dir / "adapter"),
                    "--dataset",
                    "demo",
                    "--split",
                    "test",
                    "--stride",
                    str(STRIDE),
                    "--batch-size",
                    str(BATCH),
                    "--device",
                    "cpu",
                    "--output",
                    str(out_dir / "report" / "scores.json"),
                ]
            )
    finally:
        TileReader.read, reports.write_json, evaluation.evaluate_tiles = read, write_json, evaluate_tiles  # type: ignore[method-assign]
    record = {"code": code, "chips": chips[0], "windows_read": pooled, "writes": writes, "stdout": stdout.getvalue()}
    (out_dir / "ranks").mkdir(exist_ok=True)
    (out_dir / "ranks" / f"rank{rank}.json").write_text(json.dumps(record))


def test_two_processes_share_the_windows_and_report_once(tmp_path: Path) -> None:
    get_source("demo")  # generate the demo set once, before the processes start
    save_adapter(tmp_path)
    (tmp_path / "report").mkdir()
    evaluate_command(tmp_path)  # one plain process: the reference
    one = json.loads((tmp_path / "ranks" / "rank0.json").read_text())
    expected = json.loads((tmp_path / "report" / "scores.json").read_text())
    assert one["code"] == 0 and one["chips"] == TEST_WINDOWS and one["windows_read"] == [[TEST_WINDOWS]]
    (tmp_path / "report" / "scores.json").unlink()

    launch_two_processes("tests.engine.test_evaluate_distributed", "evaluate_command", tmp_path)
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["code"] for r in ranks] == [0, 0]
    assert json.loads((tmp_path / "report" / "scores.json").read_text()) == expected  # bit for bit
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["scores.json"]  # no copy, no .tmp left
    assert [len(r["writes"]) for r in ranks] == [1, 0]
    assert json.loads(ranks[0]["stdout"])["mean_iou"] == expected["mean_iou"] and ranks[1]["stdout"] == ""
    chips = [r["chips"] for r in ranks]
    assert ranks[0]["windows_read"] == ranks[1]["windows_read"] == [chips]  # every process knows both counts
    # About half each: the overlap at the cut (one grid row of 11 windows) and a partial batch are run twice.
    assert TEST_WINDOWS <= sum(chips) <= TEST_WINDOWS + 11 + 2 * BATCH
    assert all(0.4 * TEST_WINDOWS <= n <= 0.6 * TEST_WINDOWS for n in chips), chips


def test_cuts_prefer_tile_boundaries_and_cover_every_band_once() -> None:
    equal = [(_reach(512, 64, 32), 15)] * 4  # 4 tiles of 15 bands, no tile needs cutting
    assert _cuts(equal, 2) == [0, 30, 60]
    assert _shares(equal, 1, 2) == [(2, range(15)), (3, range(15))]
    one_tile = [(_reach(512, 256, 32), 9)]  # 9 bands; a cut inside re-runs up to 7 grid rows
    assert _cuts(one_tile, 2) == [0, 8, 9]  # 8 grid rows each: what the overlap allows
    mixed = [(_reach(h, 64, 48), w) for h, w in ((512, 11), (130, 3), (700, 15), (64, 1))]
    for world in (1, 2, 3, 5):
        bands = [(i, k) for r in range(world) for i, share in _shares(mixed, r, world) for k in share]
        assert bands == [(i, k) for i, (reach, _) in enumerate(mixed) for k in range(len(reach))]
    assert np.all(np.diff(_cuts(mixed, 5)) >= 0)
