"""Scores from a confusion matrix: hand-computed case, a naive loop reference, NaN rules, JSON output."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mfpeft.metrics import scores_to_json, segmentation_scores


def naive_scores(matrix: np.ndarray, score_classes: list[int]) -> dict[str, Any]:
    """Written independently of the implementation: explicit loops, exact fractions, F1 as the harmonic mean
    of precision and recall, kappa from its textbook definition (p_o - p_e) / (1 - p_e)."""
    k = len(matrix)
    total = 0
    diagonal = 0
    rows = [0] * k
    cols = [0] * k
    for i in range(k):
        for j in range(k):
            value = int(matrix[i][j])
            total += value
            rows[i] += value
            cols[j] += value
            if i == j:
                diagonal += value
    nan = math.nan
    precision: list[Fraction | float] = []
    recall: list[Fraction | float] = []
    f1: list[Fraction | float] = []
    iou: list[Fraction | float] = []
    for c in range(k):
        tp = int(matrix[c][c])
        fp = cols[c] - tp
        fn = rows[c] - tp
        p = Fraction(tp, tp + fp) if tp + fp else nan
        r = Fraction(tp, tp + fn) if tp + fn else nan
        precision.append(p)
        recall.append(r)
        if tp + fp + fn == 0:
            f1.append(nan)
            iou.append(nan)
        elif tp == 0:
            f1.append(Fraction(0))
            iou.append(Fraction(0))
        else:
            f1.append(2 * p * r / (p + r))
            iou.append(Fraction(tp, tp + fp + fn))
    kept_f1 = [f1[c] for c in score_classes if not (isinstance(f1[c], float) and math.isnan(f1[c]))]
    kept_iou = [iou[c] for c in score_classes if not (isinstance(iou[c], float) and math.isnan(iou[c]))]
    if total:
        oa: Fraction | float = Fraction(diagonal, total)
        chance = Fraction(sum(rows[c] * cols[c] for c in range(k)), total**2)
        kappa: Fraction | float = (oa - chance) / (1 - chance) if chance != 1 else nan
    else:
        oa = kappa = nan
    return {
        "overall_accuracy": float(oa),
        "kappa": float(kappa),
        "mean_f1": float(sum(kept_f1) / len(kept_f1)) if kept_f1 else nan,
        "mean_iou": float(sum(kept_iou) / len(kept_iou)) if kept_iou else nan,
        "per_class_precision": [float(v) for v in precision],
        "per_class_recall": [float(v) for v in recall],
        "per_class_f1": [float(v) for v in f1],
        "per_class_iou": [float(v) for v in iou],
        "reference_pixels": rows,
        "predicted_pixels": cols,
        "total_pixels": total,
    }


@st.composite
def matrices(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    k = draw(st.integers(1, 8))
    # Small counts make empty rows/columns (absent classes) frequent; large ones check there is no overflow.
    counts = st.one_of(st.integers(0, 3), st.integers(0, 10**12))
    matrix = draw(arrays(np.int64, (k, k), elements=counts))
    classes = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    return matrix, classes


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_agrees_with_naive_reference(case: tuple[np.ndarray, list[int]]) -> None:
    matrix, classes = case
    got = segmentation_scores(matrix, score_classes=classes)
    expected = naive_scores(matrix, classes)
    for key, value in expected.items():
        if key in ("mean_f1", "mean_iou"):  # a mean of rounded values: a few more roundings
            np.testing.assert_allclose(got[key], value, rtol=1e-14, atol=0, equal_nan=True, err_msg=key)
        else:  # each a single correct rounding of the exact value, so bit-identical
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert got["score_classes"] == classes


def test_hand_computed_case() -> None:
    matrix = np.array([[50, 2, 3], [4, 30, 6], [1, 0, 4]])
    got = segmentation_scores(matrix, class_names=["a", "b", "c"], score_classes=[0, 1])
    # rows 55/40/5, columns 55/32/13, total 100, trace 84
    assert got["overall_accuracy"] == pytest.approx(0.84, abs=1e-15)
    assert got["per_class_precision"] == pytest.approx([50 / 55, 30 / 32, 4 / 13], abs=1e-15)
    assert got["per_class_recall"] == pytest.approx([50 / 55, 30 / 40, 4 / 5], abs=1e-15)
    assert got["per_class_f1"] == pytest.approx([100 / 110, 60 / 72, 8 / 18], abs=1e-15)
    assert got["per_class_iou"] == pytest.approx([50 / 60, 30 / 42, 4 / 14], abs=1e-15)
    assert got["mean_f1"] == pytest.approx(float(Fraction(115, 132)), abs=1e-15)  # (10/11 + 5/6) / 2
    assert got["mean_iou"] == pytest.approx(float(Fraction(65, 84)), abs=1e-15)  # (5/6 + 5/7) / 2
    chance = (55 * 55 + 40 * 32 + 5 * 13) / 100**2  # 0.437
    assert got["kappa"] == pytest.approx((0.84 - chance) / (1 - chance), abs=1e-15)  # 0.403 / 0.563
    assert got["kappa"] == pytest.approx(0.7158081705150977, abs=1e-15)
    assert got["reference_pixels"] == [55, 40, 5]
    assert got["predicted_pixels"] == [55, 32, 13]
    assert got["true_positive_pixels"] == [50, 30, 4]
    assert got["total_pixels"] == 100
    assert got["class_names"] == ["a", "b", "c"]


def test_absent_class_is_nan_and_left_out_of_means() -> None:
    # Class 2 has neither reference nor predicted pixels; class 3 only appears in the reference.
    matrix = np.array([[3, 1, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]])
    got = segmentation_scores(matrix)
    assert all(math.isnan(got[key][2]) for key in ("per_class_f1", "per_class_iou", "per_class_precision"))
    assert got["per_class_f1"][3] == 0.0 and got["per_class_iou"][3] == 0.0
    assert math.isnan(got["per_class_precision"][3]) and got["per_class_recall"][3] == 0.0
    # class 0: TP 3, row 4, column 6; class 1: TP 3, row 4, column 4
    assert got["mean_iou"] == pytest.approx((3 / 7 + 3 / 5 + 0.0) / 3, abs=1e-15)
    assert got["mean_f1"] == pytest.approx((6 / 10 + 6 / 8 + 0.0) / 3, abs=1e-15)


def test_isprs_means_exclude_clutter_but_oa_includes_it() -> None:
    matrix = np.diag([10, 10, 10, 10, 10, 0]).astype(np.int64)
    matrix[5, 0] = 50  # clutter always predicted as impervious
    got = segmentation_scores(matrix, score_classes=range(5))
    all_classes = segmentation_scores(matrix)
    assert got["overall_accuracy"] == pytest.approx(0.5)
    assert got["mean_iou"] == pytest.approx((10 / 60 + 4) / 5)
    assert all_classes["mean_iou"] == pytest.approx((10 / 60 + 4) / 6)


def test_degenerate_matrices() -> None:
    empty = segmentation_scores(np.zeros((3, 3), dtype=np.int64))
    for key in ("overall_accuracy", "mean_f1", "mean_iou", "kappa"):
        assert math.isnan(empty[key])
    single = segmentation_scores(np.array([[7, 0], [0, 0]]))
    assert single["overall_accuracy"] == 1.0 and single["mean_iou"] == 1.0
    assert math.isnan(single["kappa"])  # chance agreement is 1: kappa undefined
    perfect = segmentation_scores(np.diag([3, 4, 5]))
    assert perfect["kappa"] == 1.0 and perfect["mean_f1"] == 1.0


@pytest.mark.parametrize(
    ("matrix", "kwargs", "message"),
    [
        (np.zeros((2, 3), int), {}, "square"),
        (np.zeros((2, 2)), {}, "integer counts"),
        (np.array([[1, -1], [0, 0]]), {}, "non-negative"),
        (np.eye(2, dtype=int), {"class_names": ["a"]}, "1 names but the confusion matrix has 2"),
        (np.eye(2, dtype=int), {"score_classes": [2]}, r"\[2\] are outside"),
        (np.eye(2, dtype=int), {"score_classes": []}, "at least one class"),
        (np.eye(2, dtype=int), {"score_classes": [1, 1]}, "repeat"),
    ],
)
def test_bad_input_is_rejected(matrix: np.ndarray, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        segmentation_scores(matrix, **kwargs)  # type: ignore[arg-type]


def test_scores_to_json_is_strict_json() -> None:
    got = segmentation_scores(np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]]))
    text = json.dumps(scores_to_json(got), allow_nan=False)
    loaded = json.loads(text)
    assert loaded["per_class_iou"][2] is None
    assert loaded["per_class_iou"][0] == pytest.approx(0.75)
    assert loaded["total_pixels"] == 6
