"""Reading a family's released weights from a Hub id or a local transformers folder (safetensors only)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig

from .base import EncoderFamily, EncoderLoadError


def read_config(family: EncoderFamily, name_or_path: str) -> PreTrainedConfig:
    """The checkpoint's full config (``config.json``); EncoderLoadError naming the source when unreadable."""
    from ..sam.loading import find_safetensors

    folder = Path(name_or_path).expanduser()
    if folder.is_file():
        raise EncoderLoadError(
            f"{folder}: a {family.display_name} encoder loads from a transformers folder (config.json + "
            "model.safetensors) or a Hub id, not a single file"
        )
    if folder.is_dir() and find_safetensors(folder, "model.safetensors") is None:
        raise EncoderLoadError(
            f"{folder}: no model.safetensors; a model folder holds config.json and model.safetensors"
        )
    try:
        return AutoConfig.from_pretrained(str(folder) if folder.is_dir() else name_or_path)
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EncoderLoadError(
            f"Could not load {family.display_name} {name_or_path!r} ({reason}). Without access to the Hugging Face "
            f"Hub, download it elsewhere (`hf download {name_or_path}`) and pass the local folder."
        ) from error


def read_pretrained(
    family: EncoderFamily,
    name_or_path: str,
    model_classes: Mapping[str, tuple[type[nn.Module], str]],
    attn_implementation: str | None = None,
) -> tuple[PreTrainedConfig, dict[str, torch.Tensor]]:
    """(encoder config at its native size, state dict of the encoder module) of a Hub id or folder.

    ``model_classes`` maps the checkpoint's ``model_type`` to the transformers class that reads it and the
    attribute path of the encoder module inside it ("" for the model itself), so that transformers' own key
    conversions of older checkpoints apply.
    """
    full = read_config(family, name_or_path)
    if full.model_type not in model_classes:
        raise EncoderLoadError(
            f"{name_or_path}: config model_type {full.model_type!r} is not a {family.display_name} checkpoint "
            f"({', '.join(model_classes)})"
        )
    model_cls, path = model_classes[full.model_type]
    kwargs: dict[str, Any] = {"use_safetensors": True, "output_loading_info": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    from ..sam.loading import _quiet_transformers

    folder = Path(name_or_path).expanduser()
    try:
        with _quiet_transformers():
            model, info = model_cls.from_pretrained(str(folder) if folder.is_dir() else name_or_path, **kwargs)  # type: ignore[attr-defined]
    except (OSError, ValueError, RuntimeError) as error:
        raise EncoderLoadError(
            f"Could not read the {family.display_name} weights of {name_or_path!r}: {error}"
        ) from error
    missing = sorted(k for k in info.get("missing_keys", []) if k.startswith(path))
    if missing:
        raise EncoderLoadError(f"{name_or_path}: checkpoint lacks {len(missing)} encoder weights, e.g. {missing[:3]}")
    module = model.get_submodule(path) if path else model
    config = family.encoder_config_of(model.config)
    return config, {k: v.detach().clone() for k, v in module.state_dict().items()}
