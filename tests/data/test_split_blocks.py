"""Splits inside a scene (--split-blocks): seeded, disjoint blocks; training chips stay in train blocks; records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio import Affine

from mfpeft.cli import main as cli_main
from mfpeft.data.datasets import RandomChipDataset, SlidingWindowDataset
from mfpeft.data.geometry import ChipWindow, block_windows, intersect_windows
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources import get_source
from mfpeft.data.tile import Tile
from tests.rasters import write_raster

HEIGHT, WIDTH, BLOCK, CHIP = 200, 230, 64, 32
CLASSES = "ground,roof,water"
RAW = {"optical": Scaling("none"), "dsm": Scaling("none")}


def write_scenes(folder: Path) -> Path:
    """Two scenes s1, s2: RGB uint8 optical, float DSM, index labels 0/1, class 2 (water) only in s1's first block."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for k, name in enumerate(("s1", "s2")):
        optical = np.stack([(xx + 7 * k) % 251, yy % 251, (xx + yy) % 251]).astype(np.uint8) + 1
        write_raster(folder / f"{name}_rgb.tif", optical)
        write_raster(folder / f"{name}_dsm.tif", (10 + k + np.sin(xx / 9.0) + yy / 50.0)[None].astype(np.float32))
        labels = ((xx // 40 + yy // 40) % 2).astype(np.uint8)
        if name == "s1":
            labels[10:20, 10:20] = 2
        write_raster(folder / f"{name}_label.tif", labels[None])
    return folder


def options(**extra: object) -> dict[str, object]:
    return {
        "modalities": {"optical": "*_rgb.tif", "dsm": "*_dsm.tif"},
        "labels": "*_label.tif",
        "label_kind": "index",
        "classes": CLASSES.split(","),
        **extra,
    }


def prepare_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "prepare",
        "folder",
        "--data-dir",
        str(data),
        "--output",
        str(out),
        "--optical",
        "*_rgb.tif",
        "--dsm",
        "*_dsm.tif",
        "--labels",
        "*_label.tif",
        "--label-kind",
        "index",
        "--classes",
        CLASSES,
        "--chip-size",
        str(CHIP),
        "--stride",
        str(CHIP),
        *extra,
    ]


def scene_window(tile: Tile, window: ChipWindow) -> ChipWindow:
    """A window of a block tile's reader, on the scene's grid."""
    assert tile.window is not None
    return ChipWindow(tile.window.row + window.row, tile.window.col + window.col, window.height, window.width)


def test_blocks_tile_the_area_and_a_thin_border_strip_joins_its_neighbour() -> None:
    blocks = block_windows(HEIGHT, WIDTH, BLOCK, min_size=BLOCK // 4)
    cover = np.zeros((HEIGHT, WIDTH), np.int64)
    for b in blocks:
        cover[b.slices] += 1
    assert (cover == 1).all(), "disjoint and covering"
    assert sorted({b.height for b in blocks}) == [64, 72], "the 8-row strip at the bottom joined the last row"
    assert sorted({b.width for b in blocks}) == [38, 64], "a 38-column strip stays a block of its own"


def test_the_draw_is_seeded_deterministic_and_pooled_over_the_tiles(tmp_path: Path) -> None:
    data = write_scenes(tmp_path)
    first = get_source("folder", data, **options(split_blocks="validation=0.15,test=0.25", block_size=BLOCK))
    again = get_source("folder", data, **options(split_blocks={"validation": 0.15, "test": 0.25}, block_size=BLOCK))
    other = get_source(
        "folder", data, **options(split_blocks="validation=0.15,test=0.25", block_size=BLOCK, split_seed=1)
    )
    names = {s: [t.name for t in tiles] for s, tiles in first.items()}
    assert names == {s: [t.name for t in tiles] for s, tiles in again.items()}
    assert names != {s: [t.name for t in tiles] for s, tiles in other.items()}
    # 24 blocks: 3.6 / 6 / 14.4 rounded by largest remainder.
    assert {s: len(v) for s, v in names.items()} == {"train": 14, "validation": 4, "test": 6}
    assert {n.split("@")[0] for n in names["train"]} == {"s1", "s2"}
    assert first["train"][0].window is not None and "@r" in first["train"][0].name


def test_no_training_chip_overlaps_a_validation_or_test_block(tmp_path: Path) -> None:
    splits = get_source(
        "folder", write_scenes(tmp_path), **options(split_blocks="validation=0.25,test=0.25", block_size=BLOCK)
    )
    held = [(t.name.split("@")[0], t.window) for s in ("validation", "test") for t in splits[s]]
    train = RandomChipDataset(splits["train"], chip_size=CHIP, length=3000, seed=3, scaling=RAW, augment=False)
    for index in range(train.length):
        tile_index, window = train.chip_window(index)
        tile = splits["train"][tile_index]
        chip = scene_window(tile, window)
        assert intersect_windows(chip, tile.window) == chip, "inside its own block"
        scene = tile.name.split("@")[0]
        assert all(intersect_windows(chip, w) is None for s, w in held if s == scene), (tile.name, chip)
    # What a chip holds is the scene's pixels at that window, and its labels the scene's labels there.
    tile_index, window = train.chip_window(0)
    tile, sample = splits["train"][tile_index], train[0]
    chip = scene_window(tile, window)
    with rasterio.open(tile.modalities["optical"]) as src:
        expected = src.read(window=((chip.row, chip.row + chip.height), (chip.col, chip.col + chip.width)))
    np.testing.assert_array_equal(sample["pixel_values"]["optical"].numpy()[:, : chip.height, : chip.width], expected)
    # Evaluation windows of a validation block stay inside it.
    validation = SlidingWindowDataset(splits["validation"], chip_size=CHIP, stride=16, scaling=RAW, labels="full")
    for tile_index, window in validation.windows:
        block = splits["validation"][tile_index]
        assert intersect_windows(scene_window(block, window), block.window) == scene_window(block, window)


def test_a_block_is_georeferenced_where_it_lies_and_scaled_as_its_whole_scene(tmp_path: Path) -> None:
    splits = get_source("folder", write_scenes(tmp_path), **options(split_blocks="test=0.5", block_size=BLOCK))
    block = next(t for t in splits["train"] if t.window is not None and t.window.row > 0 and t.window.col > 0)
    scene = Tile(block.name.split("@")[0], block.modalities, labels=block.labels, label_encoding=block.label_encoding)
    scaling = {"optical": Scaling("none"), "dsm": Scaling("minmax_tile")}
    with TileReader(block, scaling=scaling) as part, TileReader(scene, scaling=scaling) as whole:
        assert (part.height, part.width) == block.window[2:]
        assert part.transform == whole.transform @ Affine.translation(block.window.col, block.window.row)
        np.testing.assert_array_equal(part.statistics["dsm"].minimum, whole.statistics["dsm"].minimum)
        np.testing.assert_array_equal(part.statistics["dsm"].maximum, whole.statistics["dsm"].maximum)
        at = ChipWindow(block.window.row, block.window.col, 5, 5)
        np.testing.assert_array_equal(part.read_labels(ChipWindow(0, 0, 5, 5)), whole.read_labels(at))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--split-blocks", "validation=0.7,test=0.5"],
            "--split-blocks validation=0.7,test=0.5: the fractions sum to 1.2, more than 1",
        ),
        (["--split-blocks", "valid=0.2"], "--split-blocks valid=0.2: unknown split 'valid'"),
        (["--split-blocks", "test=-0.1"], "--split-blocks test=-0.1: test=-0.1 must be a fraction in [0, 1]"),
        (["--split-blocks", "test=0.2", "--block-size", "16"], "--block-size 16 is smaller than --chip-size 32"),
        (["--block-size", "64"], "--block-size 64: needs --split-blocks"),
    ],
)
def test_bad_split_options_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    data = write_scenes(tmp_path / "data")
    assert cli_main(prepare_argv(data, tmp_path / "prepared", *flags)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing written"


def test_prepare_records_the_assignment_beside_the_data_set(tmp_path: Path) -> None:
    import datasets

    data = write_scenes(tmp_path / "data")
    out = tmp_path / "prepared"
    flags = ["--split-blocks", "validation=0.25,test=0.25", "--block-size", str(BLOCK), "--data-seed", "2"]
    assert cli_main(prepare_argv(data, out, *flags)) == 0
    record = json.loads((out / "split_blocks.json").read_text())
    assert record["split_blocks"] == {"validation": 0.25, "test": 0.25}
    assert (record["block_size"], record["split_seed"]) == (BLOCK, 2)
    assert record["blocks_per_split"] == {"train": 12, "validation": 6, "test": 6}
    assert (out / "split_blocks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prepared = datasets.load_from_disk(str(out))
    for split in ("train", "validation", "test"):
        recorded = {r["block"] for r in record["blocks"] if r["split"] == split}
        assert set(prepared[split]["tile"]) == recorded
    splits = get_source(
        "folder", data, **options(split_blocks="validation=0.25,test=0.25", block_size=BLOCK, split_seed=2)
    )
    windows = {t.name: list(t.window) for s in splits.values() for t in s if t.window is not None}
    assert {r["block"]: r["window"] for r in record["blocks"]} == windows


def test_too_small_a_split_and_a_class_missing_from_train_warn_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_scenes(tmp_path / "data")
    assert (
        cli_main(prepare_argv(data, tmp_path / "a", "--split-blocks", "validation=0.01", "--block-size", str(BLOCK)))
        == 0
    )
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warned == [
        "mfpeft prepare: warning: --split-blocks validation=0.01: validation gets none of the 24 "
        "blocks of 64 px; use a smaller --block-size or a larger fraction"
    ]

    # Water lies in one block of s1 only: a seed that draws that block out of train.
    def train_blocks(seed: int) -> set[str]:
        splits = get_source("folder", data, **options(split_blocks="test=0.5", block_size=BLOCK, split_seed=seed))
        return {t.name for t in splits["train"]}

    seed = next(s for s in range(50) if "s1@r0_c0" not in train_blocks(s))
    flags = ["--split-blocks", "test=0.5", "--block-size", str(BLOCK), "--data-seed", str(seed)]
    assert cli_main(prepare_argv(data, tmp_path / "b", *flags)) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "no train block holds a pixel of class(es) 'water'" in warned[0], warned


def test_train_records_the_assignment_and_evaluate_scores_the_same_test_blocks(tmp_path: Path) -> None:
    data = write_scenes(tmp_path / "data")
    run = tmp_path / "run"
    source = [
        "--data-dir",
        str(data),
        "--optical",
        "*_rgb.tif",
        "--dsm",
        "*_dsm.tif",
        "--labels",
        "*_label.tif",
        "--label-kind",
        "index",
        "--classes",
        CLASSES,
        "--split-blocks",
        "validation=0.05,test=0.05",
        "--block-size",
        str(BLOCK),
    ]
    assert (
        cli_main(
            [
                "train",
                "--dataset",
                "folder",
                *source,
                "--base-model",
                "random:tiny",
                "--chip-size",
                str(CHIP),
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--eval-stride",
                str(CHIP),
                "--output-dir",
                str(run),
            ]
        )
        == 0
    )
    record = json.loads((run / "split_blocks.json").read_text())
    assert record["blocks_per_split"] == {"train": 22, "validation": 1, "test": 1}
    assert (run / "split_blocks.png").is_file()
    scores = tmp_path / "scores.json"
    assert (
        cli_main(
            [
                "evaluate",
                "--model",
                str(run),
                "--dataset",
                "folder",
                *source,
                "--stride",
                str(CHIP),
                "--device",
                "cpu",
                "--output",
                str(scores),
            ]
        )
        == 0
    )
    trained = json.loads((run / "metrics.json").read_text())["test"]
    assert json.loads(scores.read_text())["confusion_matrix"] == trained["confusion_matrix"]
