"""Multimodal PEFT tuners for SAM's encoder, registered with peft on import.

Importing this package imports each tuner package, whose ``__init__`` registers it (`register_multimodal_tuner`);
the other names resolve on first use (`mfpeft.common.lazy`). A new tuner subclasses `MultimodalConfig`,
`MultimodalTunerLayer` and `MultimodalTuner` and registers itself the same way, from its own package.
"""

from typing import TYPE_CHECKING

from ..common.lazy import lazy_facade
from . import mmadapter as _mmadapter  # noqa: F401  (registers MMADAPTER with peft)
from . import mmlora as _mmlora  # noqa: F401  (registers MMLORA with peft)

_EXPORTS = {
    "ENCODER_LAYER_PATTERN": ".base",
    "MultimodalTuner": ".base",
    "MultimodalTunerLayer": ".base",
    "find_vision_encoder": ".base",
    "linear_init_": ".base",
    "mix_modalities": ".base",
    "split_modalities": ".base",
    "MultimodalConfig": ".config",
    "add_save_hook": ".config",
    "MultimodalPeftType": ".registration",
    "is_multimodal_peft_type": ".registration",
    "register_multimodal_tuner": ".registration",
    "registered_peft_types": ".registration",
    "MMAdapterConfig": ".mmadapter",
    "MMAdapterModel": ".mmadapter",
    "MMLoraConfig": ".mmlora",
    "MMLoraModel": ".mmlora",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time they resolve lazily
    from .base import (  # noqa: F401
        ENCODER_LAYER_PATTERN,
        MultimodalTuner,
        MultimodalTunerLayer,
        find_vision_encoder,
        linear_init_,
        mix_modalities,
        split_modalities,
    )
    from .config import MultimodalConfig, add_save_hook  # noqa: F401
    from .mmadapter import MMAdapterConfig, MMAdapterModel  # noqa: F401
    from .mmlora import MMLoraConfig, MMLoraModel  # noqa: F401
    from .registration import (  # noqa: F401
        MultimodalPeftType,
        is_multimodal_peft_type,
        register_multimodal_tuner,
        registered_peft_types,
    )
