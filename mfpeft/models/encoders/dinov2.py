"""DINOv2 and DINOv2 with registers: plain ViTs (patch 14), separate q/k/v projections, a [CLS] (+ register) tokens.

The absolute position table is resized once at load time to the chip's patch grid, with the bicubic interpolation
DINOv2 itself runs at every forward for other sizes (so the numbers are the same, for no work per step). MFNet
takes the last layer's patch tokens (layer-normed, as DINOv2's own output), drops [CLS] and the registers, and
its trainable `ViTNeck` maps them to 256 channels at 1/16 of the chip (a patch-14 grid is resized to it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2WithRegistersConfig, PreTrainedConfig

from ...common.validation import check_number
from .base import EncoderFamily, EncoderWeights, resize_grid_table, vit_patch_map

VIT_ROLES = {
    "attention_q": "attention.q_proj",
    "attention_v": "attention.v_proj",
    "attention_output": "attention.o_proj",
    "mlp": "mlp",
    "mlp_in": "mlp.fc1",
    "mlp_out": "mlp.fc2",
}


def _vit_sizes(patch: int, **extra: Any) -> dict[str, dict[str, Any]]:
    shapes = {"tiny": (32, 2, 2, 64), "small": (384, 12, 6, 1536), "base": (768, 12, 12, 3072)}
    shapes |= {"large": (1024, 24, 16, 4096), "giant": (1536, 40, 24, 6144)}
    return {
        name: dict(
            hidden_size=d, num_hidden_layers=n, num_attention_heads=h, intermediate_size=i, patch_size=patch, **extra
        )
        for name, (d, n, h, i) in shapes.items()
    }


def validate_vit_config(config: PreTrainedConfig) -> None:
    """The ranges a plain ViT config must respect (hidden sizes, heads, patch size, 3 channels)."""
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size"):
        check_number(f"vision_config.{name}", getattr(config, name), 1, integer=True)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"vision_config.hidden_size={config.hidden_size} must be a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    if config.num_channels != 3:
        raise ValueError(f"vision_config.num_channels={config.num_channels!r} must be 3 (RGB-shaped input)")


def frozen_copy(config: Any) -> Any:
    """A copy of a ViT config with pre-training's stochastic depth and dropout off: the frozen encoder gives the
    same features in a training step as in evaluation."""
    config = copy.deepcopy(config)
    for name in ("drop_path_rate", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    return config


class Dinov2Family(EncoderFamily):
    name = "dinov2"
    display_name = "DINOv2"
    config_class: ClassVar[type[PreTrainedConfig]] = Dinov2Config
    model_types = ("dinov2",)
    layer_pattern = r"encoder\.layer\.\d+\."
    roles: ClassVar[Mapping[str, str]] = VIT_ROLES
    licence = "apache-2.0"
    example_checkpoint = "facebook/dinov2-base"
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = _vit_sizes(14)
    antialias = False  # how DINOv2 interpolates its table at forward for other sizes

    def validate(self, config: PreTrainedConfig) -> None:
        validate_vit_config(config)
        super().validate(config)

    def build(self, config: Any) -> nn.Module:
        from transformers import Dinov2Model

        return Dinov2Model(frozen_copy(config))

    def feature_maps(self, module: Any, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return vit_patch_map(module, pixel_values, self.patch_size(module.config), self.skipped_tokens(module.config))

    def skipped_tokens(self, config: Any) -> int:
        """Tokens before the patch tokens: [CLS] (and the registers, where there are)."""
        return 1 + int(getattr(config, "num_register_tokens", 0))

    def adapt_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], config: PreTrainedConfig
    ) -> dict[str, torch.Tensor]:
        out = dict(state_dict)
        key = "embeddings.position_embeddings"
        if key in out:
            table = out[key]  # (1, 1 + G², D): [CLS] first
            grid, native = self.image_size(config) // self.patch_size(config), round((table.shape[1] - 1) ** 0.5)
            patches = table[:, 1:].unflatten(1, (native, native))
            out[key] = torch.cat((table[:, :1], resize_grid_table(patches, grid, self.antialias).flatten(1, 2)), dim=1)
        return out

    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        from .loading import read_pretrained

        config, state_dict = read_pretrained(self, name_or_path, self._classes(), attn_implementation)
        config = self.with_image_size(config, image_size)
        return EncoderWeights(config, self.adapt_state_dict(state_dict, config), str(name_or_path))

    def _classes(self) -> dict[str, tuple[type[nn.Module], str]]:
        from transformers import Dinov2Model

        return {"dinov2": (Dinov2Model, "")}


class Dinov2WithRegistersFamily(Dinov2Family):
    name = "dinov2-registers"
    display_name = "DINOv2 with registers"
    config_class: ClassVar[type[PreTrainedConfig]] = Dinov2WithRegistersConfig
    model_types = ("dinov2_with_registers",)
    example_checkpoint = "facebook/dinov2-with-registers-base"
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = _vit_sizes(14, num_register_tokens=4)
    antialias = True  # the registers variant interpolates with antialiasing

    def build(self, config: Any) -> nn.Module:
        from transformers import Dinov2WithRegistersModel

        return Dinov2WithRegistersModel(frozen_copy(config))

    def _classes(self) -> dict[str, tuple[type[nn.Module], str]]:
        from transformers import Dinov2WithRegistersModel

        return {"dinov2_with_registers": (Dinov2WithRegistersModel, "")}


DINOV2 = Dinov2Family()
DINOV2_WITH_REGISTERS = Dinov2WithRegistersFamily()
