"""Loading the packaged `evaluate` metric module without Hub access."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

METRIC_SCRIPT = Path(__file__).with_name("mfnet_segmentation.py")
"""Path of the `evaluate` metric script shipped in the package (usable with ``evaluate.load(str(...))``)."""


def load_metric(**kwargs: Any) -> evaluate.EvaluationModule:
    """Load the MFNet segmentation metric as an ``evaluate`` module, from the package, never from the Hub.

    Keyword arguments go to :func:`evaluate.load` (e.g. ``num_process``/``process_id``/``experiment_id`` for
    distributed use). Compute with ``metric.compute(predictions=[(H, W) arrays], references=[...],
    num_labels=K, ignore_index=255, score_classes=[...], class_names=[...])``.
    """
    import evaluate  # deferred: importing `evaluate` pulls in `datasets`, which takes a second or two.

    return evaluate.load(str(METRIC_SCRIPT), **kwargs)
