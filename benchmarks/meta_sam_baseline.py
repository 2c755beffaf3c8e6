"""An independent baseline for the benchmarks: the paper's setup on Meta's own SAM image encoder.

The paper's implementation is not transformers: it is Meta's ``segment_anything`` `ImageEncoderViT` with the
tuners patched into its blocks. This module builds that setup from the paper's formulas (docs/tuners.md,
MMLoRA Eq. 9-12, MMAdapter Eq. 1-6), written the plain way, one modality stream after the other:

- the encoder: `ImageEncoderViT` at 256 x 256 (16 x 16 patches, windows of 14, SAM's global blocks, relative
  positions), the two modalities stacked along the batch (modality-major) and run through it together;
- MMLoRA: LoRA on the q and v slices of each block's ``attn.qkv`` (per modality, scaling alpha / r), and
  cross-modal MMLoRA on ``mlp.lin1`` / ``mlp.lin2``: ``x_o = W0 x + b + λx Bx Ax x + (1 - λx) By Ay y``;
- MMAdapter: after attention ``a = a + Adapter_m(a)`` per modality (on ``attn.proj``'s output), and beside the
  MLP ``MLP(xn) + λx MMA_x(xn) + (1 - λx) MMA_y(yn)``;
- the head: mfpeft's own Deep Fusion Module and UNetFormer decoder (taken from an `MFNetForSegmentation`).

`segment_anything` is the optional ``bench`` extra (``pip install -e ".[bench]"``). Its package ``__init__``
imports torchvision for the prompt predictor, which MFNet does not use, so only the two modules of the image
encoder are loaded here.

`equal_weights_check` is the self-test: mfpeft's MFNet and this baseline with the same frozen and tuner weights
give the same logits, so the benchmark times two implementations of one model.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MetaSamMFNet",
    "build_meta_baseline",
    "copy_tuner_weights",
    "equal_weights_check",
    "meta_image_encoder",
    "realistic_position_tables",
]


def _load_image_encoder_module() -> Any:
    """``segment_anything.modeling.image_encoder`` without running the package ``__init__`` (torchvision)."""
    name = "segment_anything.modeling.image_encoder"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the Meta-SAM baseline needs segment-anything: pip install -e '.[bench]'")
    root = Path(next(iter(spec.submodule_search_locations)))
    for package, folder in (("segment_anything", root), ("segment_anything.modeling", root / "modeling")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(folder)]
            sys.modules[package] = module
    for leaf in ("common", "image_encoder"):
        full = f"segment_anything.modeling.{leaf}"
        leaf_spec = importlib.util.spec_from_file_location(full, root / "modeling" / f"{leaf}.py")
        assert leaf_spec is not None and leaf_spec.loader is not None
        module = importlib.util.module_from_spec(leaf_spec)
        sys.modules[full] = module
        leaf_spec.loader.exec_module(module)
    return sys.modules[name]


def meta_image_encoder(size: str, image_size: int = 256) -> nn.Module:
    """Meta's `ImageEncoderViT` of a SAM size (``vit-b``, ``vit-l``, ``vit-h``, ``tiny``) at ``image_size``."""
    from mfpeft.models.sam.loading import SAM_SIZES

    spec = SAM_SIZES[size]
    module = _load_image_encoder_module()
    return module.ImageEncoderViT(
        img_size=image_size,
        patch_size=16,
        embed_dim=spec.hidden_size,
        depth=spec.num_hidden_layers,
        num_heads=spec.num_attention_heads,
        mlp_ratio=4.0,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=spec.global_attn_indexes,
    )


# ---------------------------------------------------------------------------------------------------------------
# The tuners, from the formulas, one stream at a time


def _streams(x: torch.Tensor, modalities: int) -> tuple[torch.Tensor, ...]:
    """A modality-major batch (M·N, ...) as M tensors (N, ...); window partitions keep the batch outermost."""
    return x.chunk(modalities, dim=0)


def _other(streams: tuple[torch.Tensor, ...], m: int) -> torch.Tensor:
    """The mean of the other streams (for two modalities: the other one)."""
    others = [s for k, s in enumerate(streams) if k != m]
    return others[0] if len(others) == 1 else torch.stack(others).mean(0)


