"""MMAdapter: config, layers and tuner model; importing the package registers it with peft."""

from ..registration import register_multimodal_tuner
from .config import MMAdapterConfig
from .layer import MMAdapterLayer, MMAdapterParallel, MMAdapterSequential
from .model import MMAdapterModel

register_multimodal_tuner("MMADAPTER", MMAdapterConfig, MMAdapterModel)

__all__ = ["MMAdapterConfig", "MMAdapterLayer", "MMAdapterModel", "MMAdapterParallel", "MMAdapterSequential"]
