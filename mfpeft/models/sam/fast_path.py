"""Faster, leaner forward passes of the frozen SAM encoder, switchable and equal to the stock path.

Three optimisations, applied in place to a transformers `SamVisionEncoder` (bare, or inside MFNet / a peft model):

- ``padding_free``: window layers run ``qkv``, attention and ``proj`` for the real tokens only, not for the window
  padding (at 256 x 256 input, 256 of the 784 tokens of a padded 28 x 28 grid); see `window_attention`. Per-token
  linears are the only thing a tuner changes, so wrapped tuners see the same inputs. Equal to the stock path up to
  float rounding (max abs diff ~1e-6 in fp32).
- ``recompute_activation``: the MLP's GELU output is not kept for backward where a tuner on ``lin2`` would keep it
  (MMLoRA's low-rank branch needs it); it is recomputed from ``lin1``'s output, which GELU's own backward keeps
  anyway (selective activation recomputation). Saves one (tokens, 4·D) tensor per layer (144 MiB of the 0.95 GiB a
  ViT-B MMLoRA step at batch 2 keeps); gradients are identical. Off by default: on CPU the recomputation costs
  about 0.2 s per ViT-B step and glibc's heap keeps the peak RSS where it was; it lowers live (e.g. CUDA) memory.
- ``checkpoint_frozen``: each encoder layer runs under non-reentrant `torch.utils.checkpoint`, so only the layer
  inputs are kept for backward and the layer is recomputed there. Gradients are identical.
- ``frozen_dtype`` / ``autocast_dtype``: the encoder runs under `torch.autocast` (CPU or CUDA), optionally with the
  frozen matmul weights (Linear and Conv2d) stored in bf16. Tuner weights, layer norms, position tables stay
  fp32, and so does the residual stream (the fp32 position embedding promotes it), which keeps the error small.

The optimisations swap the class of each `SamVisionLayer` (and of the encoder, for autocast) to a subclass, so
module names, state-dict keys, peft saving/loading and transformers' output hooks are unchanged.
`restore_sam_encoder` undoes everything except the bf16 rounding of stored weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.sam.modeling_sam import (
    SamMLPBlock,
    SamVisionAttention,
    SamVisionEncoder,
    SamVisionLayer,
    SamVisionSdpaAttention,
)

from ...tuners.base import find_vision_encoder
from .window_attention import padding_free_window_attention

AttentionKind = Literal["auto", "eager", "sdpa"]
ATTENTION_KINDS: tuple[str, ...] = ("auto", "eager", "sdpa")

_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def parse_dtype(value: str | torch.dtype | None, field: str = "dtype") -> torch.dtype | None:
    """``None``, a `torch.dtype` or a name ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.lower() in _DTYPES:
        return _DTYPES[value.lower()]
    raise ValueError(f"{field}={value!r} is not a dtype; use one of {sorted(_DTYPES)} or a torch.dtype")


@dataclass(frozen=True)
class SamEncoderOptimizations:
    """Which optimisations an encoder runs with (see the module docstring).

    Attributes:
        padding_free: skip the window padding's wasted work (exact up to rounding).
        recompute_activation: recompute the MLP's GELU output in backward instead of keeping it (exact).
        checkpoint_frozen: activation checkpointing of every encoder layer while gradients are recorded.
        frozen_dtype: dtype the frozen Linear/Conv2d weights are stored in (None: leave them as they are).
        autocast_dtype: run the encoder under `torch.autocast` with this dtype (None: no autocast, unless
            ``frozen_dtype`` is a low-precision dtype, which needs autocast and implies it).
        attention: attention math of the padding-free window layers: "eager" (explicit softmax), "sdpa"
            (`scaled_dot_product_attention`) or "auto" (whatever the layer's attention module uses).
    """

    padding_free: bool = True
    recompute_activation: bool = False
    checkpoint_frozen: bool = False
    frozen_dtype: torch.dtype | None = None
    autocast_dtype: torch.dtype | None = None
    attention: AttentionKind = "auto"

    def __post_init__(self) -> None:
        for field in ("padding_free", "recompute_activation", "checkpoint_frozen"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field}={getattr(self, field)!r} must be a bool")
        frozen = parse_dtype(self.frozen_dtype, "frozen_dtype")
        autocast = parse_dtype(self.autocast_dtype, "autocast_dtype")
        if autocast is torch.float32:
            autocast = None
        if autocast is None and frozen is not None and frozen is not torch.float32:
            autocast = frozen
        if frozen is not None and frozen is not torch.float32 and autocast is not frozen:
            raise ValueError(
                f"frozen_dtype={frozen} needs autocast_dtype={frozen} (or None), got autocast_dtype={autocast}"
            )
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={self.attention!r} must be one of {ATTENTION_KINDS}")
        object.__setattr__(self, "frozen_dtype", frozen)
        object.__setattr__(self, "autocast_dtype", autocast)


