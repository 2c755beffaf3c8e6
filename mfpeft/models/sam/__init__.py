"""SAM's image encoder: loading (Hub ids, folders, Meta ``.pth``) and the padding-free fast path."""

from typing import TYPE_CHECKING

from ...common.lazy import lazy_facade

_EXPORTS = {
    "SamLoadError": ".loading",
    "load_sam_vision_encoder": ".loading",
    "optimize_sam_encoder": ".fast_path",
    "optimized_sam_encoder": ".fast_path",
    "random_sam_vision_model": ".loading",
    "restore_sam_encoder": ".fast_path",
    "sam_vision_config": ".loading",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .fast_path import optimize_sam_encoder, optimized_sam_encoder, restore_sam_encoder  # noqa: F401
    from .loading import SamLoadError, load_sam_vision_encoder, random_sam_vision_model, sam_vision_config  # noqa: F401
