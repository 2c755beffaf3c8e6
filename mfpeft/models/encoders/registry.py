"""The supported encoder families, and the one place a config, a checkpoint or a ``random:`` name finds its family."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedConfig

from .base import EncoderFamily, EncoderLoadError, EncoderWeights
from .dinov2 import DINOV2, DINOV2_WITH_REGISTERS
from .dinov3 import DINOV3_VIT
from .sam import SAM, SAM_HQ
from .sam2 import SAM2_HIERA

FAMILIES: dict[str, EncoderFamily] = {
    family.name: family for family in (SAM, SAM_HQ, SAM2_HIERA, DINOV2, DINOV2_WITH_REGISTERS, DINOV3_VIT)
}
ALIASES = {"sam2.1": "sam2", "hiera": "sam2", "dinov2-reg": "dinov2-registers", "dinov3-vit": "dinov3"}
RANDOM_PREFIX = "random:"


def supported() -> str:
    return ", ".join(FAMILIES)


def family_named(name: str) -> EncoderFamily:
    """The family of a user-written name ("sam", "dinov2-reg", ...); ValueError naming the supported ones."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in FAMILIES:
        raise ValueError(f"encoder family {name!r} is not supported; supported families: {supported()}")
    return FAMILIES[key]


def family_of(config: PreTrainedConfig | Mapping[str, Any]) -> EncoderFamily:
    """The family of a transformers config (or a config dict's ``model_type``); ValueError naming the supported."""
    model_type = config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    kind = model_type if model_type else type(config).__name__
    raise ValueError(
        f"vision_config of model_type {kind!r} is not a supported encoder; supported families: {supported()} "
        f"(model types {', '.join(t for f in FAMILIES.values() for t in f.model_types)})"
    )


def vision_config_from(value: PreTrainedConfig | Mapping[str, Any] | None) -> PreTrainedConfig:
    """An encoder config from a transformers config of any supported family (full-model configs give their
    encoder's), its dict (a ``config.json``'s; a dict without ``model_type`` is SAM's, as older mfpeft wrote), or
    None (SAM ViT-B at 256 x 256)."""
    from huggingface_hub.errors import StrictDataclassError

    if value is None:
        return SAM.random_config("vit-b", 256)
    if isinstance(value, Mapping):
        fields = dict(value)
        family = family_of(fields) if fields.get("model_type") else SAM
        fields.pop("model_type", None)
        try:
            config = family.config_class(**fields)
        except (StrictDataclassError, TypeError, ValueError) as error:  # a wrong type in a (tampered) config.json
            raise ValueError(f"vision_config: {' '.join(str(error).split())}") from None
        return family.encoder_config_of(config)
    if not isinstance(value, PreTrainedConfig):
        raise ValueError(f"vision_config must be a transformers config or a dict, got {type(value).__name__}")
    return family_of(value).encoder_config_of(value)


def split_random_spec(spec: str) -> tuple[EncoderFamily, str]:
    """``random:<family>-<size>`` (or SAM's older ``random:<size>``) -> (family, size).

    Raises:
        ValueError: naming the families and sizes there are.
    """
    body = spec.removeprefix(RANDOM_PREFIX)
    if body in SAM.sizes:
        return SAM, body
    for name in sorted({*FAMILIES, *ALIASES}, key=len, reverse=True):
        if body.lower().startswith(name + "-"):
            family = family_named(name)
            size = body[len(name) + 1 :]
            if size not in family.sizes:
                raise ValueError(f"{spec!r}: {family.name} sizes are {', '.join(family.sizes)}")
            return family, size
    examples = ", ".join(f"{RANDOM_PREFIX}{f.name}-{next(iter(f.sizes))}" for f in FAMILIES.values())
    raise ValueError(f"{spec!r} names no encoder; write {RANDOM_PREFIX}<family>-<size>, e.g. {examples}")


def random_encoder(spec: str, image_size: int, seed: int = 0) -> EncoderWeights:
    """A randomly initialised encoder at a usable scale (pipeline checks, benchmarks; not for real use).

    Weights are drawn like a ViT's (truncated normal, std 0.02, for every weight of two or more dimensions and
    for position tables; unit norms, zero biases): SAM's own init (1e-10) makes outputs nearly constant.
    """
    family, size = split_random_spec(spec)
    config = family.random_config(size, image_size)
    module = family.build(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.copy_(
                    torch.ones_like(param) if name.endswith("weight") and "norm" in name else torch.zeros_like(param)
                )
                continue
            if "layer_scale" in name or "lambda1" in name:
                param.fill_(1.0)
                continue
            param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * 0.02)
    return EncoderWeights(config, module.state_dict(), spec)


def detect_family(name_or_path: str) -> EncoderFamily:
    """The family of a checkpoint: a ``.pth`` / ``.safetensors`` file is Meta's SAM; a folder or Hub id by its
    config.json's model_type."""
    from pathlib import Path

    from ..sam.loading import _looks_like_hub_id

    path = Path(name_or_path).expanduser()
    if path.is_file() or path.suffix in (".pth", ".pt", ".safetensors"):
        return SAM  # its loader reads Meta's files and says when one is missing
    if not path.exists() and not _looks_like_hub_id(str(name_or_path)):
        raise EncoderLoadError(
            f"encoder checkpoint {str(name_or_path)!r} not found: it is neither a file, a folder, nor a Hub id"
        )
    from .loading import read_config

    config = read_config(SAM, name_or_path)
    try:
        return family_of(config)
    except ValueError as error:
        raise EncoderLoadError(f"{name_or_path}: {error}") from None


def load_encoder(
    name_or_path: str, image_size: int, *, rel_pos: str = "pretrained", attn_implementation: str | None = None
) -> EncoderWeights:
    """Any supported encoder, adapted to ``image_size``: a Hub id or folder (the family is read from its
    config.json), Meta's SAM ``.pth``, or ``random:<family>-<size>``.

    Raises:
        EncoderLoadError: the checkpoint cannot be found or read, or is no supported family.
        ValueError: a chip size the encoder cannot take, an unknown ``random:`` name.
    """
    if str(name_or_path).startswith(RANDOM_PREFIX):
        return random_encoder(str(name_or_path), image_size)
    family = detect_family(str(name_or_path))
    if rel_pos != "pretrained" and not family.has_rel_pos:
        raise ValueError(f"rel_pos={rel_pos!r} applies to SAM encoders; {name_or_path} is {family.display_name}")
    return family.load(str(name_or_path), image_size, rel_pos=rel_pos, attn_implementation=attn_implementation)
