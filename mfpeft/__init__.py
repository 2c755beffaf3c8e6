"""mfpeft: multimodal parameter-efficient fine-tuning of SAM for remote-sensing segmentation (MFNet)."""

from .models import (
    MFNetConfig,
    MFNetForSegmentation,
    SamLoadError,
    load_sam_vision_encoder,
    push_adapter_to_hub,
    sam_vision_config,
)
from .tuners import MMAdapterConfig, MMLoraConfig, MultimodalPeftType

__version__ = "0.1.0"

__all__ = [
    "MFNetConfig",
    "MFNetForSegmentation",
    "MMAdapterConfig",
    "MMLoraConfig",
    "MultimodalPeftType",
    "SamLoadError",
    "load_sam_vision_encoder",
    "push_adapter_to_hub",
    "sam_vision_config",
]
