"""Prediction at scale: remote inputs (HTTP range requests), mosaics of tiles, many scenes from a CSV file,
per-class probabilities and the run summary; and the one-line errors of bad inputs, with nothing written."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.shutil import copy as raster_copy
from rasterio.transform import from_origin

from mfpeft import MFNetForSegmentation
from mfpeft.cli import main as cli_main
from mfpeft.data.mosaic import Mosaic
from mfpeft.engine.predict import predict_scene
from tests.engine.test_predict import save_tiny_model, tiny_mfnet
from tests.rasters import ORIGIN, PIXEL, write_raster, write_scene

OPTIONS = {"stride": 128, "batch_size": 4, "device": "cpu", "bf16": False}


@pytest.fixture(scope="module")
def model() -> MFNetForSegmentation:
    return tiny_mfnet()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("scale-model") / "model")


def read_band(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


# -- a local HTTP server with range requests ---------------------------------------------------------------------
# In a child process: GDAL's HTTP reads may hold the GIL, so a server thread of this process could never answer.
SERVER = r"""
import functools, http.server, io, sys
from pathlib import Path

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    # Files of a folder; "Range: bytes=a-b" answered with 206 Partial Content (what /vsicurl/ asks for).
    def send_head(self):
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if header is None or not header.startswith("bytes=") or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        first_text, _, last_text = header[len("bytes="):].split(",")[0].partition("-")
        first = int(first_text) if first_text else max(len(data) - int(last_text), 0)
        last = min(int(last_text), len(data) - 1) if first_text and last_text else len(data) - 1
        with open(sys.argv[2], "a") as log:
            log.write(f"{path.name} {first}-{last}\n")
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        return io.BytesIO(data[first:last + 1])

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=sys.argv[1]))
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, folder, log of the ranges asked for): an HTTP server on 127.0.0.1 serving ``folder``."""
    folder, log = tmp_path / "www", tmp_path / "ranges.log"
    folder.mkdir()
    log.touch()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(folder), str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}", folder, log
    finally:
        server.terminate()
        server.wait(timeout=10)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_cog(source: Path, target: Path) -> Path:
    raster_copy(str(source), str(target), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE="128")
    return target


def test_remote_cogs_predict_like_their_local_copies(
    tmp_path: Path, model: MFNetForSegmentation, served: tuple[str, Path]
) -> None:
    url, www, log = served
    scene = write_scene(tmp_path / "scene", 300, 310)
    local = {m: write_cog(path, www / f"{m}.tif") for m, path in scene.items()}
    remote = {m: f"{url}/{m}.tif" for m in local}
    out_remote, out_local = tmp_path / "remote.tif", tmp_path / "local.tif"
    predict_scene(model, remote, out_remote, probabilities=tmp_path / "remote_p.tif", cog=True, **OPTIONS)
    assert {line.split()[0] for line in log.read_text().splitlines()} == {"optical.tif", "dsm.tif"}, (
        "the COGs were read with HTTP range requests"
    )
    predict_scene(model, local, out_local, probabilities=tmp_path / "local_p.tif", cog=True, **OPTIONS)
    np.testing.assert_array_equal(read_band(out_remote), read_band(out_local))
    with rasterio.open(tmp_path / "remote_p.tif") as a, rasterio.open(tmp_path / "local_p.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.overviews(1), "a COG of the probabilities, with overviews"
        np.testing.assert_array_equal(a.dataset_mask() == 0, read_band(out_remote) == 255)  # the mask kept
    with rasterio.open(out_remote) as a, rasterio.open(scene["optical"]) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)


# -- mosaics ------------------------------------------------------------------------------------------------------
def write_tiles(source: Path, folder: Path, rows: list[int], cols: list[int], stem: str) -> list[Path]:
    """``source`` cut at ``rows`` x ``cols`` (pixel edges, 0 and the size included) into georeferenced tiles."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(source) as src:
        data, nodata = src.read(), src.nodata
    tiles = []
    for i, (r0, r1) in enumerate(itertools.pairwise(rows)):
        for j, (c0, c1) in enumerate(itertools.pairwise(cols)):
            transform = from_origin(ORIGIN[0] + c0 * PIXEL, ORIGIN[1] - r0 * PIXEL, PIXEL, PIXEL)
            part = np.ascontiguousarray(data[:, r0:r1, c0:c1])
            tiles.append(write_raster(folder / f"{stem}_{i}{j}.tif", part, transform, nodata=nodata))
    return tiles


