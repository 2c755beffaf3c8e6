"""MMLoRA: config, layers and tuner model; importing the package registers it with peft."""

from ..registration import register_multimodal_tuner
from .config import MMLoraConfig
from .layer import MMLoraLayer, MMLoraQV
from .model import MMLoraModel

register_multimodal_tuner("MMLORA", MMLoraConfig, MMLoraModel)

__all__ = ["MMLoraConfig", "MMLoraLayer", "MMLoraModel", "MMLoraQV"]
