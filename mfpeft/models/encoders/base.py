"""The encoder interface: what MFNet and the tuners need to know about one family of vision foundation models.

A family (SAM, SAM-HQ, SAM2.1's Hiera, DINOv2, DINOv2 with registers, DINOv3 ViT) is one `EncoderFamily`
subclass in its own module of this package. It says

- which transformers configs it accepts and how to check one (`config_class`, `model_types`, `validate`);
- how to build the frozen module MFNet keeps at ``vision_encoder`` and run it (`build`, `feature_maps`);
- how to load released weights and adapt them to the chip size (`load`, `with_image_size`);
- which encoder layers play which role for the tuners (`layer_pattern`, `roles`);
- which maps it hands to the Deep Fusion Module (`feature_channels`: one 1/16 map, or four maps 1/4 ... 1/32).

MFNet, the tuners and the loaders ask the family; none of them names a family's modules.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from ..load_errors import EncoderLoadError

__all__ = ["EncoderFamily", "EncoderLoadError", "EncoderWeights"]

ROLES: tuple[str, ...] = (
    "attention_qkv",  # a fused q/k/v projection (D -> 3·D)
    "attention_q",  # separate q and v projections (D -> D each)
    "attention_v",
    "attention_output",  # the attention's output projection (D -> D)
    "mlp",  # the whole MLP block (D -> D), plain or gated
    "mlp_in",  # the MLP's first linear (D -> hidden); in a gated MLP its up projection
    "mlp_gate",  # a gated MLP's gate projection (D -> hidden)
    "mlp_out",  # the MLP's last linear (hidden -> D)
)
"""The parts of an encoder layer a tuner may sit on; each family maps the ones it has to module names."""

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""The RGB statistics (on 0-1 input) SAM, SAM2.1, DINOv2 and DINOv3's web-data weights were pre-trained with."""

NECK_CHANNELS = 256
"""Width of every map handed to the Deep Fusion Module (SAM's neck width; the DFM's parameter counts assume it)."""


@dataclass(frozen=True)
class EncoderWeights:
    """A loaded encoder: its config at the chip size and the state dict of the module at MFNet's ``vision_encoder``.

    ``name_or_path`` is where it came from (a Hub id, folder or file), recorded by MFNet as
    ``encoder_name_or_path``.
    """

    config: PreTrainedConfig
    state_dict: Mapping[str, torch.Tensor]
    name_or_path: str


