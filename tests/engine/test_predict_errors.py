"""``mfpeft predict`` user errors: one line on stderr naming the flag / file and what to do, exit 1, no output.

Run in-process through :func:`mfpeft.cli.main` with ``capfd``, which captures the file descriptors, so
anything GDAL or libtiff prints from C counts too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from mfpeft.cli import main as cli_main
from mfpeft.common.files import TEMP_MARK
from mfpeft.engine.devices import resolve_device
from mfpeft.engine.predict import modality_flags
from mfpeft.errors import one_line_warnings
from tests.engine.test_predict import save_tiny_model
from tests.rasters import write_nan_dsm, write_patchy_int16_dsm, write_scene


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scene, an all-NaN DSM, a 30 %-nodata int16 DSM and two saved tiny models (optical/dsm, rgb/ndsm)."""
    root = tmp_path_factory.mktemp("predict-errors")
    write_scene(root, 200, 200)
    write_nan_dsm(root / "dsm_nan.tif", 200, 200)
    write_patchy_int16_dsm(root / "dsm_int16.tif", 200, 200, missing=0.3)
    save_tiny_model(root / "model")
    save_tiny_model(root / "model-rgb-ndsm", modalities=[("rgb", 3), ("ndsm", 1)])
    return root


def predict_argv(folder: Path, **flags: str) -> list[str]:
    """``predict`` with the scene's rasters and the tiny model; ``flags`` replace or add ``--name value``."""
    options = {
        "model": str(folder / "model"),
        "optical": str(folder / "rgb.tif"),
        "dsm": str(folder / "dsm.tif"),
        "output": str(folder / "out" / "labels.tif"),
        "device": "cpu",
        "stride": "128",
    }
    options.update(flags)
    argv = ["predict"]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", value]
    return argv


def run_cli(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of ``mfpeft ARGV``."""
    capfd.readouterr()
    status = cli_main(argv)
    err = capfd.readouterr().err
    return status, [line for line in err.splitlines() if line.strip()]


CUDA = torch.cuda.is_available()

ROWS: list[tuple[str, Callable[[Path], dict[str, str]], str]] = [
    ("device cuda without CUDA", lambda f: {"device": "cuda"}, "--device cuda: CUDA is not available on this machine"),
    ("device gpu0", lambda f: {"device": "gpu0"}, "--device gpu0: not a device; use cpu, cuda, cuda:1 or mps"),
    (
        "rgb/ndsm model given --optical/--dsm",
        lambda f: {"model": str(f / "model-rgb-ndsm")},
        "the model expects modalities rgb, ndsm; no raster was given for rgb, ndsm and a raster was given for "
        "optical, dsm, which it does not use; give --modality rgb=PATH --modality ndsm=PATH",
    ),
    (
        "all-NaN DSM",
        lambda f: {"dsm": str(f / "dsm_nan.tif")},
        "dsm_nan.tif: modality 'dsm' has no data: every pixel is NaN",
    ),
    ("missing raster file", lambda f: {"dsm": str(f / "nowhere.tif")}, "nowhere.tif: file not found (modality 'dsm')"),
    (
        "output folder missing",
        lambda f: {"output": str(f / "missing-folder" / "labels.tif")},
        "missing-folder/labels.tif: the output folder",
    ),
]


@pytest.mark.parametrize(("flags", "expected"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_predict_error_is_one_line_and_writes_nothing(
    folder: Path, capfd: pytest.CaptureFixture[str], flags: Callable[[Path], dict[str, str]], expected: str
) -> None:
    if expected.startswith("--device cuda:") and CUDA:
        pytest.skip("CUDA is available here")
    (folder / "out").mkdir(exist_ok=True)
    argv = predict_argv(folder, **flags(folder))
    status, lines = run_cli(argv, capfd)
    assert status == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("mfpeft predict: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    output = Path(argv[argv.index("--output") + 1])
    assert not output.exists()
    assert not list(output.parent.glob(f".*{TEMP_MARK}*")) if output.parent.is_dir() else True


def test_patchy_dsm_is_one_warning_line_and_predicts(folder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    output = folder / "out" / "patchy.tif"
    (folder / "out").mkdir(exist_ok=True)
    status, lines = run_cli(predict_argv(folder, dsm=str(folder / "dsm_int16.tif"), output=str(output)), capfd)
    assert status == 0
    assert lines == [
        f"mfpeft predict: warning: {folder / 'dsm_int16.tif'}: 30.0 % of the pixels of modality 'dsm' are the "
        "nodata value -32768 (no data); they are read as 0"
    ]
    with rasterio.open(output) as src:
        assert (src.read(1) < 6).any()


def test_modality_flags_name_flags_that_exist() -> None:
    assert modality_flags(["optical", "dsm"]) == "--optical PATH --dsm PATH"
    assert modality_flags(["rgb", "ndsm", "dsm"]) == "--modality rgb=PATH --modality ndsm=PATH --dsm PATH"


def test_one_line_warnings_prints_one_line_and_drops_library_deprecations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with one_line_warnings("mfpeft predict"):
        warnings.warn("a DSM\nwith holes", UserWarning, stacklevel=1)
        warnings.warn_explicit("old API", FutureWarning, "/site-packages/transformers/x.py", 1)
    assert capsys.readouterr().err == "mfpeft predict: warning: a DSM with holes\n"


# -- resolve_device --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu0", "--device gpu0: not a device; use cpu, cuda, cuda:1 or mps"),
        ("cuda:", "--device cuda:: not a device"),
        ("meta", "--device meta: not a device"),
        ("cpu:1", "--device cpu:1: there is one CPU device; use --device cpu"),
    ],
)
def test_resolve_device_rejects_what_is_not_a_device(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        resolve_device(text)


def test_resolve_device_accepts_devices_this_machine_has() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(None) == torch.device("cuda" if CUDA else "cpu")
    if CUDA:
        assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_resolve_device_says_why_cuda_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(
        ValueError, match=r"^--device cuda: CUDA is not available .*built without CUDA\); use --device cpu$"
    ):
        resolve_device("cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(ValueError, match=r"built for CUDA 12\.4 but no GPU or driver was found\); use --device cpu$"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"^--device cuda:2: this machine has 2 CUDA device\(s\) \(cuda:0, cuda:1\)"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_valid_share_reads_the_patchy_dsm_exactly(folder: Path) -> None:
    from mfpeft.data.checks import valid_share

    counted = valid_share(folder / "dsm_int16.tif")
    assert (counted.valid, counted.total, counted.nodata) == (140 * 200, 200 * 200, -32768.0)
    assert counted.share == pytest.approx(0.7)
    with rasterio.open(folder / "dsm_int16.tif") as src:
        assert src.read(1)[np.s_[:60]].min() == -32768  # the fixture is what the test says
