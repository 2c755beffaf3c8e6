"""Segmentation metrics: pooled confusion matrix, the paper's scores, an offline `evaluate` module, plots.

``mfnet_segmentation`` (the `evaluate` script) is not imported here: it imports `evaluate`/`datasets`, which
are slow to import; get it through :func:`load_metric`. The plots module is imported lazily for the same
reason (matplotlib).
"""

from __future__ import annotations

from typing import Any

from mfpeft.metrics.confusion import ConfusionMatrix, confusion_matrix, per_sample_confusion
from mfpeft.metrics.loading import METRIC_SCRIPT, load_metric
from mfpeft.metrics.scores import scores_to_json, segmentation_scores

__all__ = [
    "METRIC_SCRIPT",
    "ConfusionMatrix",
    "confusion_matrix",
    "load_metric",
    "per_sample_confusion",
    "plot_confusion_matrix",
    "plot_per_class",
    "scores_to_json",
    "segmentation_scores",
]


def __getattr__(name: str) -> Any:
    if name in ("plot_confusion_matrix", "plot_per_class"):
        from mfpeft.metrics import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
