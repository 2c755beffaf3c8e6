"""Tiny random encoders of every supported family, with weights at a realistic scale, for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    Dinov2Config,
    Dinov2WithRegistersConfig,
    DINOv3ViTConfig,
    PreTrainedConfig,
    Sam2HieraDetConfig,
    SamHQVisionConfig,
)

from mfpeft.engine.build import encoder_model
from mfpeft.models.encoders import EncoderWeights, family_of
from mfpeft.models.sam.loading import save_quietly
from tests.sam_fixtures import tiny_sam_config

_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_encoder_config(family: str) -> PreTrainedConfig:
    """A 2-layer (Hiera: 5-block) encoder of ``family`` at its smallest valid chip size (64, DINOv2: 224)."""
    if family == "sam":
        return tiny_sam_config(image_size=64)
    if family == "sam-hq":
        fields = tiny_sam_config(image_size=64).to_dict()
        allowed = SamHQVisionConfig().to_dict()
        return SamHQVisionConfig(**{k: v for k, v in fields.items() if k in allowed and k != "model_type"})
    if family == "sam2":
        return Sam2HieraDetConfig(
            hidden_size=16,
            num_attention_heads=1,
            blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[16, 32, 64, 128],
            num_attention_heads_per_stage=[1, 1, 2, 2],
            window_size_per_stage=[4, 4, 4, 2],
            global_attention_blocks=[3],
            window_positional_embedding_background_size=[4, 4],
            image_size=[64, 64],
        )
    if family == "dinov2":
        return Dinov2Config(**_VIT, patch_size=14, image_size=224)
    if family == "dinov2-registers":
        return Dinov2WithRegistersConfig(**_VIT, patch_size=14, image_size=224, num_register_tokens=2)
    if family == "dinov3":  # gated MLP, registers: the hardest case
        return DINOv3ViTConfig(**_VIT, patch_size=16, image_size=64, use_gated_mlp=True, num_register_tokens=2)
    raise ValueError(family)


FAMILY_NAMES = ("sam", "sam-hq", "sam2", "dinov2", "dinov2-registers", "dinov3")


def tiny_encoder(family: str, seed: int = 0) -> EncoderWeights:
    """Random weights (normal, std 0.2; norms near 1; layer scales 1) for `tiny_encoder_config(family)`."""
    config = tiny_encoder_config(family)
    module = family_of(config).build(config)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    for name, tensor in module.state_dict().items():
        if ("norm" in name and name.endswith("weight")) or "layer_scale" in name:
            state[name] = 1 + 0.1 * torch.randn(tensor.shape, generator=generator)
        else:
            state[name] = 0.2 * torch.randn(tensor.shape, generator=generator)
    return EncoderWeights(config, state, f"tiny-{family}")


def save_tiny_encoder(family: str, folder: Path, seed: int = 0) -> Path:
    """`tiny_encoder` saved as a transformers folder (config.json + model.safetensors) that `load_encoder` reads."""
    save_quietly(encoder_model(tiny_encoder(family, seed)), folder)
    return folder


def chip_size(family: str) -> int:
    return family_of(tiny_encoder_config(family)).image_size(tiny_encoder_config(family))