class EncoderFamily:
    """One family of encoders; subclasses fill in the class attributes and the methods that raise here."""

    name: ClassVar[str] = ""  # the name users write: "sam", "dinov2", ... (`random:<name>-<size>`)
    display_name: ClassVar[str] = ""
    config_class: ClassVar[type[PreTrainedConfig]]
    model_types: ClassVar[tuple[str, ...]] = ()  # model_type of the configs accepted (encoder and full model)
    layer_pattern: ClassVar[str] = ""  # regex of one encoder layer's prefix inside the encoder module
    roles: ClassVar[Mapping[str, str]] = {}  # role -> module name inside a layer
    licence: ClassVar[str] = ""  # the public weights' licence, as on their model cards
    example_checkpoint: ClassVar[str] = ""
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # random:<family>-<size> -> config fields
    image_multiple: ClassVar[int] = 32  # chip sizes must be multiples of this and of the patch size
    has_rel_pos: ClassVar[bool] = False  # SAM's relative-position tables (``rel_pos="zero"`` applies)
    # Named RGB (mean, std) statistics on 0-1 input of the family's released weights; the first is the default.
    normalisations: ClassVar[Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
        "imagenet": IMAGENET_MEAN_STD
    }

    # -- configs -------------------------------------------------------------------------------------------------
    def encoder_config_of(self, config: PreTrainedConfig) -> PreTrainedConfig:
        """The encoder's own config inside a full model's config (e.g. `SamConfig.vision_config`), or `config`."""
        return config

    def validate(self, config: PreTrainedConfig) -> None:
        """Raise ValueError naming the first ``vision_config`` field out of range (transformers checks only types)."""
        size = self.image_size(config)
        self.check_image_size(config, size)

    def image_size(self, config: PreTrainedConfig) -> int:
        size = config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def patch_size(self, config: PreTrainedConfig) -> int:
        patch = config.patch_size
        return int(patch[0] if isinstance(patch, (list, tuple)) else patch)

    def size_multiple(self, config: PreTrainedConfig) -> int:
        """Chip sizes must be multiples of this: of the decoder's 1/32 level and of the patch size."""
        import math

        return math.lcm(self.image_multiple, self.patch_size(config))

    def check_image_size(self, config: PreTrainedConfig, image_size: object) -> None:
        """ValueError naming the family and the sizes it takes, unless ``image_size`` is one of them."""
        multiple = self.size_multiple(config)
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size < multiple
            or image_size % multiple
        ):
            raise ValueError(
                f"image_size={image_size!r}: a {self.display_name} encoder (patch {self.patch_size(config)}) takes "
                f"square chips whose side is a multiple of {multiple} (e.g. {multiple * max(1, 256 // multiple)})"
            )

    def with_image_size(self, config: PreTrainedConfig, image_size: int) -> PreTrainedConfig:
        """A copy of ``config`` for chips of ``image_size`` (checked)."""
        self.check_image_size(config, image_size)
        config = copy.deepcopy(config)
        config.image_size = image_size
        return config

    def hidden_size(self, config: PreTrainedConfig) -> int:
        return int(config.hidden_size)

    def num_layers(self, config: PreTrainedConfig) -> int:
        return int(config.num_hidden_layers)

    def describe_size(self, config: PreTrainedConfig) -> str:
        """The size name of ``config`` ("base", "vit-b") or its shape in words."""
        for name, fields in self.sizes.items():
            if all(getattr(config, k, None) == v for k, v in fields.items() if k != "image_size"):
                return name
        return f"hidden {self.hidden_size(config)}, {self.num_layers(config)} layers"

    def random_config(self, size: str, image_size: int) -> PreTrainedConfig:
        """The config of ``random:<family>-<size>`` at ``image_size``; ValueError naming the known sizes."""
        if size not in self.sizes:
            raise ValueError(f"{self.name} has no size {size!r}; sizes: {', '.join(self.sizes)}")
        config = self.config_class(**dict(self.sizes[size]))
        return self.with_image_size(config, image_size)

    def normalisation_for(self, name_or_path: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
        """(name, mean, std) of the RGB statistics the weights at ``name_or_path`` expect: a named set that the
        checkpoint's name mentions (e.g. ``sat493m``), else the family's first."""
        lowered = str(name_or_path).lower()
        name = next((n for n in self.normalisations if n in lowered), next(iter(self.normalisations)))
        mean, std = self.normalisations[name]
        return name, mean, std

    # -- the module ----------------------------------------------------------------------------------------------
    def build(self, config: PreTrainedConfig) -> nn.Module:
        """The frozen encoder module MFNet keeps at ``vision_encoder`` (its keys match released checkpoints)."""
        raise NotImplementedError

    def prepare(self, module: nn.Module, padding_free: bool) -> None:
        """Swap in mfpeft's exact fast layers where the family has them (SAM's padding-free windows)."""

    def feature_maps(self, module: nn.Module, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, S, S) -> the encoder's maps, channels-first: [(N, C, S/16, S/16)] or four levels 1/4 ... 1/32."""
        raise NotImplementedError

    def feature_channels(self, config: PreTrainedConfig) -> list[int]:
        """Channels of each map of `feature_maps` (one entry: a single 1/16 map)."""
        return [self.hidden_size(config)]

    def needs_neck(self) -> bool:
        """Whether MFNet adds its trainable neck (SAM brings its own, 256 wide)."""
        return True

    def init_weights(self, module: nn.Module) -> None:
        """Tables that must start at a fixed value until real weights are loaded over them."""

    # -- loading -------------------------------------------------------------------------------------------------
    def load(
        self, name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
    ) -> EncoderWeights:
        """Released weights (Hub id or local folder) adapted to ``image_size``."""
        raise NotImplementedError

    def adapt_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], config: PreTrainedConfig
    ) -> dict[str, torch.Tensor]:
        """Resize the size-dependent tensors of a state dict of the `build` module to ``config``'s chip size."""
        return dict(state_dict)

    # -- tuners --------------------------------------------------------------------------------------------------
    def role_names(self, config: PreTrainedConfig) -> dict[str, str]:
        """Role -> module name inside a layer, for this config (a gated MLP has a gate, a plain one none)."""
        return dict(self.roles)

    def gated_mlp(self, config: PreTrainedConfig) -> bool:
        return False


def resize_grid_table(table: torch.Tensor, grid: int, antialias: bool = False) -> torch.Tensor:
    """Resize a (1, G, G, D) position table to (1, grid, grid, D): bicubic, align_corners=False, in float32."""
    if table.shape[1] == grid and table.shape[2] == grid:
        return table
    resized = F.interpolate(
        table.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False, antialias=antialias
    )
    return resized.permute(0, 2, 3, 1).to(table.dtype).contiguous()


def tokens_to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch tokens (N, grid², D) -> a channels-first map (N, D, grid, grid)."""
    return tokens.transpose(1, 2).unflatten(2, (grid, grid))


def vit_patch_map(module: Any, pixel_values: torch.Tensor, patch: int, skip: int) -> list[torch.Tensor]:
    """A plain ViT's (transformers ``*Model``) last hidden states without its first ``skip`` tokens ([CLS],
    registers), as one channels-first map: (N, 3, S, S) -> [(N, D, S / patch, S / patch)]."""
    tokens = module(pixel_values=pixel_values).last_hidden_state[:, skip:]
    return [tokens_to_map(tokens, pixel_values.shape[-1] // patch)]


def layer_key_pattern(family: EncoderFamily, prefix: str = "vision_encoder") -> str:
    """Regex of one encoder layer in MFNet (or in a peft model around it), ending in ``.``."""
    return rf"(?:.*\.)?{re.escape(prefix)}\.{family.layer_pattern}"
