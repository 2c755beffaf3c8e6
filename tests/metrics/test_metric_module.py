"""The packaged `evaluate` metric: loads with no network and agrees with segmentation_scores."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import evaluate
import numpy as np
import pytest

from mfpeft.metrics import METRIC_SCRIPT, confusion_matrix, load_metric, segmentation_scores


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline mode as a user would set it, a private module cache, and no socket may connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    # `evaluate` reads these at import time, so set the parsed values too.
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_script_ships_in_the_package() -> None:
    assert METRIC_SCRIPT.is_file()
    assert METRIC_SCRIPT.parent == Path(segmentation_scores.__code__.co_filename).parent


@pytest.mark.usefixtures("offline")
def test_loads_offline_and_agrees_with_segmentation_scores(tmp_path: Path) -> None:
    metric = load_metric(cache_dir=str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    shapes = [(17, 23), (8, 8), (31, 5)]  # images of different sizes in one evaluation
    predictions = [rng.integers(0, 6, size=shape) for shape in shapes]
    references = [rng.integers(0, 6, size=shape) for shape in shapes]
    references[0][:3] = 255
    predictions[1][0, 0] = 255  # out of range, but on an ignored reference pixel below
    references[1][0, 0] = 255

    for prediction, reference in zip(predictions, references):
        metric.add_batch(predictions=[prediction], references=[reference])
    got = metric.compute(num_labels=6, ignore_index=255, score_classes=[0, 1, 2, 3, 4], class_names=list("abcdef"))

    pooled = sum(confusion_matrix(p, r, 6) for p, r in zip(predictions, references))
    expected = segmentation_scores(pooled, class_names=list("abcdef"), score_classes=range(5))
    assert got is not None
    np.testing.assert_array_equal(np.array(got.pop("confusion_matrix")), pooled)
    assert got == expected


@pytest.mark.usefixtures("offline")
def test_evaluate_load_by_path_and_docstring_example(tmp_path: Path) -> None:
    metric = evaluate.load(str(METRIC_SCRIPT), cache_dir=str(tmp_path / "cache"))
    got = metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)
    assert got is not None
    assert got["mean_iou"] == 0.5
    assert got["confusion_matrix"] == [[1, 1], [0, 1]]
    assert not math.isnan(got["kappa"])


@pytest.mark.usefixtures("offline")
def test_mismatched_image_shapes_are_reported(tmp_path: Path) -> None:
    metric = load_metric(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="image 0: prediction shape"):
        metric.compute(predictions=[np.zeros((2, 3), int)], references=[np.zeros((3, 2), int)], num_labels=2)
