"""The multimodal tuner config: the fields every tuner shares and the interface by which a tuner describes itself.

The model layer knows a tuner only through this interface (`MultimodalConfig.display_name`, `describe`,
`card_description`, `explain_weight_shape`) and `registration.is_multimodal_peft_type`: saving, checking and
loading an adapter folder and writing its model card need no tuner's name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peft.config import PeftConfig

from ..common.validation import check_number
from .base import check_num_modalities
from .registration import peft_type_of

ADAPTER_CONFIG = "adapter_config.json"

SaveHook = Callable[[str, "MultimodalConfig"], None]
"""``hook(save_directory, adapter_config)``, called after a multimodal config wrote its ``adapter_config.json``."""

_SAVE_HOOKS: list[SaveHook] = []


def add_save_hook(hook: SaveHook) -> SaveHook:
    """Call ``hook`` each time a multimodal config is saved (idempotent); returns it, so it can decorate.

    `peft.PeftModel.save_pretrained` ends by saving each adapter's config into the adapter's folder: this is the
    point where the layer that owns the whole folder (MFNet's ``config.json`` and model card, `mfpeft.models`) adds
    its files, without the tuners knowing that layer.
    """
    if hook not in _SAVE_HOOKS:
        _SAVE_HOOKS.append(hook)
    return hook


@dataclass
class MultimodalConfig(PeftConfig):
    """Base config of the multimodal tuners (not used on its own).

    Attributes:
        num_modalities: M, the number of modalities stacked along the batch (modality-major).
        cross_modal: mix the modality branches with learnable λ (MFNet); False gives plain per-modality
            LoRA / adapters, the paper's Table IV ablation.
        init_lambda: initial value of every λ (0.5 in MFNet).
        target_modules: module names or a regular expression; None picks the default: on MFNet the encoder layers
            that play the tuner's roles (`target_roles`) in its family, on a bare SAM model SAM's layers.
        modules_to_save: modules trained in full and saved with the adapter; None picks the head for MFNet.
        encoder_hidden_size, encoder_num_layers, encoder_family: recorded at injection; loading onto another
            encoder size or family fails clearly.

    The tuned model's config is linked at injection when the model declares a trained head (`tuned_model_config`,
    not a saved field): the save hooks (`add_save_hook`) write it beside ``adapter_config.json``.

    A tuner describes itself by overriding `display_name`, `describe` and `card_description`, and by filling in
    `weight_dimensions` for load errors; its peft type is the one it was registered under.
    """

    num_modalities: int = field(default=2, metadata={"help": "number of modalities stacked along the batch"})
    cross_modal: bool = field(default=True, metadata={"help": "mix modality branches with learnable lambda"})
    init_lambda: float = field(default=0.5, metadata={"help": "initial fusion weight lambda"})
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "modules to adapt"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "modules trained in full"})
    encoder_hidden_size: int | None = field(default=None, metadata={"help": "recorded at injection"})
    encoder_num_layers: int | None = field(default=None, metadata={"help": "recorded at injection"})
    encoder_family: str | None = field(default=None, metadata={"help": "recorded at injection"})

    # For load errors: the dimensions of each saved tuner parameter that a config field sets,
    # {parameter name: ((dimension, field, what it counts), ...)}; filled in by each tuner.
    weight_dimensions: ClassVar[dict[str, tuple[tuple[int, str, str], ...]]] = {}

    # How people write the tuner's name ("MMLoRA"); empty: the registered peft type.
    display_name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = peft_type_of(type(self))  # type: ignore[assignment]
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

    def target_roles(self) -> tuple[str, ...]:
        """The encoder-layer roles (`mfpeft.models.encoders.ROLES`) the tuner sits on by default; each tuner's own."""
        return ()

    @property
    def tuner_name(self) -> str:
        """The tuner's name in prose: `display_name`, else its peft type."""
        return self.display_name or str(self.peft_type)

    def describe(self) -> str:
        """The tuner's size in a few words ("rank 4", "bottleneck 16"), for summaries; overridden by each tuner."""
        return self.tuner_name

    def card_description(self) -> str:
        """The tuner's settings as a phrase of the model card ("rank r = 4, alpha = 1.0"); `describe` by default."""
        return self.describe()

    @property
    def tuned_model_config(self) -> Any:
        """The config of the model this adapter was injected into, when it declares a trained head; else None."""
        return getattr(self, "_model_config", None)

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
        """Write ``adapter_config.json``, then run the save hooks (`add_save_hook`) on ``save_directory``."""
        super().save_pretrained(save_directory, **kwargs)
        for hook in _SAVE_HOOKS:
            hook(save_directory, self)
