from .config import MMLoraConfig
from .layer import MMLoraLayer, MMLoraQV
from .model import MMLoraModel

__all__ = ["MMLoraConfig", "MMLoraLayer", "MMLoraModel", "MMLoraQV"]
