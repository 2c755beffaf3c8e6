"""Encoder optimisations: padding-free window layers, checkpointing and bf16 equal the stock path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers.models.sam.modeling_sam import SamVisionEncoder, SamVisionLayer

import mfpeft
from mfpeft.models.sam.fast_path import (
    EfficientSamVisionLayer,
    SamEncoderOptimizations,
    encoder_optimizations,
    optimize_sam_encoder,
    optimized_sam_encoder,
    restore_sam_encoder,
)
from tests.sam_fixtures import make_tiny_sam, redraw_, tiny_sam_config

TUNERS = {"mmlora": mfpeft.MMLoraConfig, "mmadapter": mfpeft.MMAdapterConfig}


def tuned_sam(tuner: str, attn: str = "eager", seed: int = 0, **overrides: object) -> Any:
    """A tiny SAM with a multimodal tuner (M = 2) whose weights are all random and non-zero."""
    sam = make_tiny_sam(seed=seed, attn=attn, **overrides)
    sam.requires_grad_(False)
    model = get_peft_model(sam, TUNERS[tuner]())
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model


def encoder_of(model: Any) -> Any:
    return model.base_model.model.vision_encoder


def images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(M·B, 3, 256, 256) with M = 2, B = batch / 2 (one chip per modality by default)."""
    return torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(seed))


def output_and_grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(pixel_values=x).last_hidden_state
    # A weighted sum so that every output element matters to the gradient.
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out.float() * weights).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def assert_grads_close(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], rtol: float) -> None:
    assert ref.keys() == got.keys() and ref
    for name in ref:
        scale = ref[name].abs().max().clamp_min(1e-12)
        assert (ref[name] - got[name]).abs().max() / scale < rtol, name


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_padding_free_equals_stock(tuner: str, attn: str) -> None:
    model = tuned_sam(tuner, attn)
    x = images()
    ref, ref_grads = output_and_grads(model, x)
    optimize_sam_encoder(model, padding_free=True)
    assert all(type(layer) is EfficientSamVisionLayer for layer in encoder_of(model).layers)
    got, got_grads = output_and_grads(model, x)
    assert (got - ref).abs().max() < 1e-5
    assert_grads_close(ref_grads, got_grads, 1e-5)


@pytest.mark.parametrize("window", [6, 8])
def test_padding_free_handles_several_and_no_padded_windows(window: int) -> None:
    # window 6: a 16-token axis is 2 full windows + one of 4 real rows; window 8: no padding at all.
    model = tuned_sam("mmlora", window_size=window, global_attn_indexes=[])
    x = images()
    ref, ref_grads = output_and_grads(model, x)
    with optimized_sam_encoder(model, attention="sdpa"):
        got, got_grads = output_and_grads(model, x)
    assert (got - ref).abs().max() < 1e-5
    assert_grads_close(ref_grads, got_grads, 1e-5)


