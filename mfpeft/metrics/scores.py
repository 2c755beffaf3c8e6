"""Segmentation scores from one pooled confusion matrix, as the ISPRS benchmark and the paper report them.

Definitions, for class ``c`` of a ``(K, K)`` count matrix ``M`` (rows = reference, columns = prediction),
``TP = M[c, c]``, ``FP = column sum - TP``, ``FN = row sum - TP``, ``N = M.sum()``:

- overall accuracy ``OA = trace(M) / N``, over **all** classes (the ISPRS convention, clutter included);
- ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``;
- ``F1 = 2 TP / (2 TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)``;
- ``mF1`` and ``mIoU``: means of F1 and IoU over ``score_classes`` (ISPRS: the 5 foreground classes 0..4,
  clutter excluded; MMHunan: all 7 classes);
- Cohen's kappa ``(OA - p_e) / (1 - p_e)`` with ``p_e = sum_c rowsum_c * colsum_c / N^2``, over all classes.

Undefined values are NaN, never silently zero:

- a class with no reference and no predicted pixel has NaN precision, recall, F1 and IoU and is **left out of
  mF1 and mIoU** (it cannot be scored, and counting it as 0 or 1 would move the mean by an arbitrary amount);
- a class that occurs only in the reference (or only in the prediction) has F1 = IoU = 0 and counts in the
  means; its precision (recall) is NaN because it has no predicted (reference) pixel;
- with no counted pixel at all, every score is NaN; kappa is NaN when ``p_e == 1``.

Every score is one division of two integers computed exactly (Python integers where int64 could overflow),
so it carries a single float64 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def _as_count_matrix(matrix: npt.ArrayLike) -> npt.NDArray[np.int64]:
    if hasattr(matrix, "detach"):  # a torch tensor, without importing torch here
        matrix = matrix.detach().cpu().numpy()  # type: ignore[union-attr]
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"confusion matrix must be a non-empty square (K, K) array, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"confusion matrix must hold integer counts, got dtype {counts.dtype}")
    if counts.min() < 0:
        raise ValueError(f"confusion matrix counts must be non-negative, got minimum {counts.min()}")
    return counts.astype(np.int64, copy=False)


def _validated_score_classes(score_classes: Sequence[int] | None, num_labels: int) -> list[int]:
    if score_classes is None:
        return list(range(num_labels))
    classes = [int(c) for c in score_classes]
    if not classes:
        raise ValueError("score_classes must name at least one class, got an empty sequence")
    bad = [c for c in classes if not 0 <= c < num_labels]
    if bad:
        raise ValueError(f"score_classes {bad} are outside [0, {num_labels - 1}] for num_labels={num_labels}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"score_classes must not repeat a class, got {classes}")
    return classes


def _ratio(numerator: npt.NDArray[np.int64], denominator: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    # int64 -> float64 is exact below 2**53 pixels per class, so the division is the only rounding.
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator.astype(np.float64), denominator.astype(np.float64), out=out, where=denominator > 0)
    return out


def _nanmean_of(values: npt.NDArray[np.float64], classes: list[int]) -> float:
    chosen = values[classes]
    chosen = chosen[~np.isnan(chosen)]
    return float(chosen.mean()) if chosen.size else math.nan


def _validated_class_names(class_names: Sequence[str] | None, num_labels: int) -> list[str]:
    if class_names is None:
        return [f"class_{i}" for i in range(num_labels)]
    names = [str(n) for n in class_names]
    if len(names) != num_labels:
        raise ValueError(f"class_names has {len(names)} names but the confusion matrix has {num_labels} classes")
    return names


def _accuracy_and_kappa(
    true_pos: npt.NDArray[np.int64], reference: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """Overall accuracy and Cohen's kappa over all classes from the (K,) per-class counts; NaN without pixels."""
    total = int(reference.sum())
    if total == 0:
        return math.nan, math.nan
    trace = int(true_pos.sum())
    # kappa = (OA - p_e) / (1 - p_e) = (N trace - S) / (N^2 - S) with S = sum_c rowsum_c colsum_c,
    # in Python integers because N^2 overflows int64 beyond about 3e9 pixels.
    chance = sum(int(r) * int(c) for r, c in zip(reference, predicted))
    denominator = total * total - chance
    kappa = (total * trace - chance) / denominator if denominator else math.nan
    return trace / total, kappa


def segmentation_scores(
    matrix: npt.ArrayLike,
    class_names: Sequence[str] | None = None,
    score_classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """All scores of the paper's tables from one ``(K, K)`` confusion matrix (rows = reference).

    Args:
        matrix: ``(K, K)`` non-negative integer counts, e.g. :attr:`ConfusionMatrix.matrix`.
        class_names: ``K`` names for the report; defaults to ``"class_0" ... "class_{K-1}"``.
        score_classes: class ids averaged into ``mean_f1`` and ``mean_iou``; defaults to all classes.
            ISPRS Vaihingen/Potsdam: ``range(5)`` (clutter excluded); MMHunan: all 7.

    Returns:
        A JSON-friendly dict (plain Python floats/ints/lists; NaN where undefined, see the module docstring):
        ``overall_accuracy``, ``mean_f1``, ``mean_iou``, ``kappa``, ``score_classes``, ``class_names``,
        per-class lists of length ``K`` ``per_class_precision``, ``per_class_recall``, ``per_class_f1``,
        ``per_class_iou``, ``reference_pixels``, ``predicted_pixels``, ``true_positive_pixels``, and
        ``total_pixels``.
    """
    counts = _as_count_matrix(matrix)
    num_labels = counts.shape[0]
    names = _validated_class_names(class_names, num_labels)
    classes = _validated_score_classes(score_classes, num_labels)

    true_pos_int = np.diagonal(counts).copy()
    reference_int = counts.sum(axis=1)
    predicted_int = counts.sum(axis=0)
    total_int = int(counts.sum())

    # Numerators and denominators are formed in integers and divided once, so each score carries a single
    # float64 rounding. 2TP + FP + FN = rowsum + colsum: zero exactly when a class is absent from both.
    precision = _ratio(true_pos_int, predicted_int)
    recall = _ratio(true_pos_int, reference_int)
    f1 = _ratio(2 * true_pos_int, reference_int + predicted_int)
    iou = _ratio(true_pos_int, reference_int + predicted_int - true_pos_int)

    overall_accuracy, kappa = _accuracy_and_kappa(true_pos_int, reference_int, predicted_int)
    return {
        "overall_accuracy": overall_accuracy,
        "mean_f1": _nanmean_of(f1, classes),
        "mean_iou": _nanmean_of(iou, classes),
        "kappa": float(kappa),
        "score_classes": classes,
        "class_names": names,
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "per_class_f1": f1.tolist(),
        "per_class_iou": iou.tolist(),
        "reference_pixels": [int(v) for v in reference_int],
        "predicted_pixels": [int(v) for v in predicted_int],
        "true_positive_pixels": [int(v) for v in true_pos_int],
        "total_pixels": total_int,
    }


def scores_to_json(scores: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``scores`` with NaN replaced by ``None``, for strict JSON (``json.dumps(allow_nan=False)``)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, (float, np.floating)):
            return None if math.isnan(value) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    return convert(scores)  # type: ignore[no-any-return]
