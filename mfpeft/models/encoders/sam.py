"""SAM and SAM-HQ image encoders: ViT with windowed + global attention, fused ``qkv``, SAM's own 256-wide neck.

SAM's encoder is loaded by `mfpeft.models.sam.loading` (Hub id, folder or Meta ``.pth``; pos-embed and rel-pos
tables resized once to the chip size) and runs mfpeft's padding-free window layers by default. SAM-HQ's encoder is
SAM's with its early-layer embeddings exposed (the HQ mask decoder uses them, MFNet does not); it loads from a
transformers folder or Hub id and runs transformers' layers as they come.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedConfig, SamHQVisionConfig, SamVisionConfig

from ...common.validation import check_number
from .base import EncoderFamily, EncoderLoadError, EncoderWeights

_SAM_ROLES = {
    "attention_qkv": "attn.qkv",
    "attention_output": "attn.proj",
    "mlp": "mlp",
    "mlp_in": "mlp.lin1",
    "mlp_out": "mlp.lin2",
}


def _sam_sizes() -> dict[str, dict[str, Any]]:
    from ..sam.loading import SAM_SIZES

    return {
        name: dict(
            hidden_size=s.hidden_size,
            num_hidden_layers=s.num_hidden_layers,
            num_attention_heads=s.num_attention_heads,
            global_attn_indexes=list(s.global_attn_indexes),
        )
        for name, s in SAM_SIZES.items()
    }


def validate_sam_vision_config(config: PreTrainedConfig) -> None:
    """Raise ValueError naming the first SAM / SAM-HQ ``vision_config`` field out of range."""
    for name in (
        "hidden_size",
        "output_channels",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "window_size",
        "mlp_dim",
        "num_pos_feats",
    ):
        check_number(f"vision_config.{name}", getattr(config, name), 1, integer=True)
    if config.num_channels != 3:
        raise ValueError(f"vision_config.num_channels={config.num_channels!r} must be 3 (SAM takes RGB-shaped input)")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"vision_config.hidden_size={config.hidden_size} must be a multiple of "
            f"num_attention_heads={config.num_attention_heads}"
        )
    check_number("vision_config.image_size", config.image_size, 32, integer=True)
    size, patch = int(config.image_size), int(config.patch_size)
    if size % 32 or size % patch:
        raise ValueError(
            f"vision_config.image_size={size} must be a multiple of 32 (the decoder's 1/32 level) "
            f"and of patch_size={patch}"
        )
    check_number("vision_config.layer_norm_eps", config.layer_norm_eps, 0, low_open=True)
    check_number("vision_config.attention_dropout", config.attention_dropout, 0, 1, high_open=True)
    check_number("vision_config.initializer_range", config.initializer_range, 0)
    check_number("vision_config.mlp_ratio", config.mlp_ratio, 0, low_open=True)
    layers = config.num_hidden_layers
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < layers for i in config.global_attn_indexes):
        raise ValueError(
            f"vision_config.global_attn_indexes={config.global_attn_indexes!r} must be layer indices 0-{layers - 1}"
        )


class SamFamily(EncoderFamily):
    name = "sam"
    display_name = "SAM"
    config_class: ClassVar[type[PreTrainedConfig]] = SamVisionConfig
    model_types = ("sam_vision_model", "sam")
    layer_pattern = r"layers\.\d+\."
    roles: ClassVar[Mapping[str, str]] = _SAM_ROLES
    licence = "apache-2.0"
    example_checkpoint = "facebook/sam-vit-base"
    image_multiple = 32
    has_rel_pos = True

    def __init__(self) -> None:
        self.sizes = _sam_sizes()  # type: ignore[misc]

    def encoder_config_of(self, config: Any) -> Any:
        return getattr(config, "vision_config", None) if config.model_type in self.model_types[1:] else config

    def validate(self, config: PreTrainedConfig) -> None:
        validate_sam_vision_config(config)

    def describe_size(self, config: Any) -> str:
        from ..sam.loading import size_name

        return size_name(config)

    def random_config(self, size: str, image_size: int) -> PreTrainedConfig:
        from ..sam.loading import sam_vision_config

        if size not in self.sizes:
            raise ValueError(f"{self.name} has no size {size!r}; sizes: {', '.join(self.sizes)}")
        return sam_vision_config(size, image_size=image_size)

    def build(self, config: Any) -> nn.Module:
        from transformers.models.sam.modeling_sam import SamVisionEncoder

        return SamVisionEncoder(config)

    def prepare(self, module: nn.Module, padding_free: bool) -> None:
        if padding_free:
            from ..sam.fast_path import optimize_sam_encoder

            optimize_sam_encoder(module, padding_free=True)

    def feature_maps(self, module: Any, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return [module(pixel_values).last_hidden_state]

    def feature_channels(self, config: PreTrainedConfig) -> list[int]:
        return [int(config.output_channels)]

    def needs_neck(self) -> bool:
        return False

    def init_weights(self, module: nn.Module) -> None:
        # SAM's position tables start at zero until real SAM weights are loaded over them.
        table = getattr(module, "pos_embed", None)
        if isinstance(table, nn.Parameter) and hasattr(module, "neck"):
            table.data.zero_()
        for name in ("rel_pos_h", "rel_pos_w"):
            table = getattr(module, name, None)
            if isinstance(table, nn.Parameter):
                table.data.zero_()

    def adapt_state_dict(self, state_dict: Mapping[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
        from ..sam.loading import resize_state_dict

        prefixed = {f"vision_encoder.{k}": v for k, v in state_dict.items()}
        return {k.removeprefix("vision_encoder."): v for k, v in resize_state_dict(prefixed, config).items()}

    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        from ..sam.loading import load_sam_vision_encoder

        model = load_sam_vision_encoder(
            name_or_path,
            image_size=image_size,
            rel_pos=rel_pos,  # type: ignore[arg-type]
            attn_implementation=attn_implementation,
        )
        return EncoderWeights(model.config, model.vision_encoder.state_dict(), str(name_or_path))


class SamHQFamily(SamFamily):
    name = "sam-hq"
    display_name = "SAM-HQ"
    config_class: ClassVar[type[PreTrainedConfig]] = SamHQVisionConfig
    model_types = ("sam_hq_vision_model", "sam_hq")
    licence = "apache-2.0"
    example_checkpoint = "syscv-community/sam-hq-vit-base"

    def random_config(self, size: str, image_size: int) -> PreTrainedConfig:
        sam = super().random_config(size, image_size).to_dict()
        fields = {k: v for k, v in sam.items() if k in SamHQVisionConfig().to_dict() and k != "model_type"}
        return SamHQVisionConfig(**fields)

    def build(self, config: Any) -> nn.Module:
        from transformers.models.sam_hq.modeling_sam_hq import SamHQVisionEncoder

        return SamHQVisionEncoder(config)

    def prepare(self, module: nn.Module, padding_free: bool) -> None:
        """SAM-HQ runs transformers' layers as they come (mfpeft's padding-free layers are SAM's)."""

    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        from transformers import SamHQModel, SamHQVisionModel

        from .loading import read_pretrained

        classes = {
            "sam_hq": (SamHQModel, "vision_encoder"),
            "sam_hq_vision_model": (SamHQVisionModel, "vision_encoder"),
        }
        config, state_dict = read_pretrained(self, name_or_path, classes, attn_implementation)
        config = self.with_image_size(config, image_size)
        state_dict = self.adapt_state_dict(state_dict, config)
        if rel_pos == "zero":
            state_dict = {k: v.zero_() if k.endswith(("rel_pos_h", "rel_pos_w")) else v for k, v in state_dict.items()}
        return EncoderWeights(config, state_dict, str(name_or_path))


SAM = SamFamily()
SAM_HQ = SamHQFamily()

__all__ = ["SAM", "SAM_HQ", "EncoderLoadError", "validate_sam_vision_config"]