class LoraQV(nn.Module):
    """``attn.qkv`` with per-modality LoRA on q and v (k untouched), no cross-modal term."""

    def __init__(self, base: nn.Linear, modalities: int, rank: int = 4, alpha: float = 1.0) -> None:
        super().__init__()
        self.base, self.modalities, self.scaling = base, modalities, alpha / rank
        dim = base.in_features
        self.A = nn.Parameter(torch.empty(modalities, 2, rank, dim))  # [m, 0] for q, [m, 1] for v
        self.B = nn.Parameter(torch.zeros(modalities, 2, dim, rank))
        for m in range(modalities):
            for j in range(2):
                nn.init.kaiming_uniform_(self.A.data[m, j], a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        dim = self.base.in_features
        for m, (xm, ym) in enumerate(zip(_streams(x, self.modalities), _streams(self.base(x), self.modalities))):
            q = ym[..., :dim] + F.linear(F.linear(xm, self.A[m, 0]), self.B[m, 0]) * self.scaling
            v = ym[..., 2 * dim :] + F.linear(F.linear(xm, self.A[m, 1]), self.B[m, 1]) * self.scaling
            out.append(torch.cat((q, ym[..., dim : 2 * dim], v), dim=-1))
        return torch.cat(out, dim=0)


class CrossModalLora(nn.Module):
    """``x_o = W0 x + b + λx Bx Ax x + (1 - λx) By Ay y`` (the scaling is not applied, as in the paper's code)."""

    def __init__(self, base: nn.Linear, modalities: int, rank: int = 4) -> None:
        super().__init__()
        self.base, self.modalities = base, modalities
        self.A = nn.Parameter(torch.empty(modalities, rank, base.in_features))
        self.B = nn.Parameter(torch.zeros(modalities, base.out_features, rank))
        self.lam = nn.Parameter(torch.full((modalities,), 0.5))
        for m in range(modalities):
            nn.init.kaiming_uniform_(self.A.data[m], a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = _streams(x, self.modalities)
        deltas = tuple(F.linear(F.linear(xm, self.A[m]), self.B[m]) for m, xm in enumerate(xs))
        base = _streams(self.base(x), self.modalities)
        mixed = [base[m] + self.lam[m] * deltas[m] + (1 - self.lam[m]) * _other(deltas, m) for m in range(len(xs))]
        return torch.cat(mixed, dim=0)


class _Adapters(nn.Module):
    """One bottleneck adapter per modality: Linear(D -> D/4) -> GELU -> Linear(D/4 -> D), both with bias."""

    def __init__(self, dim: int, modalities: int, reduction: int = 4) -> None:
        super().__init__()
        self.down = nn.ModuleList(nn.Linear(dim, dim // reduction) for _ in range(modalities))
        self.up = nn.ModuleList(nn.Linear(dim // reduction, dim) for _ in range(modalities))

    def branch(self, m: int, x: torch.Tensor) -> torch.Tensor:
        return self.up[m](F.gelu(self.down[m](x)))


class AdapterAfterAttention(nn.Module):
    """``attn.proj`` followed by ``a = a + Adapter_m(a)`` per modality."""

    def __init__(self, base: nn.Linear, modalities: int) -> None:
        super().__init__()
        self.base, self.modalities = base, modalities
        self.adapters = _Adapters(base.out_features, modalities)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        streams = _streams(self.base(x), self.modalities)
        return torch.cat([a + self.adapters.branch(m, a) for m, a in enumerate(streams)], dim=0)


class AdapterBesideMlp(nn.Module):
    """``MLP(xn) + λx MMA_x(xn) + (1 - λx) MMA_y(yn)`` with ``xn`` the block's ``norm2`` output."""

    def __init__(self, base: nn.Module, dim: int, modalities: int) -> None:
        super().__init__()
        self.base, self.modalities = base, modalities
        self.adapters = _Adapters(dim, modalities)
        self.lam = nn.Parameter(torch.full((modalities,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = _streams(x, self.modalities)
        branches = tuple(self.adapters.branch(m, xm) for m, xm in enumerate(xs))
        base = _streams(self.base(x), self.modalities)
        mixed = [base[m] + self.lam[m] * branches[m] + (1 - self.lam[m]) * _other(branches, m) for m in range(len(xs))]
        return torch.cat(mixed, dim=0)


def add_tuner(encoder: nn.Module, tuner: str, modalities: int) -> None:
    """Freeze the encoder and patch the tuner into every block (``mmlora`` or ``mmadapter``)."""
    encoder.requires_grad_(False)
    for block in encoder.blocks:
        if tuner == "mmlora":
            block.attn.qkv = LoraQV(block.attn.qkv, modalities)
            block.mlp.lin1 = CrossModalLora(block.mlp.lin1, modalities)
            block.mlp.lin2 = CrossModalLora(block.mlp.lin2, modalities)
        elif tuner == "mmadapter":
            block.attn.proj = AdapterAfterAttention(block.attn.proj, modalities)
            block.mlp = AdapterBesideMlp(block.mlp, block.norm2.normalized_shape[0], modalities)
        else:
            raise ValueError(f"tuner={tuner!r}: expected 'mmlora' or 'mmadapter'")


# ---------------------------------------------------------------------------------------------------------------
# The model: Meta's encoder + mfpeft's head


class MetaSamMFNet(nn.Module):
    """Meta's encoder with the tuners, and the DFM + decoder of an `MFNetForSegmentation` (whose own encoder is
    dropped). ``forward(pixel_values, labels)`` takes and returns what MFNet does (``.logits``, ``.loss``)."""

    def __init__(self, encoder: nn.Module, mfnet: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = mfnet.config
        mfnet.vision_encoder = None  # the head stays; the transformers encoder would only take memory
        self.head = mfnet

    def forward(self, pixel_values: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> Any:
        """``{name: (B, C_m, 256, 256)}`` -> logits (B, num_labels, 256, 256); loss with ``labels`` (B, 256, 256)."""
        from transformers.modeling_outputs import SemanticSegmenterOutput

        streams = []
        for name, channels in self.config.modality_channels.items():
            x = (pixel_values[name] - getattr(self.head, f"_mean_{name}")) / getattr(self.head, f"_std_{name}")
            streams.append(x.expand(-1, 3, -1, -1) if channels == 1 else x)
        features = self.encoder(torch.cat(streams, dim=0))  # (M·B, 256, 16, 16)
        logits = self.head.decode(list(features.float().unflatten(0, (len(streams), -1)).unbind(0)))
        loss = None if labels is None else F.cross_entropy(logits, labels.long(), ignore_index=255)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


def build_meta_baseline(size: str, tuner: str, mfnet: Any, seed: int = 0) -> MetaSamMFNet:
    """The baseline around ``mfnet``'s head: a seeded Meta encoder of ``size`` (position tables at the scale of
    a trained SAM, std 0.02) with ``tuner`` patched in."""
    torch.manual_seed(seed)
    encoder = meta_image_encoder(size, image_size=mfnet.config.image_size)
    realistic_position_tables(encoder)
    add_tuner(encoder, tuner, len(mfnet.config.modalities))
    return MetaSamMFNet(encoder, mfnet)


def realistic_position_tables(encoder: nn.Module) -> None:
    """Position tables at the scale of a trained SAM (std 0.02; both libraries start them at zero), so softmax
    and layer norms run in a normal regime; timings do not depend on the values."""
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w")):
                param.normal_(0, 0.02)


def meta_encoder_state_dict(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen encoder weights under Meta's own names (the tuner wrappers' ``.base.`` removed)."""
    return {k.replace(".base.", "."): v for k, v in encoder.state_dict().items() if _is_frozen_key(k)}


def _is_frozen_key(key: str) -> bool:
    return not any(part in key for part in (".A", ".B", ".lam", ".adapters."))


def copy_tuner_weights(peft_model: Any, baseline: MetaSamMFNet) -> None:
    """Copy mfpeft's tuner weights (``...layers.{i}.<site>.<weight>.default``) onto the baseline's blocks."""
    params = {n.removesuffix(".default"): p for n, p in peft_model.named_parameters() if n.endswith(".default")}
    with torch.no_grad():
        for i, block in enumerate(baseline.encoder.blocks):
            prefix = f"base_model.model.vision_encoder.layers.{i}."

            def get(name: str, prefix: str = prefix) -> torch.Tensor:
                return params[prefix + name]

            if isinstance(block.attn.qkv, LoraQV):
                block.attn.qkv.A.copy_(get("attn.qkv.mmlora_A"))
                block.attn.qkv.B.copy_(get("attn.qkv.mmlora_B"))
                for site in ("lin1", "lin2"):
                    lora = getattr(block.mlp, site)
                    lora.A.copy_(get(f"mlp.{site}.mmlora_A"))
                    lora.B.copy_(get(f"mlp.{site}.mmlora_B"))
                    lora.lam.copy_(get(f"mlp.{site}.mmlora_lambda"))
            else:
                for site, adapters in (("attn.proj", block.attn.proj.adapters), ("mlp", block.mlp.adapters)):
                    for m in range(len(adapters.down)):
                        adapters.down[m].weight.copy_(get(f"{site}.mmadapter_down_weight")[m])
                        adapters.down[m].bias.copy_(get(f"{site}.mmadapter_down_bias")[m])
                        adapters.up[m].weight.copy_(get(f"{site}.mmadapter_up_weight")[m])
                        adapters.up[m].bias.copy_(get(f"{site}.mmadapter_up_bias")[m])
                block.mlp.lam.copy_(get("mlp.mmadapter_lambda"))


def equal_weights_check(size: str = "tiny", tuner: str = "mmlora") -> tuple[float, float]:
    """Max |difference| of the encoder features (float64) and of the logits (float32) between mfpeft (defaults +
    `get_peft_model`) and the baseline on equal weights.

    The Meta encoder's weights are converted by mfpeft's own Meta-checkpoint converter and loaded into MFNet;
    every tuner weight (B and the adapters perturbed away from their initialisation, so the tuners do work) is
    copied across; the head is the same module object's weights, copied before the baseline takes it over.
    """
    import copy

    from peft import get_peft_model

    import mfpeft
    from mfpeft.models.sam.loading import convert_meta_state_dict

    config = mfpeft.MFNetConfig(vision_config=mfpeft.sam_vision_config(size, image_size=256))
    torch.manual_seed(0)
    mfnet = mfpeft.MFNetForSegmentation(config)
    baseline = build_meta_baseline(size, tuner, copy.deepcopy(mfnet))
    _, converted = convert_meta_state_dict(meta_encoder_state_dict(baseline.encoder), "meta baseline")
    missing, unexpected = mfnet.load_state_dict(converted, strict=False)
    if unexpected or any(k.startswith("vision_encoder.") for k in missing):
        raise RuntimeError(f"weights do not map: missing {missing[:3]}, unexpected {unexpected[:3]}")
    tuned = get_peft_model(mfnet, mfpeft.MMLoraConfig() if tuner == "mmlora" else mfpeft.MMAdapterConfig())
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name, param in tuned.named_parameters():
            if param.requires_grad and "vision_encoder" in name and "lambda" not in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    copy_tuner_weights(tuned, baseline)
    tuned, baseline = tuned.eval(), baseline.eval()
    generator = torch.Generator().manual_seed(2)
    pixel_values = {
        "optical": torch.rand(2, 3, 256, 256, generator=generator),
        "dsm": torch.rand(2, 1, 256, 256, generator=generator),
    }
    with torch.no_grad():
        # The encoders in float64 (MFNet's head runs in float32 by design, so logits are compared in float32).
        stacked = tuned.base_model.model.stack_modalities(pixel_values).double()
        ours = tuned.base_model.model.vision_encoder.double()(stacked).last_hidden_state
        theirs = baseline.encoder.double()(stacked)
        features = float((ours - theirs).abs().max())
        tuned.base_model.model.vision_encoder.float(), baseline.encoder.float()
        logits = tuned(pixel_values=pixel_values).logits - baseline(pixel_values=pixel_values).logits
    return features, float(logits.abs().max())


if __name__ == "__main__":  # the self-test: python benchmarks/meta_sam_baseline.py [size]
    size_name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    for tuner_name in ("mmlora", "mmadapter"):
        feature_gap, logit_gap = equal_weights_check(size_name, tuner_name)
        print(
            f"{size_name} {tuner_name}: max |mfpeft - Meta-SAM baseline|: encoder features {feature_gap:.2g} "
            f"(float64), logits {logit_gap:.2g} (float32)"
        )
        if feature_gap > 1e-9 or logit_gap > 1e-4:
            raise SystemExit(f"the baseline does not compute mfpeft's model ({tuner_name})")
