"""Machinery shared by the multimodal tuners: modality split, cross-modal mixing, the base layer and tuner.

All modalities go through ONE encoder pass, stacked along the batch, modality-major: an encoder input of shape
(M·B, 3, H, W) holds modality 0's B chips first, then modality 1's, and so on. SAM's window partition is
batch-major, so every tensor inside the encoder keeps that order ((M·B·windows, ...) in window layers), and a
wrapped layer recovers the streams with ``x.unflatten(0, (M, -1))``. A side channel carrying the other modality
could not work: each stream's input at layer k depends on the other stream's earlier layers.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn
from transformers.models.sam.modeling_sam import SamVisionEncoder

# A bare `SamVisionModel` or `SamModel` is addressed by a regular expression over SAM's layers (the encoder at
# `vision_encoder`), so that nothing outside the encoder is matched. A model that knows its encoder (MFNet, any
# family) gives its own targets by role instead (`tuner_targets`, `tuner_role`, `tuner_encoder_signature`).
ENCODER_LAYER_PATTERN = r"(?:.*\.)?vision_encoder\.layers\.\d+\."


def split_modalities(x: torch.Tensor, num_modalities: int, module_name: str) -> torch.Tensor:
    """View a modality-major batch (M·N, ...) as (M, N·..., features).

    Raises:
        ValueError: when the batch does not split into `num_modalities` equal parts.
    """
    if x.shape[0] % num_modalities:
        raise ValueError(
            f"{module_name}: got a batch of {x.shape[0]} that does not split into num_modalities="
            f"{num_modalities} equal parts. Stack the modalities along the batch, modality-major: "
            "pixel_values of shape (num_modalities * batch, 3, H, W)."
        )
    return x.reshape(num_modalities, -1, x.shape[-1])


def mix_modalities(deltas: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """Cross-modal mixing of per-modality branch outputs.

    ``out_m = λ_m·d_m + (1 - λ_m)/(M - 1) · Σ_{k≠m} d_k``; for M = 2 this is MFNet's
    ``out_x = λx·d_x + (1 - λx)·d_y``. λ are raw learnable scalars (no sigmoid, no clamp).

    Args:
        deltas: (M, ...) one branch output per modality.
        lambdas: (M,) fusion weights.
    """
    num = deltas.shape[0]
    if num == 1:
        return deltas
    lam = lambdas.to(deltas.dtype).view(num, *([1] * (deltas.dim() - 1)))
    # For two modalities `flip` gives the other stream exactly; the sum form would add rounding error.
    others = deltas.flip(0) if num == 2 else (deltas.sum(0, keepdim=True) - deltas) / (num - 1)
    return lam * deltas + (1 - lam) * others


def mixing_matrix(lambdas: torch.Tensor) -> torch.Tensor:
    """The (M, M) matrix W of `mix_modalities`: ``out_m = Σ_k W[m, k]·d_k``.

    ``W[m, m] = λ_m`` and ``W[m, k] = (1 - λ_m)/(M - 1)`` for k ≠ m. Mixing is linear, so a tuner whose branch
    ends in a per-modality linear map (LoRA's B) can mix its low-rank hidden states instead of its full-width
    outputs: ``Σ_k W[m, k]·B_k·h_k = [W[m, 0]·h_0, ..., W[m, M-1]·h_{M-1}] @ [B_0; ...; B_{M-1}]``.
    """
    num = lambdas.shape[0]
    if num == 1:
        return lambdas.new_ones(1, 1)
    off = ((1 - lambdas) / (num - 1)).unsqueeze(1).expand(num, num)
    eye = torch.eye(num, dtype=torch.bool, device=lambdas.device)
    return torch.where(eye, lambdas.unsqueeze(1).expand(num, num), off)


def linear_init_(weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Initialise stacked per-modality weights (M, out, in) like M separate `nn.Linear` (kaiming-uniform a=√5)."""
    for m in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[m], a=5**0.5)
    if bias is not None:
        bound = 1 / weight.shape[-1] ** 0.5
        nn.init.uniform_(bias, -bound, bound)


class MultimodalTunerLayer(BaseTunerLayer):
    """Base of layers whose adapter weights are stacked per modality along a leading M dimension.

    Subclasses list their parameter dicts in `adapter_layer_names` (every name starting with the tuner prefix)
    and implement `update_layer` and `forward`.
    """

    other_param_names: tuple[str, ...] = ("num_modalities", "cross_modal")

    def _init_multimodal(self, base_layer: nn.Module, module_name: str) -> None:
        self.base_layer = base_layer
        self.module_name = module_name
        self.num_modalities: dict[str, int] = {}
        self.cross_modal: dict[str, bool] = {}
        self._disable_adapters = False
        self.merged_adapters = []

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise NotImplementedError(_MERGE_ERROR)

    def unmerge(self) -> None:
        raise NotImplementedError(_MERGE_ERROR)

    def _adapters_to_run(self) -> list[str]:
        if self.disable_adapters:
            return []
        return [name for name in self.active_adapters if name in self.num_modalities]

    def __repr__(self) -> str:
        return "mfpeft." + super().__repr__()  # type: ignore[misc]


_MERGE_ERROR = (
    "Multimodal tuners cannot be merged into the frozen SAM weights: the frozen encoder is shared by every "
    "modality while each modality has its own tuner weights, and the cross-modal term of MMLoRA/MMAdapter "
    "depends on the other modality's stream. Keep the adapter loaded (or call `unload()` to get SAM back)."
)


