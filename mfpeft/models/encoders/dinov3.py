"""DINOv3 ViT: patch 16, RoPE (no position table, so any chip size that is a multiple of 32 needs no resize),
separate q/k/v projections, [CLS] + register tokens, a plain or a gated (SwiGLU) MLP.

The frozen encoder runs as at inference: the RoPE coordinate augmentations of pre-training (shift, jitter,
rescale, drawn at random in training mode) and stochastic depth are off in the module MFNet builds, so a
training step sees the same features as evaluation. DINOv3's weights (including SAT-493M, pre-trained on
satellite imagery) are under Meta's DINOv3 licence and gated on the Hub: the user downloads them and passes the
folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import DINOv3ViTConfig, PreTrainedConfig

from .base import IMAGENET_MEAN_STD, EncoderFamily, EncoderWeights, vit_patch_map
from .dinov2 import frozen_copy, validate_vit_config

_ATTENTION = {
    "attention_q": "attention.q_proj",
    "attention_v": "attention.v_proj",
    "attention_output": "attention.o_proj",
}
_PLAIN_MLP = {"mlp": "mlp", "mlp_in": "mlp.up_proj", "mlp_out": "mlp.down_proj"}
_GATED_MLP = {"mlp": "mlp", "mlp_gate": "mlp.gate_proj", "mlp_in": "mlp.up_proj", "mlp_out": "mlp.down_proj"}

_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "small-plus": dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, use_gated_mlp=True
    ),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
for _fields in _SIZES.values():
    _fields.update(patch_size=16, num_register_tokens=4, layerscale_value=1e-5)


class Dinov3ViTFamily(EncoderFamily):
    name = "dinov3"
    display_name = "DINOv3 ViT"
    config_class: ClassVar[type[PreTrainedConfig]] = DINOv3ViTConfig
    model_types = ("dinov3_vit",)
    layer_pattern = r"model\.layer\.\d+\."
    roles: ClassVar[Mapping[str, str]] = {**_ATTENTION, **_PLAIN_MLP}
    licence = "other (DINOv3 License; gated on the Hub)"
    example_checkpoint = "facebook/dinov3-vitb16-pretrain-lvd1689m"
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = _SIZES
    # The satellite weights (SAT-493M) were pre-trained with their own statistics (DINOv3's model card).
    normalisations: ClassVar[Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
        "imagenet": IMAGENET_MEAN_STD,
        "sat493m": ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143)),
    }

    def validate(self, config: PreTrainedConfig) -> None:
        validate_vit_config(config)
        super().validate(config)

    def gated_mlp(self, config: PreTrainedConfig) -> bool:
        return bool(config.use_gated_mlp)

    def role_names(self, config: PreTrainedConfig) -> dict[str, str]:
        return {**_ATTENTION, **(_GATED_MLP if self.gated_mlp(config) else _PLAIN_MLP)}

    def build(self, config: Any) -> nn.Module:
        from transformers import DINOv3ViTModel

        config = frozen_copy(config)
        config.pos_embed_shift = config.pos_embed_jitter = config.pos_embed_rescale = None
        return DINOv3ViTModel(config)

    def feature_maps(self, module: Any, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        skip = 1 + int(module.config.num_register_tokens)  # [CLS], then the registers
        return vit_patch_map(module, pixel_values, self.patch_size(module.config), skip)

    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        from transformers import DINOv3ViTModel

        from .loading import read_pretrained

        classes = {"dinov3_vit": (DINOv3ViTModel, "")}
        config, state_dict = read_pretrained(self, name_or_path, classes, attn_implementation)
        return EncoderWeights(self.with_image_size(config, image_size), state_dict, str(name_or_path))


DINOV3_VIT = Dinov3ViTFamily()
