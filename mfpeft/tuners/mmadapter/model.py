"""MMAdapter tuner: injects `MMAdapterLayer`s into SAM's encoder."""

from __future__ import annotations

from torch import nn

from ..base import ENCODER_LAYER_PATTERN, MultimodalTuner, target_role
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

    def _prepare_adapter_config(self, peft_config, model_config):  # type: ignore[no-untyped-def, override]
        if peft_config.target_modules is None and not peft_config.mlp_adapters:
            peft_config.target_modules = ENCODER_LAYER_PATTERN + r"attn\.proj"  # a bare SAM: attention adapters only
        return super()._prepare_adapter_config(peft_config, model_config)

    def _create_new_module(  # type: ignore[override]
        self, peft_config: MMAdapterConfig, adapter_name: str, target: nn.Module, key: str
    ) -> nn.Module:
        name = key.rsplit(".", 1)[-1]
        role = target_role(self.model, key)
        if role == "attention_output" or (role is None and name in peft_config.attention_modules):
            layer_cls: type[MMAdapterLayer] = MMAdapterSequential
        elif role == "mlp" or (role is None and name in peft_config.mlp_modules):
            layer_cls = MMAdapterParallel
        else:
            raise ValueError(
                f"MMAdapter target {key!r} is neither an attention output ({peft_config.attention_modules}) "
                f"nor an MLP ({peft_config.mlp_modules})"
            )
        features = _features(target, key)
        return layer_cls(target, adapter_name, peft_config, key, features)


def _features(module: nn.Module, key: str) -> int:
    """Width D of a D -> D module: a Linear, or an MLP block (plain or gated; D is its first linear's input)."""
    if isinstance(module, nn.Linear):
        if module.in_features != module.out_features:
            raise ValueError(
                f"MMAdapter needs a D -> D module; {key} maps {module.in_features} -> {module.out_features}"
            )
        return module.in_features
    first = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
    if first is not None:
        return first.in_features
    raise ValueError(f"MMAdapter cannot wrap {key} ({type(module).__name__}): not a Linear nor an MLP block")
