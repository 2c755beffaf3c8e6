"""Every source reads tiny rasters written in its real layout (official file names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import MMHUNAN_LC_TO_CLASS
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling, resolve_input_scaling
from mfpeft.data.sources import POTSDAM_SPLITS, VAIHINGEN_SPLITS, available_sources, get_source
from tests.data.conftest import palette_rgb, write_raster

SIZE = 16


def _labels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=(SIZE, SIZE)).astype(np.uint8)
    eroded = labels.copy()
    eroded[:, :2] = 255  # a "boundary" strip
    return labels, eroded


def make_vaihingen(root: Path, areas: list[str]) -> None:
    for i, area in enumerate(areas):
        labels, eroded = _labels(i)
        write_raster(root / "top" / f"top_mosaic_09cm_area{area}.tif", np.full((3, SIZE, SIZE), 51, np.uint8))
        write_raster(
            root / "dsm" / f"dsm_09cm_matching_area{area}.tif",
            np.linspace(260, 280, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE),
        )
        # The label archives are not georeferenced: same shape required.
        write_raster(
            root / "gts_for_participants" / f"top_mosaic_09cm_area{area}.tif", palette_rgb(labels), georeferenced=False
        )
        write_raster(
            root / "gts_eroded_for_participants" / f"top_mosaic_09cm_area{area}_noBoundary.tif",
            palette_rgb(eroded),
            georeferenced=False,
        )


def test_vaihingen_paper_split_classes_and_eroded_labels(tmp_path: Path) -> None:
    paper = VAIHINGEN_SPLITS["paper"]
    make_vaihingen(tmp_path, list(paper["train"] + paper["test"]))
    splits = get_source("vaihingen", tmp_path)
    assert [t.name for t in splits["train"]] == [f"area{a}" for a in paper["train"]]
    assert [t.name for t in splits["test"]] == ["area5", "area21", "area15", "area30"]
    assert splits["validation"] == []
    tile = splits["train"][0]  # area1 = index 0 in make_vaihingen
    with TileReader(tile, chip_size=SIZE) as reader:
        out = reader.read(ChipWindow(0, 0, SIZE, SIZE))
    assert out["pixel_values"]["optical"].shape == (3, SIZE, SIZE)
    assert out["pixel_values"]["optical"].dtype == np.float32
    np.testing.assert_allclose(out["pixel_values"]["optical"], 51 / 255, rtol=1e-6)
    dsm = out["pixel_values"]["dsm"]
    assert dsm.shape == (1, SIZE, SIZE) and dsm.min() == 0.0 and dsm.max() == 1.0  # min-max over the tile
    assert out["labels"].dtype == np.int64
    np.testing.assert_array_equal(out["labels"], _labels(0)[0])
    with TileReader(tile, labels="eroded") as reader:
        eroded = reader.read(ChipWindow(0, 0, SIZE, SIZE))["labels"]
    assert (eroded[:, :2] == 255).all()
    np.testing.assert_array_equal(eroded[:, 2:], _labels(0)[0][:, 2:])


def test_vaihingen_validation_holdout_and_errors(tmp_path: Path) -> None:
    paper = VAIHINGEN_SPLITS["paper"]
    make_vaihingen(tmp_path, list(paper["train"] + paper["test"]))
    splits = get_source("vaihingen", tmp_path, validation=["7", "area11"])
    assert [t.name for t in splits["validation"]] == ["area7", "area11"]
    assert len(splits["train"]) == 10
    assert [t.name for t in get_source("vaihingen", tmp_path, validation=2)["validation"]] == ["area34", "area37"]
    with pytest.raises(ValueError, match="area99"):
        get_source("vaihingen", tmp_path, validation=["99"])
    # The official split needs areas that are not there: the error names the tile and file.
    with pytest.raises(FileNotFoundError, match=r"area2'.*top_mosaic_09cm_area2\.tif"):
        get_source("vaihingen", tmp_path, split="official")
    (tmp_path / "dsm" / "dsm_09cm_matching_area1.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"tile 'area1': DSM not found.*dsm_09cm_matching_area1"):
        get_source("vaihingen", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_source("vaihingen", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown split preset"):
        get_source("vaihingen", tmp_path, split="mine")
    with pytest.raises(ValueError, match="empty"):
        get_source("vaihingen", tmp_path, split={"train": [], "test": ["5"]})


def test_potsdam_official_names_zero_padded_ndsm_and_rgb_bands(tmp_path: Path) -> None:
    paper = POTSDAM_SPLITS["paper"]
    for i, tid in enumerate(paper["train"] + paper["test"]):
        x, y = tid.split("_")
        labels, eroded = _labels(i)
        rgbir = np.stack([np.full((SIZE, SIZE), v, np.uint8) for v in (10, 20, 30, 40)])
        write_raster(tmp_path / "4_Ortho_RGBIR" / f"top_potsdam_{tid}_RGBIR.tif", rgbir)
        ndsm = f"dsm_potsdam_{int(x):02d}_{int(y):02d}_normalized_lastools.jpg"
        write_raster(
            tmp_path / "1_DSM_normalisation" / ndsm,
            np.tile(np.arange(SIZE, dtype=np.uint8) * 10, (SIZE, 1)),
            driver="JPEG",
            georeferenced=False,
        )
        write_raster(tmp_path / "5_Labels_all" / f"top_potsdam_{tid}_label.tif", palette_rgb(labels))
        write_raster(
            tmp_path / "5_Labels_all_noBoundary" / f"top_potsdam_{tid}_label_noBoundary.tif", palette_rgb(eroded)
        )
    splits = get_source("potsdam", tmp_path)
    assert [t.name for t in splits["test"]] == list(paper["test"])
    assert len(splits["train"]) == 18
    tile = next(t for t in splits["train"] if t.name == "7_8")
    dsm_path = tile.modalities["dsm"]
    assert isinstance(dsm_path, Path) and dsm_path.name == "dsm_potsdam_07_08_normalized_lastools.jpg"
    with TileReader(tile) as reader:
        out = reader.read(ChipWindow(0, 0, SIZE, SIZE))
    rgb = out["pixel_values"]["optical"]
    assert rgb.shape == (3, SIZE, SIZE)  # IR dropped
    np.testing.assert_allclose(rgb[:, 0, 0], np.array([10, 20, 30]) / 255, rtol=1e-6)
    assert out["pixel_values"]["dsm"].shape == (1, SIZE, SIZE)
    np.testing.assert_array_equal(out["labels"], _labels(paper["train"].index("7_8"))[0])
    splits = get_source("potsdam", tmp_path, optical_bands=(4, 1, 2))
    with TileReader(splits["train"][0]) as reader:
        np.testing.assert_allclose(
            reader.read(ChipWindow(0, 0, 2, 2))["pixel_values"]["optical"][:, 0, 0],
            np.array([40, 10, 20]) / 255,
            rtol=1e-6,
        )
    bad = get_source("potsdam", tmp_path, optical_bands=(1, 2, 5))["train"][0]
    with pytest.raises(ValueError, match=r"RGBIR\.tif.*has 4 band\(s\).*too few bands"):
        TileReader(bad)


def test_mmhunan_raw_layout_band_choice_and_igbp_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, ids in (("train", ["0", "1", "2"]), ("test", ["7"])):
        for tid in ids:
            s2 = (np.arange(13, dtype=np.uint16)[:, None, None] * 100 + rng.integers(0, 50, (13, SIZE, SIZE))).astype(
                np.uint16
            )
            write_raster(tmp_path / split / "s2" / f"s2_{tid}.tif", s2)
            write_raster(
                tmp_path / split / "topo" / f"topo_{tid}.tif", rng.normal(300, 20, (SIZE, SIZE)).astype(np.float32)
            )
            lc = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 13
            write_raster(tmp_path / split / "lc" / f"lc_{tid}.tif", lc.astype(np.uint8))
    splits = get_source("mmhunan", tmp_path, validation=1)
    assert [t.name for t in splits["train"]] == ["0", "1"]
    assert [t.name for t in splits["validation"]] == ["2"]
    assert [t.name for t in splits["test"]] == ["7"]
    with TileReader(splits["test"][0]) as reader:
        raw = reader.read_raw("optical", ChipWindow(0, 0, SIZE, SIZE))
        out = reader.read(ChipWindow(0, 0, SIZE, SIZE))
    assert raw.shape == (3, SIZE, SIZE)
    assert 300 <= raw[0].min() < 350 and 100 <= raw[2].min() < 150  # bands 4, 3, 2 = R, G, B
    opt = out["pixel_values"]["optical"]
    assert opt.min() >= 0.0 and opt.max() <= 1.0  # percentile stretch, clipped
    expected = np.array(MMHUNAN_LC_TO_CLASS)[np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 13]
    expected[expected >= 7] = 255
    np.testing.assert_array_equal(out["labels"], expected)


def test_folder_palette_codes_discovery_and_missing_modality(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for tid in ("a", "b") if split == "train" else ("c",):
            write_raster(tmp_path / split / f"{tid}_rgb.tif", np.zeros((3, SIZE, SIZE), np.uint8))
            write_raster(tmp_path / split / f"{tid}_dsm.tif", np.zeros((SIZE, SIZE), np.float32))
            codes = np.where(np.arange(SIZE)[None, :] < 8, 20, 40).repeat(SIZE, 0).astype(np.uint8)
            codes[0, 0] = 0
            write_raster(tmp_path / split / f"{tid}_label.tif", codes, nodata=0)
    splits = get_source(
        "folder",
        tmp_path,
        modalities={"optical": "*_rgb.tif", "dsm": "*_dsm.tif"},
        labels="*_label.tif",
        label_kind="codes",
        label_nodata=0,
    )
    assert [t.name for t in splits["train"]] == ["a", "b"] and [t.name for t in splits["test"]] == ["c"]
    enc = splits["train"][0].label_encoding
    assert enc.code_map is not None and enc.code_map[20] == 0 and enc.code_map[40] == 1
    assert enc.classes == ("class_0", "class_1")
    unscaled = {"optical": Scaling("none"), "dsm": Scaling("none")}  # folders default to stats: not this test's
    with TileReader(splits["train"][0], scaling=unscaled) as reader:
        labels = reader.read(ChipWindow(0, 0, SIZE, SIZE))["labels"]
    assert labels[0, 0] == 255 and labels[1, 0] == 0 and labels[1, -1] == 1
    (tmp_path / "train" / "b_dsm.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"tile 'b': no dsm file matching '\*_dsm\.tif'"):
        get_source("folder", tmp_path, modalities={"optical": "*_rgb.tif", "dsm": "*_dsm.tif"})
    with pytest.raises(ValueError, match="empty"):
        get_source("folder", tmp_path, modalities={"optical": "*_nothing.tif"})
    with pytest.raises(ValueError, match=r"exactly one '\*'"):
        get_source("folder", tmp_path, modalities={"optical": "rgb.tif"})


def test_demo_source_splits(demo_dir: Path) -> None:
    splits = get_source("demo", demo_dir)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "validation": 1, "test": 1}
    assert "demo" in available_sources() and "hf" in available_sources()
    with pytest.raises(ValueError, match="unknown data source"):
        get_source("nope", demo_dir)


def test_hf_plain_dataset_with_image_columns(tmp_path: Path) -> None:
    import datasets

    rng = np.random.default_rng(0)
    rows: dict[str, list[np.ndarray]] = {
        "optical": [rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3)],  # (H, W, C) images
        "dsm": [rng.random((1, SIZE, SIZE), dtype=np.float32) * 30 for _ in range(3)],
        "labels": [rng.integers(0, 6, (SIZE, SIZE), dtype=np.uint8) for _ in range(3)],
    }
    features = datasets.Features(
        {
            "optical": datasets.Array3D((SIZE, SIZE, 3), "uint8"),
            "dsm": datasets.Array3D((1, SIZE, SIZE), "float32"),
            "labels": datasets.Array2D((SIZE, SIZE), "uint8"),
        }
    )
    full = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": full.select([0, 1]), "val": full.select([2])}).save_to_disk(str(tmp_path / "d"))
    splits = get_source("hf", tmp_path / "d")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [2, 1, 0]
    # Without mfpeft metadata: the default for new data, stats over the training rows (not each row's min-max).
    assert {m: s.mode for m, s in splits["validation"][0].scaling.items()} == {"optical": "stats", "dsm": "stats"}
    resolved = resolve_input_scaling(splits["train"], ["optical", "dsm"])
    with TileReader(splits["validation"][0], scaling=resolved) as reader:
        out = reader.read(ChipWindow(0, 0, SIZE, SIZE))
    for m, raw in (("optical", rows["optical"][2].transpose(2, 0, 1)), ("dsm", rows["dsm"][2])):
        low, high = (np.asarray(b, np.float32)[:, None, None] for b in (resolved[m].low, resolved[m].high))
        expected = np.clip((raw.astype(np.float32) - low) / (high - low), 0, 1)
        np.testing.assert_allclose(out["pixel_values"][m], expected, atol=1e-6)
    np.testing.assert_array_equal(out["labels"], rows["labels"][2])
    with pytest.raises(ValueError, match=r"no column\(s\) \['sar'\]"):
        get_source("hf", tmp_path / "d", modalities=["sar"])
