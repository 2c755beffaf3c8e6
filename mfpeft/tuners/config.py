"""Fields and saving shared by the multimodal tuner configs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peft.config import PeftConfig

from ..common.validation import check_number
from .base import check_num_modalities

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class MultimodalConfig(PeftConfig):
    """Base config of the multimodal tuners (not used on its own).

    Attributes:
        num_modalities: M, the number of modalities stacked along the batch (modality-major).
        cross_modal: mix the modality branches with learnable λ (MFNet); False gives plain per-modality
            LoRA / adapters, the paper's Table IV ablation.
        init_lambda: initial value of every λ (0.5 in MFNet).
        target_modules: module names or a regular expression; None picks the default for the model type.
        modules_to_save: modules trained in full and saved with the adapter; None picks the head for MFNet.
        encoder_hidden_size, encoder_num_layers: recorded at injection; loading onto another SAM size fails clearly.

    When the tuned model is an MFNet, its config is linked at injection (not a saved field) and written as
    ``config.json`` with a model card beside ``adapter_config.json``, so the folder alone rebuilds the model.
    """

    num_modalities: int = field(default=2, metadata={"help": "number of modalities stacked along the batch"})
    cross_modal: bool = field(default=True, metadata={"help": "mix modality branches with learnable lambda"})
    init_lambda: float = field(default=0.5, metadata={"help": "initial fusion weight lambda"})
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "modules to adapt"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "modules trained in full"})
    encoder_hidden_size: int | None = field(default=None, metadata={"help": "recorded at injection"})
    encoder_num_layers: int | None = field(default=None, metadata={"help": "recorded at injection"})

    # For load errors: the dimensions of each saved tuner parameter that a config field sets,
    # {parameter name: ((dimension, field, what it counts), ...)}; filled in by each tuner.
    weight_dimensions: ClassVar[dict[str, tuple[tuple[int, str, str], ...]]] = {}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_num_modalities(self.num_modalities)
        if not isinstance(self.cross_modal, bool):
            raise ValueError(f"cross_modal={self.cross_modal!r} must be True or False")
        # λ weighs a modality's own branch against the others' (Eq. 11): a convex weight at the start.
        check_number("init_lambda", self.init_lambda, 0, 1)
        for name in ("encoder_hidden_size", "encoder_num_layers"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), 1, integer=True)
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)

    def explain_weight_shape(self, key: str, saved: Sequence[int], expected: Sequence[int]) -> str | None:
        """Which field disagrees with a saved weight ``key`` of shape ``saved`` (``expected`` built), or None."""
        for dim, name, counts in self.weight_dimensions.get(key.rsplit(".", 1)[-1], ()):
            if len(saved) == len(expected) and saved[dim] != expected[dim]:
                return (
                    f"{name}={getattr(self, name)!r} but the saved weights have {counts} {saved[dim]} "
                    f"({key} is {tuple(saved)}; this config gives {tuple(expected)})"
                )
        return None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs: Any) -> Any:
        """`PeftConfig.from_pretrained`, with a bad value's error naming the adapter_config.json it came from."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        except ValueError as error:
            folder = os.path.join(pretrained_model_name_or_path, subfolder or "")
            source = os.path.join(folder, ADAPTER_CONFIG)
            if not os.path.isdir(folder):
                source = f"{pretrained_model_name_or_path} ({ADAPTER_CONFIG})"
            if ADAPTER_CONFIG in str(error):  # peft's own "can't find" already names it
                raise
            raise ValueError(f"{source}: {error}") from error

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Write ``adapter_config.json`` and, for MFNet, ``config.json`` and the model card beside it."""
        super().save_pretrained(save_directory, **kwargs)
        model_config = getattr(self, "_model_config", None)
        if model_config is None:
            return
        from ..models.model_card import write_model_card

        model_config.save_pretrained(save_directory)
        write_model_card(save_directory, model_config.to_dict(), self)
