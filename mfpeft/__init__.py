"""mfpeft: multimodal parameter-efficient fine-tuning of SAM for remote-sensing segmentation (MFNet)."""

from .models import (
    MFNetConfig,
    MFNetForSegmentation,
    SamLoadError,
    load_sam_vision_encoder,
    optimize_sam_encoder,
    push_adapter_to_hub,
    sam_vision_config,
)
from .tuners import MMAdapterConfig, MMLoraConfig, MultimodalPeftType


def __getattr__(name: str) -> object:
    # Prediction pulls in rasterio and the data stack: imported on first use.
    if name in ("predict_scene", "PredictionResult"):
        from .engine import predict

        return getattr(predict, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "MFNetConfig",
    "MFNetForSegmentation",
    "MMAdapterConfig",
    "MMLoraConfig",
    "MultimodalPeftType",
    "PredictionResult",
    "SamLoadError",
    "load_sam_vision_encoder",
    "optimize_sam_encoder",
    "predict_scene",
    "push_adapter_to_hub",
    "sam_vision_config",
]
