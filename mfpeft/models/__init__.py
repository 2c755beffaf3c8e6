"""MFNet model: configuration, modeling, encoder families and their loading, adapter folders.

Importing the package registers MFNet with transformers' Auto classes and, through `adapter_io`, the save hook
that writes ``config.json`` and the model card into every adapter folder saved from an MFNet.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation

from .adapter_io import push_adapter_to_hub  # also registers the adapter folder's save hook
from .configuration_mfnet import MFNetConfig
from .decoder import UNetFormerDecoder
from .encoders import EncoderLoadError, load_encoder
from .fusion import DeepFusionModule, LayerNorm2d, SimpleFeaturePyramid, SqueezeExcitation
from .modeling_mfnet import MFNetForSegmentation, MFNetPreTrainedModel
from .sam.fast_path import optimize_sam_encoder, optimized_sam_encoder, restore_sam_encoder
from .sam.loading import SamLoadError, load_sam_vision_encoder, sam_vision_config

AutoConfig.register("mfnet", MFNetConfig, exist_ok=True)
AutoModel.register(MFNetConfig, MFNetForSegmentation, exist_ok=True)
AutoModelForSemanticSegmentation.register(MFNetConfig, MFNetForSegmentation, exist_ok=True)

__all__ = [
    "DeepFusionModule",
    "EncoderLoadError",
    "LayerNorm2d",
    "MFNetConfig",
    "MFNetForSegmentation",
    "MFNetPreTrainedModel",
    "SamLoadError",
    "SimpleFeaturePyramid",
    "SqueezeExcitation",
    "UNetFormerDecoder",
    "load_encoder",
    "load_sam_vision_encoder",
    "optimize_sam_encoder",
    "optimized_sam_encoder",
    "push_adapter_to_hub",
    "restore_sam_encoder",
    "sam_vision_config",
]
