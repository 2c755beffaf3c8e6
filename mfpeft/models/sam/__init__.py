"""SAM's image encoder: loading (Hub ids, folders, Meta ``.pth``) and the padding-free fast path."""

from .fast_path import optimize_sam_encoder, optimized_sam_encoder, restore_sam_encoder
from .loading import SamLoadError, load_sam_vision_encoder, random_sam_vision_model, sam_vision_config

__all__ = [
    "SamLoadError",
    "load_sam_vision_encoder",
    "optimize_sam_encoder",
    "optimized_sam_encoder",
    "random_sam_vision_model",
    "restore_sam_encoder",
    "sam_vision_config",
]
