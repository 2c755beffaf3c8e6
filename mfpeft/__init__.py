"""mfpeft: multimodal parameter-efficient fine-tuning of vision foundation models (SAM, SAM2.1, DINOv2, DINOv3) for
remote-sensing segmentation (MFNet).

The one top-level facade: every public name of mfpeft is listed in ``_EXPORTS`` and imported from its module on
first use (`mfpeft.common.lazy`). The tuners and the model are imported at once, because importing mfpeft must
register them with peft (``PeftModel.from_pretrained`` of an MMLoRA folder) and with transformers' Auto classes.
"""

from typing import TYPE_CHECKING

from . import models as _models  # noqa: F401  (registers MFNet with transformers' Auto classes)
from . import tuners as _tuners  # noqa: F401  (registers MMLoRA / MMAdapter with peft)
from .common.lazy import lazy_facade

__version__ = "0.1.0"

_EXPORTS = {
    # models
    "EncoderLoadError": ".models",
    "MFNetConfig": ".models",
    "MFNetForSegmentation": ".models",
    "SamLoadError": ".models",
    "load_encoder": ".models",
    "load_sam_vision_encoder": ".models",
    "optimize_sam_encoder": ".models",
    "push_adapter_to_hub": ".models",
    "sam_vision_config": ".models",
    # tuners
    "MMAdapterConfig": ".tuners",
    "MMLoraConfig": ".tuners",
    "MultimodalPeftType": ".tuners",
    # data
    "Mosaic": ".data",
    "Scaling": ".data",
    "Tile": ".data",
    "available_sources": ".data",
    "demo_data_dir": ".data",
    "get_source": ".data",
    "prepare_dataset": ".data",
    "register_source": ".data",
    # engine
    "HeatmapResult": ".engine",
    "PredictionOptions": ".engine",
    "PredictionResult": ".engine",
    "TrainResult": ".engine",
    "TrainingArguments": ".engine",
    "evaluate_model": ".engine",
    "heatmap_figure": ".engine",
    "predict_scene": ".engine",
    "predict_scenes": ".engine",
    "train": ".engine",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .data import (  # noqa: F401
        Mosaic,
        Scaling,
        Tile,
        available_sources,
        demo_data_dir,
        get_source,
        prepare_dataset,
        register_source,
    )
    from .engine import (  # noqa: F401
        HeatmapResult,
        PredictionOptions,
        PredictionResult,
        TrainingArguments,
        TrainResult,
        evaluate_model,
        heatmap_figure,
        predict_scene,
        predict_scenes,
        train,
    )
    from .models import (  # noqa: F401
        EncoderLoadError,
        MFNetConfig,
        MFNetForSegmentation,
        SamLoadError,
        load_encoder,
        load_sam_vision_encoder,
        optimize_sam_encoder,
        push_adapter_to_hub,
        sam_vision_config,
    )
    from .tuners import MMAdapterConfig, MMLoraConfig, MultimodalPeftType  # noqa: F401
