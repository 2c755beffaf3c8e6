"""MMLoRA and MMAdapter on transformers' SAM encoder: counts, math, isolation, peft round trips, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import SamConfig, SamModel, SamVisionModel

import mfpeft
from mfpeft.tuners.base import mix_modalities, mixing_matrix
from mfpeft.tuners.mmadapter.layer import MMAdapterParallel, MMAdapterSequential
from mfpeft.tuners.mmlora.layer import MMLoraLayer, MMLoraQV
from tests.sam_fixtures import make_tiny_sam, redraw_, tiny_sam_config

CONFIGS = {"mmlora": mfpeft.MMLoraConfig, "mmadapter": mfpeft.MMAdapterConfig}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encode(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).last_hidden_state


def randomise_tuners_(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every tuner weight a non-trivial value (B starts at zero, λ at 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "mmlora_" in name or "mmadapter_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator) + (0.5 if "lambda" in name else 0))


@pytest.mark.parametrize(("tuner", "expected"), [("mmlora", 1_032_240), ("mmadapter", 14_201_880)])
def test_vit_b_trainable_counts_match_the_paper(tuner: str, expected: int) -> None:
    model = SamVisionModel(mfpeft.sam_vision_config("vit-b"))
    peft_model = get_peft_model(model, CONFIGS[tuner]())
    assert trainable(peft_model) == expected
    for name, param in peft_model.named_parameters():
        assert param.requires_grad == (f"{tuner}_" in name), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("size", "tuner", "expected"),
    [
        ("vit-l", "mmlora", 2_752_608),
        ("vit-l", "mmadapter", 50_454_576),
        ("vit-h", "mmlora", 4_587_648),
        ("vit-h", "mmadapter", 105_062_464),
    ],
)
def test_large_trainable_counts_match_the_paper(size: str, tuner: str, expected: int) -> None:
    with torch.device("meta"):
        model = SamVisionModel(mfpeft.sam_vision_config(size))
    assert trainable(get_peft_model(model, CONFIGS[tuner]())) == expected


def test_default_targets_on_sam_model_and_vision_model() -> None:
    vision = tiny_sam_config()
    full = SamModel(SamConfig(vision_config=vision.to_dict()))
    peft_model = get_peft_model(full, mfpeft.MMLoraConfig())
    wrapped = [n for n, m in peft_model.named_modules() if isinstance(m, MMLoraLayer)]
    assert len(wrapped) == 3 * vision.num_hidden_layers
    assert all(".vision_encoder.layers." in n for n in wrapped)
    adapter = get_peft_model(SamVisionModel(vision), mfpeft.MMAdapterConfig())
    kinds = {type(m) for m in adapter.modules()}
    assert {MMAdapterSequential, MMAdapterParallel} <= kinds


def test_mmlora_at_init_equals_frozen_encoder(tiny_sam: SamVisionModel) -> None:
    pixel_values = torch.rand(4, 3, 256, 256)
    with torch.no_grad():
        frozen = encode(tiny_sam, pixel_values)
        tuned = encode(get_peft_model(tiny_sam, mfpeft.MMLoraConfig()), pixel_values)
    torch.testing.assert_close(tuned, frozen, rtol=0, atol=0)


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_one_step_changes_only_tuner_weights(tiny_sam: SamVisionModel, tuner: str) -> None:
    peft_model = get_peft_model(tiny_sam, CONFIGS[tuner]())
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.SGD(
        [p for p in peft_model.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=5e-4
    )
    loss = encode(peft_model, torch.rand(4, 3, 256, 256)).square().mean()
    loss.backward()
    optimizer.step()
    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert all(f"{tuner}_" in n for n in changed)
    assert any("lambda" in n for n in changed)
    # B starts at zero; A must change too once B moved (second step) but B must move at the first.
    if tuner == "mmlora":
        assert any("mmlora_B" in n for n in changed)


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_perturbing_one_sample_changes_only_that_sample(tuner: str, attn: str) -> None:
    model = make_tiny_sam(attn=attn)
    peft_model = get_peft_model(model, CONFIGS[tuner]())
    randomise_tuners_(peft_model)
    batch = 3
    pixel_values = torch.rand(2 * batch, 3, 256, 256)
    perturbed = pixel_values.clone()
    perturbed[1] += torch.rand(3, 256, 256)  # modality 0, sample 1
    with torch.no_grad():
        out = encode(peft_model, pixel_values).unflatten(0, (2, batch))
        new = encode(peft_model, perturbed).unflatten(0, (2, batch))
    moved = (out - new).abs().flatten(2).amax(-1)  # (modality, sample)
    assert moved[0, 1] > 1e-3 and moved[1, 1] > 1e-3, "the sample must change in every modality"
    others = torch.ones_like(moved, dtype=torch.bool)
    others[:, 1] = False
    assert moved[others].max() == 0


def test_without_cross_modal_streams_are_independent(tiny_sam: SamVisionModel) -> None:
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig(cross_modal=False))
    assert not any("lambda" in n for n, _ in peft_model.named_parameters())
    randomise_tuners_(peft_model)
    pixel_values = torch.rand(4, 3, 256, 256)
    perturbed = pixel_values.clone()
    perturbed[0] += 1
    with torch.no_grad():
        out = encode(peft_model, pixel_values)
        new = encode(peft_model, perturbed)
    assert (out[0] - new[0]).abs().max() > 1e-3
    assert torch.equal(out[2], new[2])  # modality 1 of the same sample is untouched


def test_mix_modalities_matches_the_paper_and_the_extension() -> None:
    deltas = torch.randn(2, 5)
    lam = torch.tensor([0.3, 0.8])
    torch.testing.assert_close(mix_modalities(deltas, lam)[0], 0.3 * deltas[0] + 0.7 * deltas[1])
    torch.testing.assert_close(mix_modalities(deltas, lam)[1], 0.8 * deltas[1] + 0.2 * deltas[0])
    three = torch.randn(3, 4)
    lam3 = torch.tensor([0.5, 0.1, 0.9])
    expected = torch.stack([lam3[m] * three[m] + (1 - lam3[m]) / 2 * (three.sum(0) - three[m]) for m in range(3)])
    torch.testing.assert_close(mix_modalities(three, lam3), expected)


def test_mmlora_layer_equals_the_formula() -> None:
    """One wrapped lin1 computes W0·x + b + λx·Bx·Ax·x + (1-λx)·By·Ay·y, and qkv adds scaled LoRA to q, v only."""
    model = make_tiny_sam()
    peft_model = get_peft_model(model, mfpeft.MMLoraConfig(r=2, alpha=3))
    randomise_tuners_(peft_model)
    lin1 = peft_model.base_model.model.vision_encoder.layers[0].mlp.lin1
    assert isinstance(lin1, MMLoraLayer)
    x, y = torch.randn(5, 32), torch.randn(5, 32)
    a, b, lam = lin1.mmlora_A["default"], lin1.mmlora_B["default"], lin1.mmlora_lambda["default"]
    base = lin1.base_layer
    with torch.no_grad():
        out = lin1(torch.cat([x, y]))
        dx, dy = x @ a[0].T @ b[0].T, y @ a[1].T @ b[1].T
        torch.testing.assert_close(out[:5], base(x) + lam[0] * dx + (1 - lam[0]) * dy)
        torch.testing.assert_close(out[5:], base(y) + lam[1] * dy + (1 - lam[1]) * dx)
    qkv = peft_model.base_model.model.vision_encoder.layers[0].attn.qkv
    assert isinstance(qkv, MMLoraQV)
    a, b = qkv.mmlora_A["default"], qkv.mmlora_B["default"]
    with torch.no_grad():
        out = qkv(torch.cat([x, y]))[:5]
        q, k, v = out.split(32, dim=-1)
        bq, bk, bv = qkv.base_layer(x).split(32, dim=-1)
        torch.testing.assert_close(q, bq + 1.5 * x @ a[0, 0].T @ b[0, 0].T)
        torch.testing.assert_close(k, bk)
        torch.testing.assert_close(v, bv + 1.5 * x @ a[0, 1].T @ b[0, 1].T)


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_mixing_matrix_is_mix_modalities(num_modalities: int) -> None:
    deltas = torch.randn(num_modalities, 7)
    lam = torch.rand(num_modalities)
    torch.testing.assert_close(mixing_matrix(lam) @ deltas, mix_modalities(deltas, lam))


@pytest.mark.parametrize("cross_modal", [True, False])
def test_mmlora_three_modalities_equal_the_formula(cross_modal: bool) -> None:
    """Rank-space mixing for M = 3: out_m = W0·x_m + b + Σ_k W[m, k]·B_k·A_k·x_k (W from λ), or per modality."""
    peft_model = get_peft_model(make_tiny_sam(), mfpeft.MMLoraConfig(num_modalities=3, cross_modal=cross_modal))
    randomise_tuners_(peft_model, seed=3)
    lin1 = peft_model.base_model.model.vision_encoder.layers[1].mlp.lin1
    streams = torch.randn(3, 4, 32)
    a, b = lin1.mmlora_A["default"], lin1.mmlora_B["default"]
    with torch.no_grad():
        out = lin1(streams.reshape(12, 32)).reshape(3, 4, -1)
        deltas = torch.stack([streams[k] @ a[k].T @ b[k].T for k in range(3)])
        if cross_modal:
            deltas = mix_modalities(deltas, lin1.mmlora_lambda["default"])
        torch.testing.assert_close(out, lin1.base_layer(streams) + deltas)


def test_mmadapter_layers_equal_the_formula() -> None:
    model = make_tiny_sam()
    peft_model = get_peft_model(model, mfpeft.MMAdapterConfig())
    randomise_tuners_(peft_model)
    layer = peft_model.base_model.model.vision_encoder.layers[0]
    mlp, proj = layer.mlp, layer.attn.proj
    x, y = torch.randn(5, 32), torch.randn(5, 32)

    def adapter(module: torch.nn.Module, m: int, t: torch.Tensor) -> torch.Tensor:
        dw, db = module.mmadapter_down_weight["default"][m], module.mmadapter_down_bias["default"][m]
        uw, ub = module.mmadapter_up_weight["default"][m], module.mmadapter_up_bias["default"][m]
        return torch.nn.functional.gelu(t @ dw.T + db) @ uw.T + ub

    with torch.no_grad():
        lam = mlp.mmadapter_lambda["default"]
        out = mlp(torch.cat([x, y]))
        base = mlp.base_layer
        torch.testing.assert_close(out[:5], base(x) + lam[0] * adapter(mlp, 0, x) + (1 - lam[0]) * adapter(mlp, 1, y))
        out = proj(torch.cat([x, y]))
        a = proj.base_layer(y)
        torch.testing.assert_close(out[5:], a + adapter(proj, 1, a))
    assert mlp.mmadapter_down_weight["default"].shape == (2, 8, 32)


def test_three_modalities_forward_and_counts() -> None:
    model = make_tiny_sam()
    peft_model = get_peft_model(model, mfpeft.MMLoraConfig(num_modalities=3))
    lam = peft_model.base_model.model.vision_encoder.layers[0].mlp.lin1.mmlora_lambda["default"]
    assert lam.shape == (3,)
    assert encode(peft_model, torch.rand(6, 3, 256, 256)).shape == (6, 16, 16, 16)


def test_single_modality_has_no_lambda() -> None:
    peft_model = get_peft_model(make_tiny_sam(), mfpeft.MMAdapterConfig(num_modalities=1))
    assert not any("lambda" in n for n, _ in peft_model.named_parameters())
    assert encode(peft_model, torch.rand(1, 3, 256, 256)).shape[0] == 1


def test_save_load_in_a_fresh_process_gives_identical_outputs(tmp_path: Path) -> None:
    for tuner in ("mmlora", "mmadapter"):
        base_dir, adapter_dir = tmp_path / f"{tuner}-base", tmp_path / f"{tuner}-adapter"
        model = make_tiny_sam(seed=3)
        model.save_pretrained(base_dir)
        peft_model = get_peft_model(model, CONFIGS[tuner]())
        randomise_tuners_(peft_model)
        pixel_values = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = encode(peft_model, pixel_values)
        peft_model.save_pretrained(adapter_dir)
        torch.save({"x": pixel_values, "y": expected}, tmp_path / f"{tuner}.pt")

        saved = load_file(adapter_dir / "adapter_model.safetensors")
        assert saved and all(f".{tuner}_" in k for k in saved), sorted(saved)[:5]
        assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == tuner.upper()

        script = textwrap.dedent(
            f"""
            import torch, mfpeft
            from peft import PeftModel
            from transformers import SamVisionModel
            data = torch.load({str(tmp_path / f"{tuner}.pt")!r})
            base = SamVisionModel.from_pretrained({str(base_dir)!r}, attn_implementation="eager")
            model = PeftModel.from_pretrained(base, {str(adapter_dir)!r}).eval()
            with torch.no_grad():
                out = model(pixel_values=data["x"]).last_hidden_state
            assert torch.equal(out, data["y"]), (out - data["y"]).abs().max()
            print("identical")
            """
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "identical" in result.stdout, result.stderr[-2000:]


def test_named_adapters_switch_and_disable(tiny_sam: SamVisionModel, tmp_path: Path) -> None:
    pixel_values = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        frozen = encode(tiny_sam, pixel_values)
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig(), adapter_name="first")
    peft_model.add_adapter("second", mfpeft.MMLoraConfig(r=2))
    randomise_tuners_(peft_model)
    with torch.no_grad():
        peft_model.set_adapter("first")
        first = encode(peft_model, pixel_values)
        peft_model.set_adapter("second")
        second = encode(peft_model, pixel_values)
        with peft_model.disable_adapter():
            disabled = encode(peft_model, pixel_values)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(disabled, frozen, rtol=0, atol=0)
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() or (tmp_path / "first").exists()


def test_merge_is_refused_with_an_explanation(tiny_sam: SamVisionModel) -> None:
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig())
    with pytest.raises(ValueError, match="cannot be merged"):
        peft_model.merge_and_unload()
    with pytest.raises((ValueError, NotImplementedError), match="cannot be merged"):
        peft_model.merge_adapter()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gradient_checkpointing_gives_the_same_gradients(attn: str) -> None:
    grads = []
    for checkpointing in (False, True):
        model = make_tiny_sam(attn=attn)
        peft_model = get_peft_model(model, mfpeft.MMLoraConfig())
        randomise_tuners_(peft_model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
        encode(peft_model, torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))).sum().backward()
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_torch_compile_matches_eager(tiny_sam: SamVisionModel) -> None:
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig())
    randomise_tuners_(peft_model)
    pixel_values = torch.rand(2, 3, 256, 256)
    encoder = peft_model.base_model.model.vision_encoder
    compiled = torch.compile(encoder, backend="aot_eager", dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).last_hidden_state, encoder(pixel_values).last_hidden_state)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_config_values_are_named() -> None:
    with pytest.raises(ValueError, match="size='vit-x'"):
        mfpeft.sam_vision_config("vit-x")
    with pytest.raises(ValueError, match="r=0"):
        mfpeft.MMLoraConfig(r=0)
    with pytest.raises(ValueError, match="r=-2"):
        mfpeft.MMLoraConfig(r=-2)
    with pytest.raises(ValueError, match="num_modalities=0"):
        mfpeft.MMAdapterConfig(num_modalities=0)
    with pytest.raises(ValueError, match="bottleneck_ratio"):
        mfpeft.MMAdapterConfig(bottleneck_ratio=0)


def test_batch_that_does_not_split_into_modalities_is_refused(tiny_sam: SamVisionModel) -> None:
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig())
    with pytest.raises(ValueError, match=r"does not split into num_modalities=2"):
        encode(peft_model, torch.rand(3, 3, 256, 256))


def test_input_size_other_than_image_size_is_refused(tiny_sam: SamVisionModel) -> None:
    peft_model = get_peft_model(tiny_sam, mfpeft.MMLoraConfig())
    with pytest.raises(ValueError, match="doesn't match model"):
        encode(peft_model, torch.rand(2, 3, 512, 512))


def test_missing_target_module_is_refused(tiny_sam: SamVisionModel) -> None:
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(tiny_sam, mfpeft.MMLoraConfig(target_modules=["does_not_exist"]))


def test_unknown_model_type_needs_targets() -> None:
    with pytest.raises(ValueError, match="target_modules is None"):
        get_peft_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), mfpeft.MMLoraConfig())


def test_adapter_for_another_sam_size_is_refused(tmp_path: Path) -> None:
    large = redraw_(SamVisionModel(tiny_sam_config(hidden_size=48, num_attention_heads=2)))
    get_peft_model(large, mfpeft.MMLoraConfig()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hidden size 48 .* hidden size 32"):
        PeftModel.from_pretrained(make_tiny_sam(), tmp_path)
