"""Fields and saving shared by the multimodal tuner configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig

from .multimodal import check_num_modalities


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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_num_modalities(self.num_modalities)
        if not isinstance(self.cross_modal, bool):
            raise ValueError(f"cross_modal={self.cross_modal!r} must be True or False")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        """Write ``adapter_config.json`` and, for MFNet, ``config.json`` and the model card beside it."""
        super().save_pretrained(save_directory, **kwargs)
        model_config = getattr(self, "_model_config", None)
        if model_config is None:
            return
        from ..models.model_card import write_model_card

        model_config.save_pretrained(save_directory)
        write_model_card(save_directory, model_config.to_dict(), self)
