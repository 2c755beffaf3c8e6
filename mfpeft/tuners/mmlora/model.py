"""MMLoRA tuner: injects `MMLoraLayer`s into SAM's encoder."""

from __future__ import annotations

from torch import nn

from ..base import ENCODER_LAYER_PATTERN, MultimodalTuner, target_role
from .config import MMLoraConfig
from .layer import MMLoraAttention, MMLoraLayer, MMLoraQV

MMLORA_TARGETS = ENCODER_LAYER_PATTERN + r"(?:attn\.qkv|mlp\.lin1|mlp\.lin2)"


class MMLoraModel(MultimodalTuner):
    """Created by `peft.get_peft_model(model, MMLoraConfig())`; see `MMLoraConfig` for the math."""

    prefix = "mmlora_"
    tuner_layer_cls = MMLoraLayer
    target_module_mapping = {"sam_vision_model": MMLORA_TARGETS, "sam": MMLORA_TARGETS, "mfnet": MMLORA_TARGETS}

    def _create_new_module(  # type: ignore[override]
        self, peft_config: MMLoraConfig, adapter_name: str, target: nn.Module, key: str
    ) -> nn.Module:
        role = target_role(self.model, key)
        if role is None:  # a bare SAM model: by name
            role = "attention_qkv" if key.rsplit(".", 1)[-1] in peft_config.qv_modules else "mlp_in"
        layer_cls = {"attention_qkv": MMLoraQV, "attention_q": MMLoraAttention, "attention_v": MMLoraAttention}.get(
            role, MMLoraLayer
        )
        return layer_cls(target, adapter_name, peft_config, key)
