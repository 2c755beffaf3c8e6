"""MMLoRA tuner: injects `MMLoraLayer`s into SAM's encoder."""

from __future__ import annotations

from torch import nn

from ..base import ENCODER_LAYER_PATTERN, MultimodalTuner
from .config import MMLoraConfig
from .layer import MMLoraLayer, MMLoraQV

MMLORA_TARGETS = ENCODER_LAYER_PATTERN + r"(?:attn\.qkv|mlp\.lin1|mlp\.lin2)"


class MMLoraModel(MultimodalTuner):
    """Created by `peft.get_peft_model(model, MMLoraConfig())`; see `MMLoraConfig` for the math."""

    prefix = "mmlora_"
    tuner_layer_cls = MMLoraLayer
    target_module_mapping = {"sam_vision_model": MMLORA_TARGETS, "sam": MMLORA_TARGETS, "mfnet": MMLORA_TARGETS}

    def _create_new_module(  # type: ignore[override]
        self, peft_config: MMLoraConfig, adapter_name: str, target: nn.Module, key: str
    ) -> nn.Module:
        name = key.rsplit(".", 1)[-1]
        layer_cls = MMLoraQV if name in peft_config.qv_modules else MMLoraLayer
        return layer_cls(target, adapter_name, peft_config, key)