def test_padded_tokens_hold_the_tuners_zero_input_output() -> None:
    # A qkv bias is not the whole story: a tuner may add something for a zero input. Add a per-modality offset
    # to qkv's output (as an adapter with a bias would) and check the optimised path still matches.
    model = tuned_sam("mmlora")
    layer = encoder_of(model).layers[0]
    offset = torch.randn(2, 1, 1, 1, layer.attn.qkv.base_layer.out_features)

    def add_offset(_: torch.nn.Module, __: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return (out.unflatten(0, (2, -1)) + offset).flatten(0, 1)

    layer.attn.qkv.register_forward_hook(add_offset)
    x = images()
    ref = output_and_grads(model, x)[0]
    optimize_sam_encoder(model)
    assert (output_and_grads(model, x)[0] - ref).abs().max() < 1e-5


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_mfnet_is_padding_free_by_default_with_identical_logits(attn: str) -> None:
    """MFNetConfig.padding_free_encoder (default True) swaps in the padding-free layers; False keeps stock ones."""
    generator = torch.Generator().manual_seed(0)
    inputs = {"optical": torch.rand(2, 3, 256, 256, generator=generator), "dsm": torch.rand(2, 1, 256, 256)}
    logits = {}
    for padding_free in (False, True):
        config = mfpeft.MFNetConfig(vision_config=tiny_sam_config(attn=attn), padding_free_encoder=padding_free)
        torch.manual_seed(0)
        base = mfpeft.MFNetForSegmentation(config)
        redraw_(base.vision_encoder)
        layers = {type(layer) for layer in base.vision_encoder.layers}
        assert layers == ({EfficientSamVisionLayer} if padding_free else {SamVisionLayer})
        model: Any = get_peft_model(base, mfpeft.MMAdapterConfig()).eval()
        with torch.no_grad():
            logits[padding_free] = model(pixel_values=inputs).logits
    assert (logits[True] - logits[False]).abs().max() < 1e-5
    assert logits[True].abs().max() > 0


def test_checkpointing_gives_identical_gradients_and_recomputes() -> None:
    model = tuned_sam("mmadapter")
    x = images()
    optimize_sam_encoder(model)
    ref, ref_grads = output_and_grads(model, x)
    optimize_sam_encoder(model, checkpoint_frozen=True)
    calls = []
    layer = encoder_of(model).layers[0]
    handle = layer.layer_norm1.register_forward_hook(lambda *_: calls.append(1))
    got, got_grads = output_and_grads(model, x)
    handle.remove()
    assert len(calls) == 2  # forward, then the recomputation in backward (which stops early after lin1)
    assert torch.equal(got, ref)
    assert_grads_close(ref_grads, got_grads, 1e-6)


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_bf16_frozen_weights_within_tolerance(tuner: str) -> None:
    model = tuned_sam(tuner)
    x = images()
    ref, ref_grads = output_and_grads(model, x)
    opts = optimize_sam_encoder(model, frozen_dtype="bf16", checkpoint_frozen=True)
    assert opts.autocast_dtype is torch.bfloat16
    encoder = encoder_of(model)
    frozen_linears = [m.weight for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(frozen_linears) == 4 * len(encoder.layers)
    assert all(weight.dtype is torch.bfloat16 for weight in frozen_linears)
    assert encoder.patch_embed.projection.weight.dtype is torch.bfloat16
    assert encoder.layers[0].layer_norm1.weight.dtype is torch.float32
    assert all(p.dtype is torch.float32 for p in model.parameters() if p.requires_grad)
    got, got_grads = output_and_grads(model, x)
    # Documented tolerance (docs/benchmarks.md): relative error of a few 1e-2 on tiny random encoders.
    assert (got.float() - ref).abs().max() / ref.abs().max() < 0.05
    for name in ref_grads:
        cosine = torch.nn.functional.cosine_similarity(ref_grads[name].flatten(), got_grads[name].flatten(), dim=0)
        assert cosine > 0.99, name


def test_autocast_only_keeps_fp32_weights() -> None:
    model = tuned_sam("mmlora")
    x = images()
    ref = output_and_grads(model, x)[0]
    optimize_sam_encoder(model, autocast_dtype=torch.bfloat16)
    assert all(p.dtype is torch.float32 for p in model.parameters())
    got = output_and_grads(model, x)[0]
    assert got.dtype is torch.bfloat16
    assert (got.float() - ref).abs().max() / ref.abs().max() < 0.05


def test_names_save_load_and_restore_unchanged(tmp_path: Path) -> None:
    model = tuned_sam("mmlora")
    x = images()
    keys = list(model.state_dict())
    ref = output_and_grads(model, x)[0]
    optimize_sam_encoder(model, checkpoint_frozen=True)
    assert list(model.state_dict()) == keys
    model.save_pretrained(tmp_path / "adapter")
    loaded: Any = PeftModel.from_pretrained(make_tiny_sam(seed=0), tmp_path / "adapter")
    optimize_sam_encoder(loaded)
    with torch.no_grad():
        assert (loaded(pixel_values=x).last_hidden_state - ref).abs().max() < 1e-5
    restore_sam_encoder(model)
    encoder = encoder_of(model)
    assert type(encoder) is SamVisionEncoder and all(type(layer) is SamVisionLayer for layer in encoder.layers)
    assert encoder_optimizations(model) is None
    assert torch.equal(output_and_grads(model, x)[0], ref)


def test_hidden_states_are_still_recorded() -> None:
    model = tuned_sam("mmlora")
    x = images()
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True).hidden_states
        optimize_sam_encoder(model)
        got = model(pixel_values=x, output_hidden_states=True).hidden_states
    assert len(got) == len(ref)
    assert max((a - b).abs().max().item() for a, b in zip(ref, got)) < 1e-5


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"frozen_dtype": "int8"}, "frozen_dtype"),
        ({"autocast_dtype": 3}, "autocast_dtype"),
        ({"frozen_dtype": "bf16", "autocast_dtype": "fp16"}, "frozen_dtype"),
        ({"attention": "flash"}, "attention"),
        ({"padding_free": 1}, "padding_free"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamEncoderOptimizations(**settings)  # type: ignore[arg-type]


def test_model_without_sam_encoder_is_rejected() -> None:
    with pytest.raises(ValueError, match="no transformers SamVisionEncoder"):
        optimize_sam_encoder(torch.nn.Linear(2, 2))


def test_switching_from_bf16_weights_back_to_fp32_runs() -> None:
    model = tuned_sam("mmlora")
    optimize_sam_encoder(model, frozen_dtype="bf16")
    optimize_sam_encoder(model, checkpoint_frozen=True)
    assert all(p.dtype is torch.float32 for p in model.parameters())
    assert output_and_grads(model, images())[0].dtype is torch.float32


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward (parameters included)."""
    storages: dict[int, int] = {}

    def pack(saved: torch.Tensor) -> torch.Tensor:
        storages[saved.untyped_storage().data_ptr()] = saved.untyped_storage().nbytes()
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda saved: saved):
        model(x)
    return sum(storages.values())


def test_recomputing_the_activation_gives_identical_gradients_and_keeps_less() -> None:
    model = tuned_sam("mmlora")
    x = images()
    optimize_sam_encoder(model, recompute_activation=False)
    ref, ref_grads = output_and_grads(model, x)
    kept = saved_bytes(model, x)
    optimize_sam_encoder(model, recompute_activation=True)
    got, got_grads = output_and_grads(model, x)
    assert torch.equal(got, ref)
    assert ref_grads.keys() == got_grads.keys()
    assert all(torch.equal(got_grads[name], ref_grads[name]) for name in ref_grads)
    # One (tokens, mlp_dim) float32 activation per layer is no longer kept.
    encoder = encoder_of(model)
    config = encoder.config
    tokens = x.shape[0] * (x.shape[-1] // config.patch_size) ** 2
    assert kept - saved_bytes(model, x) >= len(encoder.layers) * tokens * config.mlp_dim * 4
