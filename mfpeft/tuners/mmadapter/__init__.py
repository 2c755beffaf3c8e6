from .config import MMAdapterConfig
from .layer import MMAdapterLayer, MMAdapterParallel, MMAdapterSequential
from .model import MMAdapterModel

__all__ = ["MMAdapterConfig", "MMAdapterLayer", "MMAdapterModel", "MMAdapterParallel", "MMAdapterSequential"]