def test_mosaic_of_tiles_predicts_like_the_stitched_raster(tmp_path: Path, model: MFNetForSegmentation) -> None:
    scene = write_scene(tmp_path, 300, 310)
    write_tiles(scene["optical"], tmp_path / "rgb", [0, 140, 300], [0, 170, 310], "rgb")  # 4 tiles
    dsm_tiles = write_tiles(scene["dsm"], tmp_path / "dsm", [0, 300], [0, 95, 310], "dsm")  # 2, split the other way
    listing = tmp_path / "dsm_tiles.txt"
    listing.write_text("# the DSM tiles\n" + "\n".join(f"dsm/{p.name}" for p in dsm_tiles) + "\n")
    whole, mosaic = tmp_path / "whole.tif", tmp_path / "mosaic.tif"
    predict_scene(model, scene, whole, **OPTIONS)
    predict_scene(model, {"optical": str(tmp_path / "rgb" / "rgb_*.tif"), "dsm": f"@{listing}"}, mosaic, **OPTIONS)
    expected = read_band(whole)
    np.testing.assert_array_equal(read_band(mosaic), expected)
    with rasterio.open(mosaic) as a, rasterio.open(whole) as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape), "the mosaic's grid is the scene's"
    assert len(np.unique(expected[expected != 255])) >= 2
    # A Mosaic object (the API form), tiles in another order, gives the same.
    again = tmp_path / "again.tif"
    tiles = Mosaic(tuple(str(p) for p in sorted((tmp_path / "rgb").glob("*.tif"), reverse=True)))
    predict_scene(model, {"optical": tiles, "dsm": f"@{listing}"}, again, **OPTIONS)
    np.testing.assert_array_equal(read_band(again), expected)


