"""Registers the multimodal tuners with peft.

`peft.utils.register_peft_method` only accepts names already in peft's closed `PeftType` enum, so our types
live in an enum of their own whose values equal their names: a member then hashes and compares equal to the plain
string read back from ``adapter_config.json``, and `PeftModel.from_pretrained` resolves it once mfpeft is imported.
"""

from __future__ import annotations

import enum


class MultimodalPeftType(str, enum.Enum):
    MMLORA = "MMLORA"
    MMADAPTER = "MMADAPTER"


def register_multimodal_tuners() -> None:
    """Insert MMLoRA and MMAdapter into peft's type mappings (idempotent)."""
    from peft import mapping

    from .mmadapter.config import MMAdapterConfig
    from .mmadapter.model import MMAdapterModel
    from .mmlora.config import MMLoraConfig
    from .mmlora.model import MMLoraModel

    for peft_type, config_cls, tuner_cls in (
        (MultimodalPeftType.MMLORA, MMLoraConfig, MMLoraModel),
        (MultimodalPeftType.MMADAPTER, MMAdapterConfig, MMAdapterModel),
    ):
        mapping.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls  # type: ignore[index]
        mapping.PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = tuner_cls  # type: ignore[index]
        # transformers' adapter integration assumes prefix == peft_type.lower() + "_".
        mapping.PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = peft_type.value.lower() + "_"  # type: ignore[index]
