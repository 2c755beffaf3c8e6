"""Training, evaluation and prediction: what the recipes and the command line call.

A facade (`mfpeft.common.lazy`): each name is imported from its module on first use, so ``import mfpeft.engine``
pulls in neither accelerate nor rasterio.
"""

from typing import TYPE_CHECKING

from ..common.lazy import lazy_facade

_EXPORTS = {
    "TrainingArguments": ".arguments",
    "build_model": ".build",
    "evaluate_model": ".evaluation",
    "HeatmapResult": ".heatmap",
    "heatmap_figure": ".heatmap",
    "PredictionResult": ".predict",
    "predict_scene": ".predict",
    "PredictionOptions": ".prediction_options",
    "predict_scenes": ".scenes",
    "TrainResult": ".training",
    "train": ".training",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .arguments import TrainingArguments  # noqa: F401
    from .build import build_model  # noqa: F401
    from .evaluation import evaluate_model  # noqa: F401
    from .heatmap import HeatmapResult, heatmap_figure  # noqa: F401
    from .predict import PredictionResult, predict_scene  # noqa: F401
    from .prediction_options import PredictionOptions  # noqa: F401
    from .scenes import predict_scenes  # noqa: F401
    from .training import TrainResult, train  # noqa: F401
