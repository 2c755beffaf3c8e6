"""Multimodal PEFT tuners for SAM's encoder, registered with peft on import."""

from .mmadapter import MMAdapterConfig, MMAdapterModel
from .mmlora import MMLoraConfig, MMLoraModel
from .registration import MultimodalPeftType, register_multimodal_tuners

register_multimodal_tuners()

__all__ = ["MMAdapterConfig", "MMAdapterModel", "MMLoraConfig", "MMLoraModel", "MultimodalPeftType"]