# ---------------------------------------------------------------------------------------------------------------
# Layer and encoder subclasses (installed by swapping `__class__`)


class EfficientSamVisionLayer(SamVisionLayer):
    """A `SamVisionLayer` that honours ``_mfpeft_optimizations``; same parameters and submodules."""

    _mfpeft_optimizations: SamEncoderOptimizations

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, H, W, D) -> (B, H, W, D)."""
        opts = self._mfpeft_optimizations
        transformers_checkpointing = self.gradient_checkpointing and self.training
        if opts.checkpoint_frozen and torch.is_grad_enabled() and not transformers_checkpointing:
            return cast(torch.Tensor, checkpoint(self._optimized_forward, hidden_states, use_reentrant=False))
        return self._optimized_forward(hidden_states)

    def _optimized_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        opts = self._mfpeft_optimizations
        normed = self.layer_norm1(hidden_states)
        if self.window_size > 0 and opts.padding_free:
            attn = cast(SamVisionAttention, self.attn)
            use_sdpa = (
                isinstance(attn, SamVisionSdpaAttention) if opts.attention == "auto" else opts.attention == "sdpa"
            )
            attended = padding_free_window_attention(attn, normed, self.window_size, use_sdpa)
        elif self.window_size > 0:
            height, width = normed.shape[1], normed.shape[2]
            windows, padding_shape = self.window_partition(normed, self.window_size)
            attended = self.window_unpartition(
                self.attn(hidden_states=windows)[0], self.window_size, padding_shape, (height, width)
            )
        else:
            attended = self.attn(hidden_states=normed)[0]
        hidden_states = hidden_states + attended
        normed = self.layer_norm2(hidden_states)
        if opts.recompute_activation and torch.is_grad_enabled() and isinstance(self.mlp, SamMLPBlock):
            return hidden_states + _mlp_recomputing_activation(self.mlp, normed)
        return cast(torch.Tensor, hidden_states + self.mlp(normed))


def _mlp_recomputing_activation(mlp: SamMLPBlock, normed: torch.Tensor) -> torch.Tensor:
    """``lin2(act(lin1(x)))`` with whatever ``lin2`` saves of ``act``'s output recomputed in backward.

    A saved-tensor hook swaps each saved view of the activation for the recipe to rebuild it (``act`` of the
    ``lin1`` output, which ``act``'s own backward keeps alive) and the view's geometry; other saved tensors pass.
    """
    hidden = mlp.lin1(normed)
    activated = mlp.act(hidden)
    storage = activated.untyped_storage().data_ptr()

    def pack(saved: torch.Tensor) -> Any:
        if saved.untyped_storage().data_ptr() != storage or saved.dtype != activated.dtype:
            return saved
        return (hidden, tuple(saved.shape), saved.stride(), saved.storage_offset())

    def unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        source, shape, stride, offset = packed
        return torch.as_strided(mlp.act(source), shape, stride, offset)

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return cast(torch.Tensor, mlp.lin2(activated))


class EfficientSamVisionEncoder(SamVisionEncoder):
    """A `SamVisionEncoder` that runs under autocast when its optimisations ask for it."""

    _mfpeft_optimizations: SamEncoderOptimizations

    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """(B, 3, S, S) -> `SamVisionEncoderOutput` (last_hidden_state in the autocast dtype when autocasting)."""
        dtype = self._mfpeft_optimizations.autocast_dtype
        if dtype is None or pixel_values is None:
            return super().forward(pixel_values, **kwargs)
        with torch.autocast(pixel_values.device.type, dtype=dtype):
            return super().forward(pixel_values, **kwargs)


def _encoder_to_optimise(module: nn.Module) -> SamVisionEncoder:
    """The SAM encoder in ``module`` (`mfpeft.tuners.base.find_vision_encoder`); ValueError when there is none."""
    encoder = find_vision_encoder(module)
    if encoder is None:
        raise ValueError(f"{type(module).__name__} contains no transformers SamVisionEncoder to optimise")
    return encoder


def _tuner_parameter_ids(encoder: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in encoder.modules():
        if isinstance(module, BaseTunerLayer):
            for name in module.adapter_layer_names:
                container = getattr(module, name, None)
                if isinstance(container, nn.Module):
                    ids.update(id(p) for p in container.parameters())
    return ids


def _frozen_matmul_parameters(encoder: nn.Module) -> Iterator[nn.Parameter]:
    """Frozen weights and biases of the encoder's Linear and Conv2d modules (not tuner weights)."""
    tuner_ids = _tuner_parameter_ids(encoder)
    for module in encoder.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            for param in module.parameters(recurse=False):
                if id(param) not in tuner_ids and not param.requires_grad:
                    yield param


def optimize_sam_encoder(
    model: nn.Module,
    *,
    padding_free: bool = True,
    recompute_activation: bool = False,
    checkpoint_frozen: bool = False,
    frozen_dtype: str | torch.dtype | None = None,
    autocast_dtype: str | torch.dtype | None = None,
    attention: AttentionKind = "auto",
) -> SamEncoderOptimizations:
    """Switch on encoder optimisations in place; see `SamEncoderOptimizations` for the flags.

    `model` is a `SamVisionEncoder` or any module holding one (MFNet, a peft model); apply before or after
    `peft.get_peft_model`. Calling again replaces the previous settings (weights stored in bf16 by an earlier call
    get their dtype back when ``frozen_dtype`` is None, keeping the bf16 rounding). With ``frozen_dtype`` the frozen
    Linear/Conv2d weights (``requires_grad=False``, not tuner weights) are cast in place; tuner weights added later
    are created in fp32 by the tuners.

    Returns:
        The settings now in force.
    """
    opts = SamEncoderOptimizations(
        padding_free=padding_free,
        recompute_activation=recompute_activation,
        checkpoint_frozen=checkpoint_frozen,
        frozen_dtype=cast(Any, frozen_dtype),
        autocast_dtype=cast(Any, autocast_dtype),
        attention=attention,
    )
    encoder = _encoder_to_optimise(model)
    if opts.frozen_dtype is None:
        # An earlier call may have stored the weights in bf16; without autocast they must be fp32 again.
        _restore_dtypes(encoder)
    else:
        originals: dict[str, torch.dtype] = getattr(encoder, "_mfpeft_original_dtypes", {})
        names = {id(p): n for n, p in encoder.named_parameters()}
        for param in _frozen_matmul_parameters(encoder):
            originals.setdefault(names[id(param)], param.dtype)
            param.data = param.data.to(opts.frozen_dtype)
        encoder._mfpeft_original_dtypes = originals  # type: ignore[assignment]
    for layer in encoder.layers:
        if not isinstance(layer, SamVisionLayer):
            raise ValueError(f"encoder layer {type(layer).__name__} is not a transformers SamVisionLayer")
        layer.__class__ = EfficientSamVisionLayer
        layer._mfpeft_optimizations = opts  # type: ignore[assignment]
    encoder.__class__ = EfficientSamVisionEncoder
    encoder._mfpeft_optimizations = opts  # type: ignore[assignment]
    _register_output_capture(encoder)
    return opts


def _register_output_capture(encoder: SamVisionEncoder) -> None:
    # transformers looks up which outputs a model can record (hidden states, attentions) by its class name, filled
    # in at construction; a swapped-in class must be registered too or `output_hidden_states` silently gives None.
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # other transformers versions record outputs without this registry
        return
    _CAN_RECORD_REGISTRY[encoder] = encoder._can_record_outputs


def encoder_optimizations(model: nn.Module) -> SamEncoderOptimizations | None:
    """The optimisations in force on the encoder inside `model`, or None for the stock encoder."""
    return cast(SamEncoderOptimizations | None, getattr(_encoder_to_optimise(model), "_mfpeft_optimizations", None))


def restore_sam_encoder(model: nn.Module) -> None:
    """Undo `optimize_sam_encoder`: stock classes and the weights' original dtypes.

    Weights stored in bf16 come back in their original dtype but keep the bf16 rounding.
    """
    encoder = _encoder_to_optimise(model)
    _restore_dtypes(encoder)
    for layer in encoder.layers:
        if isinstance(layer, EfficientSamVisionLayer):
            layer.__class__ = SamVisionLayer  # type: ignore[assignment]
            del layer._mfpeft_optimizations
    if isinstance(encoder, EfficientSamVisionEncoder):
        encoder.__class__ = SamVisionEncoder  # type: ignore[assignment]
        del encoder._mfpeft_optimizations


def _restore_dtypes(encoder: nn.Module) -> None:
    originals: dict[str, torch.dtype] = getattr(encoder, "_mfpeft_original_dtypes", {})
    for name, param in encoder.named_parameters():
        if name in originals:
            param.data = param.data.to(originals[name])
    if hasattr(encoder, "_mfpeft_original_dtypes"):
        del encoder._mfpeft_original_dtypes


@contextmanager
def optimized_sam_encoder(model: nn.Module, **settings: Any) -> Iterator[SamEncoderOptimizations]:
    """Context manager: `optimize_sam_encoder(model, **settings)` on entry, `restore_sam_encoder` on exit."""
    opts = optimize_sam_encoder(model, **settings)
    try:
        yield opts
    finally:
        restore_sam_encoder(model)
