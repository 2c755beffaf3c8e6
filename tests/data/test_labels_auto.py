"""Label rasters as users have them: integer codes with nodata on a grid that is not the optical one, palette
rasters, code maps with ``*``, ``--top-classes``, the label kind told from the files, and legible colours.

Every label value the model sees is a class of a real code, or ignore (255): never a fill value read as a code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio.transform
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_points

from mfpeft.cli import main
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import ISPRS_CLASSES, ISPRS_PALETTE, labels_to_rgb
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources import get_source
from tests.rasters import ORIGIN, PIXEL, write_raster

SIZE = 96  # optical and DSM: SIZE x SIZE on the test grid
LABEL = 80  # the label raster: smaller, and offset by a fraction of a pixel
BIG = {95: 16, 22: 12, 61: 10, 11: 8, 43: 6}  # code: rows across the label raster, most frequent first
SMALL = (21, 23, 31, 32, 33, 41, 42, 51, 52, 62, 71, 72, 81, 82, 90, 99)  # 16 stripes of 5 columns
CODES = sorted([*BIG, *SMALL])  # 21 codes, no 0
TEST_ONLY = 77  # a code only the test tile holds
LABEL_OFFSET = (2.25, 3.25)  # (rows, cols) of the label raster's corner on the optical grid
FOLDER_FLAGS = ["--optical", "*_rgb.tif", "--dsm", "*_dsm.tif", "--labels", "*_label.tif"]
NONE = {"optical": Scaling("none"), "dsm": Scaling("none")}


def code_labels(nodata: int, stripe_codes: tuple[int, ...] = SMALL) -> np.ndarray:
    """(LABEL, LABEL) codes: bands of the BIG codes, then 5-column stripes of the small ones; a nodata block."""
    labels = np.zeros((LABEL, LABEL), dtype=np.int64)
    row = 0
    for code, rows in BIG.items():
        labels[row : row + rows] = code
        row += rows
    for index, code in enumerate(stripe_codes):
        labels[row:, 5 * index : 5 * index + 5] = code
    labels[:8, :16] = nodata
    return labels


def write_inputs(folder: Path, name: str) -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    optical = (np.stack([(xx * 3 + yy) % 250, (yy * 5) % 250, (xx * 7) % 250]) + 1).astype(np.uint8)
    write_raster(folder / f"{name}_rgb.tif", optical)
    write_raster(folder / f"{name}_dsm.tif", (10 + xx / 10 + yy / 20).astype(np.float32)[None])


def write_code_folder(root: Path, dtype: str = "int16", nodata: int = 32767) -> Path:
    """train/{a,b} and test/c: optical + DSM on the test grid, 1-band code labels with ``nodata`` (>= 20 codes)
    on a grid offset by a fraction of a pixel and smaller than the optical one. Tile c holds a code of its own."""
    transform = from_origin(ORIGIN[0] + LABEL_OFFSET[1] * PIXEL, ORIGIN[1] - LABEL_OFFSET[0] * PIXEL, PIXEL, PIXEL)
    for split, names in (("train", ("a", "b")), ("test", ("c",))):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            write_inputs(folder, name)
            stripes = SMALL if name != "c" else (TEST_ONLY, *SMALL[1:])
            labels = code_labels(nodata, stripes).astype(dtype)
            write_raster(folder / f"{name}_label.tif", labels[None], transform=transform, nodata=nodata)
    return root


def read_all(tile, **kwargs) -> np.ndarray:
    with TileReader(tile, scaling=NONE, mask_nodata=False, **kwargs) as reader:
        return reader.read_labels(ChipWindow(0, 0, reader.height, reader.width))


def expected_on_grid(labels: np.ndarray, mapping: dict[int, int], nodata: int) -> np.ndarray:
    """What the reader must give: the label raster's pixel under each optical pixel centre, mapped; nodata 255.

    The overlap starts at the first optical pixel wholly on the label raster (row 3, col 4), whose centre lies
    0.25 px into label pixel (1, 1); the overlap is LABEL - 1 pixels each way.
    """
    window = labels[1:LABEL, 1:LABEL]
    out = np.full(window.shape, 255, dtype=np.uint8)
    for code, index in mapping.items():
        out[window == code] = index
    out[window == nodata] = 255
    return out


@pytest.mark.parametrize(("dtype", "nodata"), [("int16", 32767), ("uint8", 0)])
def test_nodata_on_an_offset_grid_is_ignore_and_no_phantom_code(tmp_path: Path, dtype: str, nodata: int) -> None:
    """Before: nodata became 0 before mapping, so a discovered map failed on a raster without 0 ("0: N px")."""
    root = write_code_folder(tmp_path, dtype, nodata)
    splits = get_source(
        "folder",
        root,
        modalities={"optical": "*_rgb.tif", "dsm": "*_dsm.tif"},
        labels="*_label.tif",
        label_kind="codes",
    )
    labels = read_all(splits["train"][0])
    encoding = splits["train"][0].label_encoding
    assert sorted(encoding.code_map) == sorted([*CODES, TEST_ONLY]), "every code found, nodata and 0 not among them"
    assert 0 not in encoding.code_map and nodata not in encoding.code_map
    assert len(encoding.classes) == 22
    assert labels.shape == (LABEL - 1, LABEL - 1), "the grid is cut to where the label raster is"
    np.testing.assert_array_equal(labels, expected_on_grid(code_labels(nodata), dict(encoding.code_map), nodata))
    assert (labels[:6, :14] == 255).all(), "the nodata block is ignore"


def test_nodata_never_becomes_a_real_code_0(tmp_path: Path) -> None:
    """Before: nodata pixels were set to 0 and, 0 being a real code here, silently became its class."""
    write_inputs(tmp_path, "a")
    labels = np.zeros((1, SIZE, SIZE), np.int16)
    labels[0, :, SIZE // 2 :] = 5
    labels[0, :10, :10] = -9999
    write_raster(tmp_path / "a_label.tif", labels, nodata=-9999)
    splits = get_source(
        "folder",
        tmp_path,
        modalities={"optical": "*_rgb.tif"},
        labels="*_label.tif",
        label_kind="codes",
        code_map={0: 0, 5: 1},
    )
    read = read_all(splits["train"][0])
    assert (read[:10, :10] == 255).all() and (read[10:, : SIZE // 2] == 0).all() and (read[:, SIZE // 2 :] == 1).all()


def test_outside_the_label_footprint_is_ignore_not_code_0(tmp_path: Path) -> None:
    """A label raster in another CRS (UTM 33 on a UTM 32 grid): its footprint is a tilted square, and the
    corners of its bounding box lie off it. Before: the warp filled them with 0, a real code here."""
    write_inputs(tmp_path, "a")
    centre = transform_points("EPSG:32632", "EPSG:32633", [ORIGIN[0] + 24.0], [ORIGIN[1] - 24.0])
    origin = (centre[0][0] - 20.0, centre[1][0] + 20.0)
    codes = np.zeros((1, 80, 80), np.uint8)
    codes[0, :, 40:] = 7
    write_raster(tmp_path / "a_label.tif", codes, transform=from_origin(*origin, PIXEL, PIXEL), crs="EPSG:32633")
    splits = get_source(
        "folder",
        tmp_path,
        modalities={"optical": "*_rgb.tif"},
        labels="*_label.tif",
        label_kind="codes",
        code_map={0: 0, 7: 1},
    )
    with TileReader(splits["train"][0], scaling={"optical": Scaling("none")}) as reader:
        labels = reader.read_labels(ChipWindow(0, 0, reader.height, reader.width))
        rows, cols = np.mgrid[0 : reader.height, 0 : reader.width]
        xs, ys = rasterio.transform.xy(reader.transform, rows.ravel(), cols.ravel(), offset="center")
    lx, ly = transform_points("EPSG:32632", "EPSG:32633", xs, ys)
    col = (np.asarray(lx) - origin[0]) / PIXEL
    row = (origin[1] - np.asarray(ly)) / PIXEL
    inside = ((col > 1) & (col < 79) & (row > 1) & (row < 79)).reshape(labels.shape)
    outside = ((col < -1) | (col > 81) | (row < -1) | (row > 81)).reshape(labels.shape)
    assert outside.sum() > 50, "the test needs pixels off the tilted footprint"
    assert (labels[outside] == 255).all(), "off the label raster is ignore"
    assert (labels[inside] != 255).all() and {0, 1} <= set(np.unique(labels[inside]).tolist())


def test_the_label_kind_is_told_from_the_rasters_and_said(tmp_path: Path) -> None:
    """Before: the default kind was palette, and a 1-band code raster failed with "bands [1, 2, 3] were asked for"."""
    root = write_code_folder(tmp_path / "codes")
    splits = get_source("folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif")
    assert splits["train"][0].label_encoding.kind == "codes"
    from mfpeft.data.labels import describe_labels

    assert describe_labels(splits["train"]) == "labels: 1-band int16 rasters -> integer codes (22 codes -> 22 classes)"
    palette_dir = tmp_path / "palette"
    palette_dir.mkdir()
    write_inputs(palette_dir, "a")
    indices = (np.arange(SIZE)[None, :] // 16 % 6).repeat(SIZE, 0).astype(np.uint8)
    rgb = np.ascontiguousarray(labels_to_rgb(indices, ISPRS_PALETTE).transpose(2, 0, 1))
    write_raster(palette_dir / "a_label.tif", rgb)
    splits = get_source("folder", palette_dir, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif")
    assert splits["train"][0].label_encoding.classes == ISPRS_CLASSES
    np.testing.assert_array_equal(read_all(splits["train"][0]), indices)
    assert describe_labels(splits["train"]) == "labels: 3-band uint8 rasters -> RGB palette colours (6 classes)"
    with pytest.raises(ValueError, match=r"a_label\.tif.* has 1 band\(s\) but palette labels are RGB.*kind codes"):
        read_all(
            get_source("folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif", label_kind="palette")[
                "train"
            ][0]
        )
    float_dir = tmp_path / "float"
    float_dir.mkdir()
    write_inputs(float_dir, "a")
    write_raster(float_dir / "a_label.tif", np.ones((1, SIZE, SIZE), np.float32))
    with pytest.raises(ValueError, match=r"a_label\.tif: cannot tell.*float32.*--label-kind"):
        get_source("folder", float_dir, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif")


def test_star_maps_every_other_code_and_without_it_unknown_codes_fail(tmp_path: Path) -> None:
    from mfpeft.data.labels import parse_code_map

    root = write_code_folder(tmp_path)
    options = {"modalities": {"optical": "*_rgb.tif"}, "labels": "*_label.tif"}
    assert parse_code_map("95=0,22=1,*=255") == {95: 0, 22: 1, "*": 255}
    splits = get_source("folder", root, code_map=parse_code_map("95=0,22=1,*=255"), **options)
    labels = read_all(splits["train"][0])
    expected = expected_on_grid(code_labels(32767), {95: 0, 22: 1}, 32767)
    np.testing.assert_array_equal(labels, expected)
    strict = get_source("folder", root, code_map={95: 0, 22: 1}, **options)
    with pytest.raises(ValueError, match=r"a_label\.tif: label codes not in the code -> class map .*11: \d+ px.*\*="):
        read_all(strict["train"][0])


def test_top_classes_keeps_the_most_frequent_training_codes_in_code_order(tmp_path: Path) -> None:
    root = write_code_folder(tmp_path)
    splits = get_source("folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif", top_classes=5)
    encoding = splits["train"][0].label_encoding
    assert encoding.classes == tuple(f"class_{i}" for i in range(5)) and encoding.other == 255
    kept = {code: index for code, index in encoding.code_map.items() if index != 255}
    assert kept == {11: 0, 22: 1, 43: 2, 61: 3, 95: 4}, "the 5 largest codes, numbered in code order"
    assert all(splits[s][0].label_encoding == encoding for s in ("train", "test"))
    np.testing.assert_array_equal(read_all(splits["train"][0]), expected_on_grid(code_labels(32767), kept, 32767))
    test_labels = read_all(splits["test"][0])
    assert set(np.unique(test_labels).tolist()) == {0, 1, 2, 3, 4, 255}, "the test tile's own code 77 is ignore"
    with pytest.raises(ValueError, match=r"--top-classes 30: the training tiles hold only 21 codes"):
        get_source("folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif", top_classes=30)


def test_prepare_prints_the_code_histogram_and_records_the_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_code_folder(tmp_path / "data")
    out = tmp_path / "prepared"
    status = main(
        [
            "prepare",
            "folder",
            "--data-dir",
            str(root),
            *FOLDER_FLAGS,
            "--output",
            str(out),
            "--chip-size",
            "64",
            "--stride",
            "64",
            "--top-classes",
            "5",
        ]
    )
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert "labels: 1-band int16 rasters -> integer codes (22 codes -> 5 classes; every other code ignored)" in lines
    rows = {int(line.split()[0]): line.split() for line in lines if line.strip()[:2].isdigit()}
    assert sorted(rows) == CODES, "one row per code of the training tiles"
    assert rows[95][3:5] == ["4", "class_4"] and rows[21][3] == "ignore"
    assert int(rows[95][1].replace(",", "")) > int(rows[22][1].replace(",", "")) > int(rows[21][1].replace(",", ""))
    meta = json.loads((out / "train" / "dataset_info.json").read_text())["description"]
    recorded = json.loads(meta)["mfpeft"]["label_encoding"]
    assert recorded["code_map"]["*"] == 255 and recorded["code_map"]["95"] == 4 and recorded["code_map"]["21"] == 255


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--code-map", "11=x,22=1", "11=x"),
        ("--code-map", "11=0,11=1", "given twice"),
        ("--code-map", "11=0,22=300", "past 255"),
        ("--palette", "#12345g,#000000", "'#12345g' is not a colour"),
        ("--palette", "a=#112233,#445566", "do not mix"),
        ("--palette", "#112233", "1 colours for the 22 classes"),
    ],
)
def test_bad_label_options_fail_in_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, words: str
) -> None:
    root = write_code_folder(tmp_path / "data")
    out = tmp_path / "prepared"
    capsys.readouterr()
    status = main(["prepare", "folder", "--data-dir", str(root), *FOLDER_FLAGS, "--output", str(out), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "Traceback" not in err[0]
    assert words in err[0] and (flag in err[0] or "palette" in err[0])
    assert not out.exists() and not list(tmp_path.glob(".prepared*")), "nothing written"


def test_colours_are_legible_and_never_black(tmp_path: Path) -> None:
    """Before: code and index labels got (0, 0, 0) for every class."""
    from mfpeft.data.palette import DEFAULT_COLOURS, default_palette

    root = write_code_folder(tmp_path)
    splits = get_source("folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif")
    palette = splits["train"][0].label_encoding.palette
    assert len(set(palette)) == 22 and min(max(c) for c in palette) >= 100, "distinct and none near black"
    many = default_palette(254)
    assert many[:20] == DEFAULT_COLOURS and len(set(many)) == 254 and min(max(c) for c in many) >= 100
    named = get_source(
        "folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif", palette={"class_0": (34, 139, 34)}
    )["train"][0].label_encoding.palette
    assert named[0] == (34, 139, 34) and named[1:] == palette[1:]
    with pytest.raises(ValueError, match=r"palette names \['forest'\], which are not classes"):
        get_source(
            "folder", root, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif", palette={"forest": (34, 139, 34)}
        )


def test_one_colouriser_and_one_default_palette(tmp_path: Path) -> None:
    """Before: predict, previews and chip previews each had their own class colours (and reports black ones)."""
    from matplotlib.image import imread

    from mfpeft.data import palette as palettes
    from mfpeft.engine import predict, preview

    assert preview.colourise is palettes.colourise and not hasattr(preview, "colorize")
    assert not hasattr(preview, "_default_palette")
    table = predict._colormap(None, 22)
    assert [table[k][:3] for k in range(22)] == list(palettes.default_palette(22)) and table[255] == (0, 0, 0, 0)
    assert predict._colormap([[0, 0, 0]] * 3, 3)[0][:3] != (0, 0, 0), "an all-black placeholder is no palette"
    ids = (np.arange(200)[None, :] // 10).repeat(100, 0).astype(np.uint8)
    ids[:10] = 255
    path = write_raster(tmp_path / "ids.tif", ids[None], nodata=255)
    png = preview.write_preview(path, tmp_path / "p.png", class_names=[f"c{i}" for i in range(20)])
    rgb = (imread(png)[..., :3] * 255).round().astype(np.uint8)
    shown = {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0).tolist()}
    assert set(palettes.DEFAULT_COLOURS) <= shown, "every class drawn in its default colour"


def test_label_encoding_round_trips_and_names_bad_fields() -> None:
    from mfpeft.data.tile import LabelEncoding

    encoding = LabelEncoding("codes", ("a", "b"), code_map={11: 0, 21: 1}, other=255, nodata=0)
    data = json.loads(json.dumps(encoding.to_dict()))
    assert data["code_map"] == {"11": 0, "21": 1, "*": 255}
    assert LabelEncoding.from_dict(data) == encoding
    for bad, words in (
        ({**data, "code_map": {"x": 0}}, r"label_encoding\.code_map: key 'x'"),
        ({**data, "palette": [[0, 0, 300], [1, 1, 1]]}, r"label_encoding: LabelEncoding\.palette"),
        ({**data, "classes": ["a", "a"]}, r"label_encoding: LabelEncoding\.classes"),
        ({**data, "code_map": {"11": -1}}, r"label_encoding: LabelEncoding\.code_map"),
    ):
        with pytest.raises(ValueError, match=words):
            LabelEncoding.from_dict(bad)


def test_rgba_palette_labels_are_detected_and_transparent_pixels_are_ignore(tmp_path: Path) -> None:
    """An RGB + alpha label raster on an offset grid: palette kind, transparent (even odd-coloured) pixels ignore."""
    write_inputs(tmp_path, "a")
    indices = (np.arange(LABEL)[None, :] // 16 % 6).repeat(LABEL, 0).astype(np.uint8)
    rgba = np.concatenate([labels_to_rgb(indices, ISPRS_PALETTE).transpose(2, 0, 1), np.full((1, LABEL, LABEL), 255)])
    rgba = rgba.astype(np.uint8)
    rgba[:3, :10, :10], rgba[3, :10, :10] = 7, 0  # transparent, in a colour of no class
    transform = from_origin(ORIGIN[0] + LABEL_OFFSET[1] * PIXEL, ORIGIN[1] - LABEL_OFFSET[0] * PIXEL, PIXEL, PIXEL)
    write_raster(tmp_path / "a_label.tif", rgba, transform=transform, photometric="RGB", alpha="YES")
    splits = get_source("folder", tmp_path, modalities={"optical": "*_rgb.tif"}, labels="*_label.tif")
    assert splits["train"][0].label_encoding.kind == "palette"
    labels = read_all(splits["train"][0])
    expected = indices[1:LABEL, 1:LABEL].copy()
    expected[:9, :9] = 255
    np.testing.assert_array_equal(labels, expected)
