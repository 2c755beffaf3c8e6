"""Confusion-matrix and per-class plots: written atomically, of a sensible size, not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from mfpeft.metrics import plot_confusion_matrix, plot_per_class, segmentation_scores

NAMES = ["impervious", "building", "low vegetation", "tree", "car", "clutter"]


def matrix() -> np.ndarray:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 2000, size=(6, 6))
    counts += np.diag(rng.integers(50_000, 2_000_000, size=6))
    counts[5] = 0  # no clutter in the reference: a blank row must not break the plot
    return counts


def check_png(path: Path, min_side: int, max_side: int) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    height, width = pixels.shape[:2]
    assert min_side <= height <= max_side and min_side <= width <= max_side, (height, width)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_confusion_matrix_plot(tmp_path: Path) -> None:
    path = plot_confusion_matrix(matrix(), NAMES, tmp_path / "confusion.png")
    assert path == tmp_path / "confusion.png"
    check_png(path, 300, 1500)


def test_per_class_plot(tmp_path: Path) -> None:
    scores = segmentation_scores(matrix(), class_names=NAMES, score_classes=range(5))
    path = plot_per_class(scores, tmp_path / "per_class.png")
    check_png(path, 300, 1500)


def test_overwrites_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "confusion.png"
    target.write_bytes(b"old")
    plot_confusion_matrix(matrix(), NAMES, target)
    check_png(target, 300, 1500)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_savefig(self: Figure, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_confusion_matrix(matrix(), NAMES, tmp_path / "confusion.png")
    assert list(tmp_path.iterdir()) == []


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_confusion_matrix(matrix(), NAMES, tmp_path / "missing" / "confusion.png")
    with pytest.raises(ValueError, match="5 names but the confusion matrix has 6"):
        plot_confusion_matrix(matrix(), NAMES[:5], tmp_path / "confusion.png")
    with pytest.raises(ValueError, match="per_class_f1"):
        plot_per_class({"class_names": NAMES}, tmp_path / "per_class.png")
