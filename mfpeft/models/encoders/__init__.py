"""Vision foundation models MFNet can be built around, one module per family (`base.EncoderFamily`)."""

from .base import NECK_CHANNELS, ROLES, EncoderFamily, EncoderLoadError, EncoderWeights
from .registry import (
    FAMILIES,
    family_named,
    family_of,
    load_encoder,
    random_encoder,
    split_random_spec,
    vision_config_from,
)

__all__ = [
    "FAMILIES",
    "NECK_CHANNELS",
    "ROLES",
    "EncoderFamily",
    "EncoderLoadError",
    "EncoderWeights",
    "family_named",
    "family_of",
    "load_encoder",
    "random_encoder",
    "split_random_spec",
    "vision_config_from",
]
