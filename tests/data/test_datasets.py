"""Training and evaluation datasets, augmentation, collation, and the demo city."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mfpeft.data.datasets import RandomChipDataset, SlidingWindowDataset, collate_chips
from mfpeft.data.demo import demo_data_dir, make_demo_scene
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.sources import get_source
from mfpeft.data.transforms import random_flip_rotate


def test_random_chips_deterministic_shapes_and_epochs(demo_dir: Path) -> None:
    tiles = get_source("demo", demo_dir)["train"]
    ds = RandomChipDataset(tiles, chip_size=128, length=20, seed=3)
    a, b = ds[5], ds[5]
    assert a["pixel_values"]["optical"].shape == (3, 128, 128) and a["pixel_values"]["optical"].dtype == torch.float32
    assert a["pixel_values"]["dsm"].shape == (1, 128, 128)
    assert a["labels"].shape == (128, 128) and a["labels"].dtype == torch.int64
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["pixel_values"]["dsm"], b["pixel_values"]["dsm"])
    assert not torch.equal(ds[5]["pixel_values"]["optical"], ds[6]["pixel_values"]["optical"])
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["pixel_values"]["optical"], a["pixel_values"]["optical"])
    other = RandomChipDataset(tiles, chip_size=128, length=20, seed=4)
    assert not torch.equal(other[5]["pixel_values"]["optical"], a["pixel_values"]["optical"])


def test_workers_and_cache_give_the_same_chips(demo_dir: Path) -> None:
    tiles = get_source("demo", demo_dir)["train"]
    ds = RandomChipDataset(tiles, chip_size=64, length=8, seed=1, rot90=True)
    serial = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate_chips)))
    parallel = next(iter(DataLoader(ds, batch_size=8, collate_fn=collate_chips, num_workers=2)))
    cached = next(
        iter(
            DataLoader(
                RandomChipDataset(tiles, chip_size=64, length=8, seed=1, rot90=True, cache=True),
                batch_size=8,
                collate_fn=collate_chips,
            )
        )
    )
    for batch in (parallel, cached):
        assert torch.equal(serial["labels"], batch["labels"])
        for m in ("optical", "dsm"):
            assert torch.equal(serial["pixel_values"][m], batch["pixel_values"][m])
    assert serial["pixel_values"]["optical"].shape == (8, 3, 64, 64) and serial["labels"].shape == (8, 64, 64)
    assert ds.classes[:2] == ("impervious_surfaces", "building") and len(ds.classes) == 6


def test_flips_and_rotations_are_joint() -> None:
    rng = np.random.default_rng(0)
    base = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    seen = set()
    for _ in range(40):
        pv, labels = random_flip_rotate({"a": base, "b": base * 2}, base[0].astype(np.int64), rng, rot90=True)
        assert labels is not None
        np.testing.assert_array_equal(pv["b"], pv["a"] * 2)
        np.testing.assert_array_equal(pv["a"][0], labels)
        seen.add(tuple(labels.ravel().tolist()))
    assert len(seen) == 8  # the dihedral group of the square
    pv, _ = random_flip_rotate({"a": base}, None, rng, flips=False)
    np.testing.assert_array_equal(pv["a"], base)


def test_sliding_window_dataset_covers_tiles_with_padding(demo_dir: Path) -> None:
    tiles = get_source("demo", demo_dir)["test"]
    ds = SlidingWindowDataset(tiles, chip_size=200, stride=160)
    assert len(ds) == 9  # 512 px: starts 0, 160, 312
    item = ds[2]
    assert item["window"].tolist() == [0, 312, 200, 200]
    with TileReader(tiles[0], labels="eroded") as reader:
        direct = reader.read(ChipWindow(0, 312, 200, 200))
    np.testing.assert_array_equal(item["labels"].numpy(), direct["labels"])
    small = SlidingWindowDataset(tiles, chip_size=600, stride=600)
    assert len(small) == 1 and small[0]["labels"].shape == (600, 600)
    assert (small[0]["labels"][512:] == 255).all()
    with pytest.raises(ValueError, match="at least one tile"):
        RandomChipDataset([])


def test_demo_is_deterministic_and_height_separates_look_alikes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = make_demo_scene(size=256, seed=1), make_demo_scene(size=256, seed=1), make_demo_scene(size=256, seed=2)
    for key in ("optical", "dsm", "labels", "eroded_labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["labels"], c["labels"])
    scene = make_demo_scene(size=512, seed=0)
    labels, rgb, dsm = scene["labels"], scene["optical"].astype(float), scene["dsm"][0]
    counts = np.bincount(labels.ravel(), minlength=6)
    assert (counts > 0).all()
    # Trees and lawns share a colour; only height separates them.
    tree, grass = rgb[:, labels == 3].mean(axis=1), rgb[:, labels == 2].mean(axis=1)
    assert np.abs(tree - grass).max() < 8
    assert np.median(dsm[labels == 3]) - np.median(dsm[labels == 2]) > 4
    # Most roofs are road-grey: the median roof colour equals the median impervious colour.
    roof, road = np.median(rgb[:, labels == 1], axis=1), np.median(rgb[:, labels == 0], axis=1)
    assert np.abs(roof - road).max() < 8
    assert np.median(dsm[labels == 1]) - np.median(dsm[labels == 0]) > 5
    assert ((scene["eroded_labels"] == 255) & (labels != 255)).any()
    assert (scene["eroded_labels"] == 4).sum() > 100  # cars survive the erosion
    # Cache location honours MFPEFT_CACHE.
    monkeypatch.setenv("MFPEFT_CACHE", str(tmp_path / "c"))
    root = demo_data_dir(seed=7, size=64)
    assert root == tmp_path / "c" / "demo-v2-seed7-size64" and (root / "COMPLETE").is_file()
    assert sorted(p.name for p in (root / "test").iterdir()) == [
        "tile5_dsm.tif",
        "tile5_label.tif",
        "tile5_label_noBoundary.tif",
        "tile5_rgb.tif",
    ]
    assert demo_data_dir(seed=7, size=64) == root
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]
