"""MMAdapter tuner: injects `MMAdapterLayer`s into SAM's encoder."""

from __future__ import annotations

from torch import nn

from ..base import ENCODER_LAYER_PATTERN, MultimodalTuner
from .config import MMAdapterConfig
from .layer import MMAdapterLayer, MMAdapterParallel, MMAdapterSequential

MMADAPTER_TARGETS = ENCODER_LAYER_PATTERN + r"(?:attn\.proj|mlp)"


class MMAdapterModel(MultimodalTuner):
    """Created by `peft.get_peft_model(model, MMAdapterConfig())`; see `MMAdapterConfig` for the math."""

    prefix = "mmadapter_"
    tuner_layer_cls = MMAdapterLayer
    target_module_mapping = {
        "sam_vision_model": MMADAPTER_TARGETS,
        "sam": MMADAPTER_TARGETS,
        "mfnet": MMADAPTER_TARGETS,
    }

    def _create_new_module(  # type: ignore[override]
        self, peft_config: MMAdapterConfig, adapter_name: str, target: nn.Module, key: str
    ) -> nn.Module:
        name = key.rsplit(".", 1)[-1]
        if name in peft_config.attention_modules:
            layer_cls: type[MMAdapterLayer] = MMAdapterSequential
        elif name in peft_config.mlp_modules:
            layer_cls = MMAdapterParallel
        else:
            raise ValueError(
                f"MMAdapter target {key!r} is neither an attention output ({peft_config.attention_modules}) "
                f"nor an MLP ({peft_config.mlp_modules})"
            )
        features = _features(target, key)
        return layer_cls(target, adapter_name, peft_config, key, features)


def _features(module: nn.Module, key: str) -> int:
    """Width D of a D -> D module (a Linear, or SAM's MLP block)."""
    if isinstance(module, nn.Linear):
        if module.in_features != module.out_features:
            raise ValueError(
                f"MMAdapter needs a D -> D module; {key} maps {module.in_features} -> {module.out_features}"
            )
        return module.in_features
    first = getattr(module, "lin1", None)
    if isinstance(first, nn.Linear):
        return first.in_features
    raise ValueError(f"MMAdapter cannot wrap {key} ({type(module).__name__}): not a Linear nor SAM's MLP block")
