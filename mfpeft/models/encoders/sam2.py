"""SAM2.1's image encoder, Hiera: a hierarchical ViT of four stages (1/4, 1/8, 1/16, 1/32), windowed attention with
query pooling between stages, a fused ``qkv`` per block.

MFNet takes Hiera's four stage maps (without SAM2's FPN neck, which belongs to its mask decoder), projects each to
256 channels with a trainable `LevelNecks`, and hands them to the Deep Fusion Module as its four levels: the DFM
then needs no simple feature pyramid. Position tables are interpolated by Hiera at every forward (its background
table is resized to the grid), so a chip size only has to be a multiple of 32. Weights load from a transformers
SAM2 / SAM2.1 folder or Hub id (``Sam2Model``: the encoder is ``vision_encoder.backbone``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedConfig, Sam2HieraDetConfig

from ...common.validation import check_number
from .base import EncoderFamily, EncoderWeights

_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(blocks_per_stage=[1, 2, 7, 2], global_attention_blocks=[5, 7, 9]),
    "small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
    "base-plus": dict(
        hidden_size=112,
        num_attention_heads=2,
        blocks_per_stage=[2, 3, 16, 3],
        embed_dim_per_stage=[112, 224, 448, 896],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        global_attention_blocks=[12, 16, 20],
        window_positional_embedding_background_size=[14, 14],
    ),
    "large": dict(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        global_attention_blocks=[23, 33, 43],
        window_size_per_stage=[8, 4, 16, 8],
    ),
}


class Sam2HieraFamily(EncoderFamily):
    name = "sam2"
    display_name = "SAM2.1 Hiera"
    config_class: ClassVar[type[PreTrainedConfig]] = Sam2HieraDetConfig
    model_types = ("sam2_hiera_det_model", "sam2_vision_model", "sam2")
    layer_pattern = r"blocks\.\d+\."
    roles: ClassVar[Mapping[str, str]] = {
        "attention_qkv": "attn.qkv",
        "attention_output": "attn.proj",
        "mlp": "mlp",
        "mlp_in": "mlp.proj_in",
        "mlp_out": "mlp.proj_out",
    }
    licence = "apache-2.0"
    example_checkpoint = "facebook/sam2.1-hiera-tiny"
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = _SIZES

    def encoder_config_of(self, config: PreTrainedConfig) -> PreTrainedConfig:
        if config.model_type == "sam2":
            config = config.vision_config
        return config.backbone_config if config.model_type == "sam2_vision_model" else config

    def patch_size(self, config: PreTrainedConfig) -> int:
        return 32  # the total stride: patch embedding 4, then three 2x query poolings

    def hidden_size(self, config: PreTrainedConfig) -> int:
        return int(config.hidden_size)

    def num_layers(self, config: PreTrainedConfig) -> int:
        return int(sum(config.blocks_per_stage))

    def validate(self, config: PreTrainedConfig) -> None:
        stages = (
            "blocks_per_stage",
            "embed_dim_per_stage",
            "num_attention_heads_per_stage",
            "window_size_per_stage",
        )
        for name in stages:
            values = getattr(config, name)
            if not isinstance(values, (list, tuple)) or len(values) != 4:
                raise ValueError(f"vision_config.{name}={values!r} must give 4 stages")
            for value in values:
                check_number(f"vision_config.{name}", value, 1, integer=True)
        if list(config.patch_stride) != [4, 4] or int(config.num_query_pool_stages) != 3:
            raise ValueError(
                f"vision_config: patch_stride={config.patch_stride!r} and num_query_pool_stages="
                f"{config.num_query_pool_stages!r} must be [4, 4] and 3 (maps at 1/4 ... 1/32, as MFNet's DFM takes)"
            )
        size = config.image_size
        if not isinstance(size, (list, tuple)) or len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"vision_config.image_size={size!r} must be a square [S, S]")
        self.check_image_size(config, int(size[0]))

    def with_image_size(self, config: PreTrainedConfig, image_size: int) -> PreTrainedConfig:
        import copy

        self.check_image_size(config, image_size)
        config = copy.deepcopy(config)
        config.image_size = [image_size, image_size]
        return config

    def random_config(self, size: str, image_size: int) -> PreTrainedConfig:
        if size not in self.sizes:
            raise ValueError(f"{self.name} has no size {size!r}; sizes: {', '.join(self.sizes)}")
        return Sam2HieraDetConfig(**dict(self.sizes[size]), image_size=[image_size, image_size])

    def build(self, config: Any) -> nn.Module:
        from transformers import Sam2HieraDetModel

        return Sam2HieraDetModel(config)

    def feature_maps(self, module: Any, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        stages = module(pixel_values).intermediate_hidden_states  # four (N, h, w, C_l), channels last
        return [stage.permute(0, 3, 1, 2) for stage in stages]

    def feature_channels(self, config: PreTrainedConfig) -> list[int]:
        return [int(c) for c in config.embed_dim_per_stage]

    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        from transformers import Sam2HieraDetModel, Sam2Model, Sam2VisionModel

        from .loading import read_pretrained

        classes = {
            "sam2": (Sam2Model, "vision_encoder.backbone"),
            "sam2_vision_model": (Sam2VisionModel, "backbone"),
            "sam2_hiera_det_model": (Sam2HieraDetModel, ""),
        }
        config, state_dict = read_pretrained(self, name_or_path, classes, attn_implementation)
        return EncoderWeights(self.with_image_size(config, image_size), state_dict, str(name_or_path))


SAM2_HIERA = Sam2HieraFamily()
