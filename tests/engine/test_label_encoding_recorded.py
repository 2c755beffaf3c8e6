"""The model folder records the whole label encoding (code map with ``*``, classes, colours): evaluate reads raw
code rasters and predict colours its output without the code map given again, and a map that disagrees with the
model's is an error naming both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from matplotlib.image import imread

from mfpeft.cli import main
from tests.data.test_labels_auto import FOLDER_FLAGS, write_code_folder
from tests.smoke import smoke_flags

SMOKE = smoke_flags()
KEPT = {11: 0, 22: 1, 43: 2, 61: 3, 95: 4}  # the 5 most frequent training codes (tests/data/test_labels_auto.py)
FOREST = (34, 139, 34)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(data folder, model folder, what training printed): a 2-step run on code labels, --top-classes 5."""
    import contextlib
    import io

    root = write_code_folder(tmp_path_factory.mktemp("codes"))
    out = tmp_path_factory.mktemp("runs") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(
            [
                "train",
                *SMOKE,
                "--output-dir",
                str(out),
                "--dataset",
                "folder",
                "--data-dir",
                str(root),
                *FOLDER_FLAGS,
                "--top-classes",
                "5",
                "--palette",
                "class_0=#228b22",
            ]
        )
    assert status == 0
    return root, out, printed.getvalue()


def evaluate(root: Path, model: Path, *extra: str) -> int:
    report = str(model.parent / "scores.json")
    return main(
        [
            "evaluate",
            "--model",
            str(model),
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            *FOLDER_FLAGS,
            "--stride",
            "64",
            "--device",
            "cpu",
            "--output",
            report,
            *extra,
        ]
    )


def test_the_encoding_is_recorded_in_config_json_and_the_card(trained: tuple[Path, Path, str]) -> None:
    """Before: config.json held classes and an all-black palette, not the code map."""
    _, model, printed = trained
    assert "labels: 1-band int16 rasters -> integer codes (22 codes -> 5 classes; every other code ignored)" in printed
    config = json.loads((model / "config.json").read_text())
    recorded = config["label_encoding"]
    assert recorded["kind"] == "codes" and recorded["classes"] == [f"class_{i}" for i in range(5)]
    codes = dict(recorded["code_map"])
    assert codes.pop("*") == 255 and {int(k): v for k, v in codes.items() if v != 255} == KEPT
    assert recorded["palette"] == config["palette"] and tuple(config["palette"][0]) == FOREST
    assert all(max(c) >= 100 for c in config["palette"]), "no black or near-black class"
    card = (model / "README.md").read_text()
    assert "| 0 | class_0 | #228b22 (34, 139, 34) | 11 |" in card and "| 4 | class_4 |" in card


def test_a_tampered_encoding_fails_on_load_naming_the_field(trained: tuple[Path, Path, str], tmp_path: Path) -> None:
    import shutil

    from mfpeft.models.configuration_mfnet import MFNetConfig

    _, model, _ = trained
    assert MFNetConfig.from_pretrained(model).label_encoding["code_map"]["95"] == 4
    copy = tmp_path / "tampered"
    shutil.copytree(model, copy)
    config = json.loads((copy / "config.json").read_text())
    config["label_encoding"]["classes"] = ["a", "b", "c", "d", "e"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: label_encoding\.classes=\['a'.* must be the id2label names"):
        MFNetConfig.from_pretrained(copy)


def test_evaluate_on_raw_rasters_uses_the_recorded_code_map(trained: tuple[Path, Path, str]) -> None:
    """Before: without --code-map evaluate read the code rasters as palette labels (or rediscovered 22 classes)."""
    root, model, _ = trained
    assert evaluate(root, model) == 0
    recorded = json.loads((model.parent / "scores.json").read_text())
    assert len(recorded["confusion_matrix"]) == 5
    same = ",".join(f"{code}={index}" for code, index in KEPT.items()) + ",*=255"
    assert evaluate(root, model, "--code-map", same, "--label-kind", "codes") == 0
    assert json.loads((model.parent / "scores.json").read_text()) == recorded, "the same map gives the same scores"
    pixels = np.asarray(recorded["confusion_matrix"]).sum()
    assert 0 < pixels < 79 * 79, "the test tile's own code 77 and its nodata are not scored"


def test_a_disagreeing_map_is_an_error_naming_both(
    trained: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, model, _ = trained
    capsys.readouterr()
    assert evaluate(root, model, "--code-map", "11=0,22=1,43=2,61=3,99=4,*=255") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--code-map 11=0,22=1,43=2,61=3,99=4,*=255 disagrees with" in err[0]
    assert "95=4" in err[0] and "config.json" in err[0]
    assert evaluate(root, model, "--top-classes", "5") == 1
    assert "--top-classes 5 disagrees" in capsys.readouterr().err


def test_predict_colours_classes_from_the_recorded_palette(trained: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Before: the colour table of a code-label model was black for every class."""
    root, model, _ = trained
    output, quicklook = tmp_path / "classes.tif", tmp_path / "classes.png"
    status = main(
        [
            "predict",
            "--model",
            str(model),
            "--optical",
            str(root / "test" / "c_rgb.tif"),
            "--dsm",
            str(root / "test" / "c_dsm.tif"),
            "--output",
            str(output),
            "--preview",
            str(quicklook),
            "--preview-labels-only",
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    palette = [tuple(c) for c in json.loads((model / "config.json").read_text())["palette"]]
    with rasterio.open(output) as ds:
        table = ds.colormap(1)
        names = json.loads(ds.tags()["CLASS_NAMES"])
        predicted = set(np.unique(ds.read(1)).tolist())
    assert names == [f"class_{i}" for i in range(5)]
    assert [table[k][:3] for k in range(5)] == palette and table[255] == (0, 0, 0, 0)
    shown = {
        tuple(c)
        for c in np.unique((imread(quicklook)[..., :3] * 255).round().astype(np.uint8).reshape(-1, 3), axis=0).tolist()
    }
    assert {palette[k] for k in predicted if k < 5} <= shown, "each predicted class in its recorded colour"
