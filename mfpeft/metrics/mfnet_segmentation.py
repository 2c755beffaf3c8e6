"""`evaluate` metric module for MFNet semantic segmentation, shipped inside mfpeft so it loads offline.

Load it with :func:`mfpeft.metrics.load_metric` (or ``evaluate.load(path_to_this_file)``): no Hub access is
needed, unlike ``evaluate.load("mean_iou")``. It pools one confusion matrix over all pixels of all images and
derives every score from it with :func:`mfpeft.metrics.scores.segmentation_scores`.

Imports in this file are absolute on purpose: `evaluate` copies the script into its module cache before
importing it, so relative imports would not resolve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from mfpeft.common.classes import IGNORE_INDEX
from mfpeft.metrics.confusion import ConfusionMatrix
from mfpeft.metrics.scores import segmentation_scores

_DESCRIPTION = """
Semantic-segmentation scores computed the way the ISPRS benchmark and the MFNet paper report them: one
confusion matrix pooled over every non-ignored pixel of every image, then overall accuracy over all classes,
per-class precision/recall/F1/IoU, mean F1 and mean IoU over a chosen subset of classes (ISPRS: the five
foreground classes, clutter excluded), and Cohen's kappa. Classes absent from both reference and prediction
are NaN and left out of the means.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D integer arrays `(H, W)`): predicted class ids, one array per image.
    references (`list` of 2-D integer arrays `(H, W)`): reference class ids, same shapes as `predictions`.
    num_labels (`int`): number of classes K.
    ignore_index (`int`, defaults to 255): reference value of pixels to skip.
    score_classes (`list[int]`, optional): classes averaged into mean_f1 / mean_iou; defaults to all.
    class_names (`list[str]`, optional): K class names for the report.
Returns:
    The dict of `mfpeft.metrics.segmentation_scores` plus `confusion_matrix` (K x K nested list, rows =
    reference, columns = prediction).
Examples:
    >>> metric = mfpeft.metrics.load_metric()
    >>> scores = metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=2)
    >>> scores["mean_iou"]
    0.5
"""

_CITATION = """
@article{mfnet2024,
  title   = {Multimodal Fusion of SAM for Remote-Sensing Semantic Segmentation
             via Parameter-Efficient Fine-Tuning},
  note    = {MFNet; see the paper bundled with mfpeft for the exact reference},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MfnetSegmentation(evaluate.Metric):
    """Pooled-confusion-matrix segmentation metric (OA, mF1, mIoU, kappa, per-class scores)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    # int32, not uint8/uint16: the ignore value and K > 255 must both fit.
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                }
            ),
        )

    def _compute(  # type: ignore[override]
        self,
        predictions: Sequence[Any],
        references: Sequence[Any],
        num_labels: int,
        ignore_index: int | None = IGNORE_INDEX,
        score_classes: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        accumulator = ConfusionMatrix(num_labels=num_labels, ignore_index=ignore_index)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            pred = _as_label_map(prediction)
            ref = _as_label_map(reference)
            if pred.shape != ref.shape:
                raise ValueError(
                    f"image {index}: prediction shape {pred.shape} differs from reference shape {ref.shape}"
                )
            accumulator.update(pred, ref)
        matrix = accumulator.matrix
        scores = segmentation_scores(matrix, class_names=class_names, score_classes=score_classes)
        scores["confusion_matrix"] = matrix.tolist()
        return scores


def _as_label_map(values: Any) -> np.ndarray:
    # `datasets` hands each image back as a list of rows (its "numpy" format only supports flat features).
    array = np.asarray(values)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"each prediction/reference must be a 2-D integer (H, W) map, got {array.shape}")
    return array.astype(np.int64, copy=False)