class MultimodalTuner(BaseTuner):
    """`BaseTuner` for the multimodal tuners: default targets per model type, head saving, size checks."""

    tuner_layer_cls: type[BaseTunerLayer] = MultimodalTunerLayer  # overridden by subclasses
    target_module_mapping: dict[str, str] = {}  # type: ignore[assignment]  # a regex per model type

    def _prepare_adapter_config(self, peft_config: PeftConfig, model_config: dict[str, Any]) -> PeftConfig:
        model_type = model_config.get("model_type")
        if getattr(peft_config, "target_modules", None) is None:
            if model_type not in self.target_module_mapping:
                raise ValueError(
                    f"{type(peft_config).__name__}.target_modules is None and model type {model_type!r} has no "
                    f"default targets (known: {sorted(self.target_module_mapping)}); pass target_modules."
                )
            peft_config.target_modules = self.target_module_mapping[model_type]  # type: ignore[attr-defined]
        return peft_config

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        config = self.peft_config[adapter_name]
        self._check_encoder_size(model, config, adapter_name)
        targets = getattr(model, "tuner_targets", None)
        roles = config.target_roles() if hasattr(config, "target_roles") else ()
        if getattr(config, "target_modules", None) is None and callable(targets) and roles:
            # The default targets come from the encoder module, by role (`MultimodalConfig.target_roles`).
            config.target_modules = targets(roles)  # type: ignore[attr-defined]
        head = getattr(model, "head_module_names", None)
        if getattr(config, "modules_to_save", None) is None and head is not None:
            config.modules_to_save = list(head)  # type: ignore[attr-defined]
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        model_config = getattr(model, "config", None)
        if head is not None and model_config is not None:
            # A link, not a field (`MultimodalConfig.tuned_model_config`): the save hooks write the model's current
            # config beside the adapter.
            object.__setattr__(config, "_model_config", model_config)

    @staticmethod
    def _check_encoder_size(model: nn.Module, config: PeftConfig, adapter_name: str) -> None:
        family, actual = encoder_signature(model)
        if actual is None:
            return
        recorded = getattr(config, "encoder_family", None)
        if recorded is not None and family is not None and recorded != family:
            raise ValueError(
                f"Adapter {adapter_name!r} was trained on a {recorded} encoder, but the base model's encoder is "
                f"{family}: load it onto the encoder family it was trained with."
            )
        expected = getattr(config, "encoder_hidden_size", None), getattr(config, "encoder_num_layers", None)
        if expected[0] is not None and tuple(expected) != actual:
            raise ValueError(
                f"Adapter {adapter_name!r} was trained on a {recorded or 'SAM'} encoder with hidden size "
                f"{expected[0]} and {expected[1]} layers, but the base model's encoder has hidden size {actual[0]} "
                f"and {actual[1]} layers: load it onto the encoder size it was trained with."
            )
        config.encoder_hidden_size, config.encoder_num_layers = actual  # type: ignore[attr-defined]
        if family is not None:
            config.encoder_family = family  # type: ignore[attr-defined]

    def _check_merge_allowed(self) -> None:
        raise ValueError(_MERGE_ERROR)

    def merge_and_unload(self, *args: Any, **kwargs: Any) -> nn.Module:
        raise ValueError(_MERGE_ERROR)

    def _check_new_adapter_config(self, config: PeftConfig) -> None:
        if getattr(config, "bias", "none") != "none":
            raise ValueError(f"{type(config).__name__} does not train biases of the frozen model")

    def _create_and_replace(
        self,
        peft_config: PeftConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
    ) -> None:
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, peft_config)  # type: ignore[attr-defined, operator]
            return
        new_module = self._create_new_module(peft_config, adapter_name, target, current_key)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _create_new_module(self, peft_config: PeftConfig, adapter_name: str, target: nn.Module, key: str) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def _check_target_module_exists(peft_config: PeftConfig, key: str) -> bool:
        from peft.tuners.tuners_utils import check_target_module_exists

        return bool(check_target_module_exists(peft_config, key))


def encoder_signature(model: nn.Module) -> tuple[str | None, tuple[int, int] | None]:
    """(family name, (hidden size, layers)) of the encoder a tuner goes on: from a model that describes its encoder
    (`tuner_encoder_signature`), else of the SAM encoder inside it (family None), else (None, None)."""
    describe = getattr(model, "tuner_encoder_signature", None)
    if callable(describe):
        family, hidden, layers = describe()
        return str(family), (int(hidden), int(layers))
    encoder = find_vision_encoder(model)
    if encoder is None:
        return None, None
    return None, (encoder.config.hidden_size, encoder.config.num_hidden_layers)


def target_role(model: nn.Module, key: str) -> str | None:
    """The role (`mfpeft.models.encoders.ROLES`) of module ``key`` in a model that knows its encoder, else None."""
    role_of = getattr(model, "tuner_role", None)
    return role_of(key) if callable(role_of) else None


def find_vision_encoder(model: nn.Module) -> SamVisionEncoder | None:
    """The encoder finder: `model` itself or the first transformers `SamVisionEncoder` inside it (MFNet,
    `SamVisionModel`, `SamModel`, a peft model), or None. The tuners check sizes on it, the fast path swaps it."""
    for module in model.modules():
        if isinstance(module, SamVisionEncoder):
            return module
    return None


def check_num_modalities(value: object) -> None:
    """ValueError unless `value` is a whole number of modalities, at least one."""
    from ..common.validation import check_number

    check_number("num_modalities", value, 1, integer=True)
