"""Segmentation metrics: pooled confusion matrix, the paper's scores, an offline `evaluate` module, plots.

Every name is imported from its module on first use (`mfpeft.common.lazy`): the plots pull in matplotlib.
``mfnet_segmentation`` (the `evaluate` script) is not exported here: it imports `evaluate`/`datasets`, which
are slow to import; get it through :func:`load_metric`.
"""

from typing import TYPE_CHECKING

from ..common.lazy import lazy_facade

_EXPORTS = {
    "METRIC_SCRIPT": ".loading",
    "ConfusionMatrix": ".confusion",
    "confusion_matrix": ".confusion",
    "load_metric": ".loading",
    "per_sample_confusion": ".confusion",
    "plot_confusion_matrix": ".plots",
    "plot_per_class": ".plots",
    "scores_to_json": ".scores",
    "segmentation_scores": ".scores",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .confusion import ConfusionMatrix, confusion_matrix, per_sample_confusion  # noqa: F401
    from .loading import METRIC_SCRIPT, load_metric  # noqa: F401
    from .plots import plot_confusion_matrix, plot_per_class  # noqa: F401
    from .scores import scores_to_json, segmentation_scores  # noqa: F401