# -- many scenes ------------------------------------------------------------------------------------------------------
def write_scenes_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_scenes_csv_writes_one_output_per_scene_like_single_runs(
    tmp_path: Path, model: MFNetForSegmentation, model_dir: Path
) -> None:
    rows = []
    for k, (height, width) in enumerate([(260, 270), (200, 300), (280, 140)]):
        scene = write_scene(tmp_path / "in" / f"s{k}", height, width, seed=k)
        rows.append({"optical": f"in/s{k}/rgb.tif", "dsm": str(scene["dsm"]), "output": f"s{k}.tif"})
    rows[1]["probabilities"] = "s1_p.tif"
    for row in rows:
        row.setdefault("probabilities", "")
    scenes = write_scenes_csv(tmp_path / "scenes.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["predict", "--model", str(model_dir), "--scenes", str(scenes), "--output-dir", str(out)]
    argv += ["--stride", "128", "--batch-size", "4", "--device", "cpu", "--bf16", "off"]
    assert cli_main([*argv, "--summary", str(tmp_path / "run.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s0.tif", "s1.tif", "s1_p.tif", "s2.tif"]
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["totals"]["scenes"] == 3 and summary["totals"]["area_unit"] == "square metre"
    assert summary["totals"]["pixels"] == 260 * 270 + 200 * 300 + 280 * 140
    assert summary["totals"]["megapixels_per_second"] > 0
    for k, row in enumerate(rows):
        single = tmp_path / f"single{k}.tif"
        predict_scene(model, {"optical": tmp_path / row["optical"], "dsm": row["dsm"]}, single, **OPTIONS)
        labels = read_band(single)
        np.testing.assert_array_equal(read_band(out / f"s{k}.tif"), labels)
        entry = summary["scenes"][k]
        assert entry["name"] == f"s{k}" and entry["predicted_pixels"] == int((labels != 255).sum())
        building = int((labels == 1).sum())
        assert entry["class_pixels"]["building"] == building
        assert entry["class_areas"]["building"] == pytest.approx(building * PIXEL * PIXEL)


# -- probabilities ---------------------------------------------------------------------------------------------------
def test_probabilities_one_uint8_band_per_class_agree_with_the_class_map(tmp_path: Path) -> None:
    # The tiny model's logits are nearly equal (every probability near 1/6, quantised ties everywhere):
    # its classifier scaled up gives the same class map with decided probabilities.
    model = tiny_mfnet()
    with torch.no_grad():
        model.decoder.head[2].weight.mul_(400)
    scene = write_scene(tmp_path, 300, 280)
    # The DSM covers only part of the optical grid: outside it there is no prediction either.
    dsm = np.linspace(10, 40, 120 * 140, dtype=np.float32).reshape(1, 120, 140)
    shifted = write_raster(tmp_path / "dsm_1m.tif", dsm, from_origin(ORIGIN[0] + 20, ORIGIN[1] - 10, 1.0, 1.0))
    out, probs, conf = tmp_path / "labels.tif", tmp_path / "probs.tif", tmp_path / "conf.tif"
    rasters = {"optical": scene["optical"], "dsm": shifted}
    run = tmp_path / "run.json"
    result = predict_scene(model, rasters, out, probabilities=probs, confidence=conf, summary=run, **OPTIONS)
    labels, confidence = read_band(out), read_band(conf)
    summary = json.loads(run.read_text())
    assert summary["totals"]["scenes"] == 1 and summary["scenes"][0]["probabilities"] == str(probs)
    assert result.pixel_area == summary["scenes"][0]["pixel_area"] == PIXEL * PIXEL
    tree = int((labels == 3).sum())
    assert summary["totals"]["class_pixels"]["tree"] == tree
    assert summary["totals"]["class_areas"]["tree"] == pytest.approx(tree * PIXEL * PIXEL)
    with rasterio.open(probs) as src, rasterio.open(out) as ref:
        assert src.count == model.config.num_labels and set(src.dtypes) == {"uint8"}
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert src.descriptions[1] == "building"
        p = src.read()
        mask = src.dataset_mask()
    assert not list(tmp_path.glob("*.msk")) and not list(tmp_path.glob(".*")), "no sidecar, no temporary left"
    nodata = labels == 255
    assert nodata.any() and (~nodata).any()
    assert (p[:, nodata] == 0).all() and (mask[nodata] == 0).all() and (mask[~nodata] == 255).all()
    valid = p[:, ~nodata].astype(np.int64)
    top = valid.max(axis=0)
    unique = (valid == top).sum(axis=0) == 1  # ties of the quantised values may go either way
    assert unique.mean() > 0.9, unique.mean()
    np.testing.assert_array_equal(valid.argmax(axis=0)[unique], labels[~nodata][unique])
    assert np.abs(valid.sum(axis=0) - 255).max() <= model.config.num_labels  # each rounded by at most 1/2
    np.testing.assert_allclose(top / 255.0, confidence[~nodata], atol=0.5 / 255 + 1e-6)


# -- column sections ---------------------------------------------------------------------------------------------------
def raster_arrays(*paths: Path) -> list[np.ndarray]:
    arrays = []
    for path in paths:
        with rasterio.open(path) as src:
            arrays += [src.read(), src.read_masks()]
    return arrays


def test_column_sections_write_what_the_whole_width_writes(tmp_path: Path) -> None:
    # One chip a batch, so every window's logits are the same in any batch: then only the stitching could differ.
    model = tiny_mfnet()
    with torch.no_grad():
        model.decoder.head[2].weight.mul_(400)  # decided probabilities (see the probabilities test)
    scene = write_scene(tmp_path / "in", 300, 900)
    # The DSM starts 300 columns in: the first 256-column section has no input, the second only in part.
    dsm = np.linspace(10, 40, 150 * 300, dtype=np.float32).reshape(1, 150, 300)
    shifted = write_raster(tmp_path / "in" / "dsm_1m.tif", dsm, from_origin(ORIGIN[0] + 150, ORIGIN[1], 1.0, 1.0))
    rasters = {"optical": scene["optical"], "dsm": shifted}
    written = {}
    for width in (0, 256, 512):
        out = tmp_path / f"w{width}"
        out.mkdir()
        paths = [out / "labels.tif", out / "confidence.tif", out / "probabilities.tif"]
        options = {**OPTIONS, "batch_size": 1, "section_width": width}
        result = predict_scene(model, rasters, paths[0], confidence=paths[1], probabilities=paths[2], **options)
        written[width] = (result, raster_arrays(*paths))
    whole, whole_arrays = written[0]
    labels = whole_arrays[0][0]
    assert (labels[:, :300] == 255).all() and (labels[:, 300:] != 255).any()
    for width in (256, 512):
        result, arrays = written[width]
        for got, expected in zip(arrays, whole_arrays):
            np.testing.assert_array_equal(got, expected)  # class ids, confidence, probabilities, masks
        assert result.class_counts == whole.class_counts
        assert result.chips > whole.chips  # the windows straddling a section boundary run in both sections


def test_section_width_must_be_a_multiple_of_the_output_block() -> None:
    from mfpeft.engine.predict import PredictionOptions

    with pytest.raises(ValueError, match=r"section_width=1000 must be a multiple of 256 .* or 0 for the whole width"):
        PredictionOptions(section_width=1000)


# -- bad input: one line naming scene / modality / file, nothing written ------------------------------------------
def run_cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capfd.readouterr()
    status = cli_main(argv)
    err = capfd.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene, and its optical image cut in two tiles three times: the second tile in another CRS, with two
    bands, as uint16."""
    root = tmp_path_factory.mktemp("scale-bad")
    scene = write_scene(root, 200, 200)
    left = write_tiles(scene["optical"], root / "crs", [0, 200], [0, 100, 200], "t")
    with rasterio.open(left[1]) as src:
        data, transform = src.read(), src.transform
    write_raster(left[1], data, transform, nodata=0, crs="EPSG:32633")
    bands = write_tiles(scene["optical"], root / "bands", [0, 200], [0, 100, 200], "t")
    write_raster(bands[1], data[:2], transform, nodata=0)
    dtypes = write_tiles(scene["optical"], root / "dtypes", [0, 200], [0, 100, 200], "t")
    write_raster(dtypes[1], data.astype(np.uint16), transform, nodata=0)
    return root


def predict_argv(root: Path, model_dir: Path, out: Path, **rasters: str) -> list[str]:
    argv = ["predict", "--model", str(model_dir), "--output", str(out), "--device", "cpu"]
    for name in ("optical", "dsm"):
        argv += [f"--{name}", rasters.get(name, str(root / ("rgb.tif" if name == "optical" else "dsm.tif")))]
    return argv


@pytest.mark.parametrize(
    ("optical", "expected"),
    [
        ("http://127.0.0.1:{port}/rgb.tif", r"scene 'labels' modality 'optical': cannot open tile http://127\.0\.0\.1"),
        ("crs/t_*.tif", r"scene 'labels' modality 'optical': tile .*t_01\.tif has CRS EPSG:32633 but tile .*t_00"),
        ("bands/t_*.tif", r"scene 'labels' modality 'optical': tile .*t_01\.tif has band count 2 but tile .*t_00"),
        ("dtypes/t_*.tif", r"scene 'labels' modality 'optical': tile .*t_01\.tif has data type uint16 but tile .*t_00"),
    ],
    ids=["unreachable-url", "tiles-crs", "tiles-band-count", "tiles-dtype"],
)
def test_bad_remote_or_mosaic_input_is_one_line_and_writes_nothing(
    bad_inputs: Path, model_dir: Path, capfd: pytest.CaptureFixture[str], optical: str, expected: str, tmp_path: Path
) -> None:
    text = optical.format(port=closed_port())
    value = text if text.startswith("http") else str(bad_inputs / text)
    out = tmp_path / "labels.tif"
    status, lines = run_cli(predict_argv(bad_inputs, model_dir, out, optical=value), capfd)
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("mfpeft predict: error: ") and re.search(expected, lines[0]), lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_bad_scenes_file_is_one_line_and_writes_nothing(
    bad_inputs: Path, model_dir: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rgb, dsm = str(bad_inputs / "rgb.tif"), str(bad_inputs / "dsm.tif")
    no_dsm = write_scenes_csv(tmp_path / "no_dsm.csv", [{"optical": rgb, "output": "a.tif"}])
    argv = ["predict", "--model", str(model_dir), "--output-dir", str(out), "--device", "cpu", "--scenes"]
    status, lines = run_cli([*argv, str(no_dsm)], capfd)
    assert status == 1 and len(lines) == 1, lines
    assert "no_dsm.csv: no column 'dsm'" in lines[0] and "optical,dsm,output" in lines[0], lines[0]
    # Scene 3 of 3 cannot be read: scenes 1 and 2 are not written either.
    rows = [{"optical": rgb, "dsm": dsm, "output": f"s{k}.tif"} for k in range(3)]
    rows[2]["dsm"] = f"http://127.0.0.1:{closed_port()}/dsm.tif"
    status, lines = run_cli([*argv, str(write_scenes_csv(tmp_path / "late.csv", rows))], capfd)
    assert status == 1 and len(lines) == 1, lines
    assert "scene 's2' modality 'dsm': cannot open tile http://127.0.0.1" in lines[0], lines[0]
    empty = [*rows[:1], {"optical": rgb, "dsm": "", "output": "s1.tif"}]
    status, lines = run_cli([*argv, str(write_scenes_csv(tmp_path / "empty.csv", empty))], capfd)
    assert status == 1 and "empty.csv line 3: column 'dsm' is empty" in lines[0], lines
    unknown = write_scenes_csv(tmp_path / "unknown.csv", [{**rows[0], "sar": rgb}])
    status, lines = run_cli([*argv, str(unknown)], capfd)
    assert status == 1 and "unknown.csv: column 'sar' is neither a modality of the model" in lines[0], lines
    assert os.listdir(out) == [], "nothing is written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "late.csv", "no_dsm.csv", "out", "unknown.csv"]


def test_mosaic_checks_grid_and_outputs(tmp_path: Path, model: MFNetForSegmentation, bad_inputs: Path) -> None:
    rgb, dsm = bad_inputs / "rgb.tif", str(bad_inputs / "dsm.tif")
    good = write_tiles(rgb, tmp_path / "good", [0, 200], [0, 100, 200], "t")
    # The output at one of the tiles would replace an input: refused like any input raster.
    with pytest.raises(ValueError, match=r"t_01\.tif: the output path is one of the input rasters"):
        predict_scene(model, {"optical": str(tmp_path / "good" / "t_*.tif"), "dsm": dsm}, good[1], **OPTIONS)
    # A tile a third of a pixel off the first tile's grid.
    with rasterio.open(good[1]) as src:
        data, t = src.read(), src.transform
    write_raster(good[1], data, from_origin(t.c + PIXEL / 3, t.f, PIXEL, PIXEL), nodata=0)
    with pytest.raises(ValueError, match=r"modality 'optical': tile .*t_01\.tif starts at pixel \(100\.333, 0\.000\)"):
        predict_scene(model, {"optical": Mosaic(tuple(map(str, good))), "dsm": dsm}, tmp_path / "a.tif", **OPTIONS)
    write_raster(good[1], data, t, nodata=7)
    with pytest.raises(ValueError, match=r"tile .*t_01\.tif has nodata value 7\.0 but tile .*t_00\.tif has 0\.0"):
        predict_scene(model, {"optical": Mosaic(tuple(map(str, good))), "dsm": dsm}, tmp_path / "a.tif", **OPTIONS)
    with pytest.raises(FileNotFoundError, match=r"modality 'dsm': tile .*nowhere\.tif: file not found"):
        predict_scene(model, {"optical": str(good[0]), "dsm": Mosaic(("nowhere.tif",))}, tmp_path / "a.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_scenes_and_single_scene_flags_do_not_mix(
    bad_inputs: Path, model_dir: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [{"optical": str(bad_inputs / "rgb.tif"), "dsm": str(bad_inputs / "dsm.tif"), "output": "a.tif"}]
    scenes = str(write_scenes_csv(tmp_path / "scenes.csv", rows))
    base = ["predict", "--model", str(model_dir), "--device", "cpu"]
    cases = {
        "--output": ([*base, "--scenes", scenes, "--output-dir", str(tmp_path), "--output", "x.tif"], "drop --output"),
        "no dir": ([*base, "--scenes", scenes], "give --output-dir DIR"),
        "no output": ([*base, "--optical", str(bad_inputs / "rgb.tif")], "give --output PATH (one scene) or --scenes"),
        "probabilities": (
            [*base, "--scenes", scenes, "--output-dir", str(tmp_path), "--probabilities", "p.tif"],
            "with a scenes file each scene's probabilities is a column of the file",
        ),
    }
    for name, (argv, expected) in cases.items():
        status, lines = run_cli(argv, capfd)
        assert status == 1 and len(lines) == 1 and expected in lines[0], (name, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes.csv"]


# -- polygons ------------------------------------------------------------------------------------------------------
def test_vector_polygons_carry_the_class_map(tmp_path: Path) -> None:
    pyogrio = pytest.importorskip("pyogrio")
    model = tiny_mfnet()
    with torch.no_grad():
        model.decoder.head[2].weight.mul_(400)  # decided classes: several of them on the scene
    scene = write_scene(tmp_path, 300, 280)
    out, vector = tmp_path / "labels.tif", tmp_path / "labels.gpkg"
    result = predict_scene(model, scene, out, vector=vector, **OPTIONS)
    assert result.vector == vector
    labels = read_band(out)
    meta = pyogrio.read_info(vector)
    with rasterio.open(out) as ref:
        assert rasterio.crs.CRS.from_user_input(meta["crs"]) == ref.crs
    _, _, _, (ids, names, areas) = pyogrio.raw.read(vector, read_geometry=False)
    class_names = list(model.config.id2label.values())
    for index in np.unique(labels[labels != 255]):
        assert areas[ids == index].sum() == pytest.approx(float((labels == index).sum()) * PIXEL * PIXEL)
        assert set(names[ids == index]) == {class_names[index]}
    simplified = tmp_path / "simple.gpkg"
    predict_scene(model, scene, tmp_path / "again.tif", vector=simplified, vector_simplify=PIXEL, **OPTIONS)
    _, _, _, (s_ids, _, s_areas) = pyogrio.raw.read(simplified, read_geometry=False)
    for index in np.unique(labels[labels != 255]):
        pixels = float((labels == index).sum()) * PIXEL * PIXEL
        assert s_areas[s_ids == index].sum() == pytest.approx(pixels, rel=0.05)
    with pytest.raises(ValueError, match=r"vector_min_area=-1"):
        predict_scene(model, scene, tmp_path / "bad.tif", vector=tmp_path / "bad.gpkg", vector_min_area=-1, **OPTIONS)
    assert not (tmp_path / "bad.tif").exists() and not (tmp_path / "bad.gpkg").exists()
