"""Tiny random SAM encoders with weights at a realistic scale, for tests."""

from __future__ import annotations

import torch
from transformers import SamVisionConfig, SamVisionModel


def tiny_sam_config(image_size: int = 256, attn: str = "eager", **overrides: object) -> SamVisionConfig:
    """A 2-layer SAM encoder (one window layer, one global layer) small enough for unit tests."""
    values: dict[str, object] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        global_attn_indexes=[1],
        output_channels=16,
        image_size=image_size,
        mlp_dim=64,
    )
    values.update(overrides)
    config = SamVisionConfig(**values)
    config._attn_implementation = attn
    return config


def redraw_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Re-draw every weight at a real scale: SAM's default init (std 1e-10) makes outputs nearly constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(std * torch.randn(param.shape, generator=generator))
    return module


def make_tiny_sam(seed: int = 0, **overrides: object) -> SamVisionModel:
    torch.manual_seed(seed)
    return redraw_(SamVisionModel(tiny_sam_config(**overrides)), seed=seed).eval()
