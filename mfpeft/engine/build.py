"""Building the model a training run asks for: the encoder (real or random, any family), MFNet around it, the tuner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peft import PeftModel, get_peft_model

from ..common.files import atomic_path
from ..errors import ensure_free_space
from ..models.adapter_io import BUNDLED_BASE_MODEL
from ..models.configuration_mfnet import MFNetConfig
from ..models.encoders.registry import load_encoder, random_encoder
from ..models.modeling_mfnet import MFNetForSegmentation
from ..models.sam.loading import load_sam_vision_encoder, save_quietly
from ..tuners import MMAdapterConfig, MMLoraConfig
from ..tuners.config import MultimodalConfig
from .arguments import TrainingArguments, check_generated_base_model
from .demo_encoder import DEMO_ENCODER_PREFIX, DemoPretrainingConfig, demo_encoder_dir

RANDOM_PREFIX = "random:"


def is_generated_base_model(base_model: str) -> bool:
    """True for the encoders mfpeft makes itself: ``random:<family>-<size>`` and the demo encoder ``demo:SIZE``."""
    return base_model.startswith((RANDOM_PREFIX, DEMO_ENCODER_PREFIX))


def base_model_source(base_model: str, output_dir: Path) -> str:
    """Where SAM is loaded from: `base_model` itself, or for a generated encoder the copy saved in the output."""
    if is_generated_base_model(base_model):
        return str((output_dir / "base-model").resolve())
    return base_model


# Meta's released SAM checkpoints and the transformers Hub repos of the same weights.
META_CHECKPOINT_HUB_IDS = {
    "sam_vit_b_01ec64.pth": "facebook/sam-vit-base",
    "sam_vit_l_0b3195.pth": "facebook/sam-vit-large",
    "sam_vit_h_4b8939.pth": "facebook/sam-vit-huge",
}


def recorded_base_model(base_model: str) -> str:
    """What a trained model's ``config.json`` records as its SAM: which encoder, never where it sat on this machine.

    A generated encoder travels inside the model folder (`BUNDLED_BASE_MODEL`); a Hub id stays; a local copy of a
    released SAM is recorded by its Hub id (Meta's file names, or the ``_name_or_path`` a transformers folder
    keeps); any other local file or folder by its name alone, which loading elsewhere reports with the
    ``--base-model`` / ``base_model=`` fix.
    """
    if is_generated_base_model(base_model):
        return BUNDLED_BASE_MODEL
    path = Path(base_model).expanduser()
    if not path.exists():
        return base_model  # a Hub id
    if path.name in META_CHECKPOINT_HUB_IDS:
        return META_CHECKPOINT_HUB_IDS[path.name]
    config = path / "config.json"
    if config.is_file():
        import json

        try:
            origin = str(json.loads(config.read_text(encoding="utf-8")).get("_name_or_path", ""))
        except ValueError:
            origin = ""
        if origin.startswith("facebook/") or (origin.count("/") == 1 and not Path(origin).exists()):
            return origin
    return path.name


def write_generated_base_model(
    base_model: str, image_size: int, output_dir: Path, seed: int, data_seed: int = 0
) -> None:
    """Save a generated encoder to ``output_dir/base-model`` so the trained adapter reloads with it.

    ``random:<family>-<size>`` is drawn from `seed`; ``demo:tiny`` is the encoder pre-trained on the optical
    training chips of the demo data set of `data_seed` (built once and cached, see `mfpeft.engine.demo_encoder`),
    resized to `image_size`. Other base models are left alone.

    The folder is written through a temporary sibling, so a failure (full disk, signal) leaves no partial copy.

    Raises:
        ValueError: an unknown size after ``random:`` or ``demo:``.
    """
    if not is_generated_base_model(base_model):
        return
    check_generated_base_model(base_model)
    if base_model.startswith(RANDOM_PREFIX):
        model = encoder_model(random_encoder(base_model, image_size=image_size, seed=seed))
    else:
        folder = demo_encoder_dir(
            DemoPretrainingConfig(size=base_model.removeprefix(DEMO_ENCODER_PREFIX), data_seed=data_seed)
        )
        model = load_sam_vision_encoder(folder, image_size=image_size)
        model.name_or_path = base_model
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ensure_free_space(output_dir, size, f"base model {base_model}")
    with atomic_path(output_dir / "base-model", folder=True) as staged:
        save_quietly(model, staged)


def encoder_model(weights: Any) -> Any:
    """A saveable transformers model holding loaded encoder weights (`EncoderWeights`), so that
    ``save_pretrained`` writes a folder `load_encoder` reads back (SAM: a `SamVisionModel`)."""
    from ..models.encoders.registry import family_of

    family = family_of(weights.config)
    if family.name in ("sam", "sam-hq"):
        from transformers import SamHQVisionModel, SamVisionModel

        model: Any = (SamVisionModel if family.name == "sam" else SamHQVisionModel)(weights.config)
        model.vision_encoder.load_state_dict(dict(weights.state_dict))
    else:
        model = family.build(weights.config)
        model.load_state_dict(dict(weights.state_dict))
    model.name_or_path = weights.name_or_path
    return model.eval()


def encoder_normalisation(
    args: TrainingArguments, encoder: Any, modality_channels: Mapping[str, int]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``input_mean`` / ``input_std`` for ``--input-normalisation``: none, or the encoder's RGB statistics
    (`EncoderFamily.normalisation_for`: the checkpoint's own where its name says, e.g. DINOv3 SAT-493M) on every
    3-band modality; other modalities (DSM, SAR, stems) keep the scaled input as it is."""
    if args.input_normalisation == "none":
        return {}, {}
    from ..models.encoders.registry import family_of

    _, mean, std = family_of(encoder.config).normalisation_for(args.base_model)
    rgb = [name for name, channels in modality_channels.items() if channels == 3]
    return {n: list(mean) for n in rgb}, {n: list(std) for n in rgb}


def tuner_config(args: TrainingArguments, num_modalities: int) -> MultimodalConfig:
    """The peft config of ``args.tuner``; "lora"/"adapter" are the non-fused variants (Table IV), "none" an
    MMLoRA adapter that is never trained (its B = 0 leaves the frozen encoder's output unchanged).

    ``args.ablation`` "authors" (the default) gives the ablation tuners as the authors ran them: "lora" scales its
    MLP LoRA by alpha / r (0.25 with r = 4) and "adapter" keeps only the attention adapters (ViT-B, two
    modalities: 7,100,928 weights); "full" gives the unscaled MLP LoRA and adapters beside the MLP too (14,201,856).
    """
    authors = args.ablation == "authors"
    if args.tuner in ("mmlora", "lora", "none"):
        lora = args.tuner == "lora"
        return MMLoraConfig(
            r=args.rank, num_modalities=num_modalities, cross_modal=args.tuner == "mmlora", scale_mlp=lora and authors
        )
    adapter = args.tuner == "adapter"
    return MMAdapterConfig(
        num_modalities=num_modalities, cross_modal=not adapter, mlp_adapters=not (adapter and authors)
    )


def build_model(
    args: TrainingArguments,
    encoder_name_or_path: str,
    *,
    modality_channels: Mapping[str, int],
    classes: Sequence[str],
    palette: Sequence[Sequence[int]] | None,
    input_scaling: Mapping[str, Mapping[str, Any]],
    score_classes: Sequence[int] | None,
) -> PeftModel:
    """MFNet around the encoder with the requested tuner; only tuner weights and the head are trainable."""
    encoder = load_encoder(
        encoder_name_or_path,
        image_size=args.chip_size,
        rel_pos=args.rel_pos,
        attn_implementation=args.attn_implementation,
    )
    mean, std = encoder_normalisation(args, encoder, modality_channels)
    config = MFNetConfig(
        vision_config=encoder.config,
        input_mean=mean,
        input_std=std,
        modalities=[(name, channels) for name, channels in modality_channels.items()],
        id2label=dict(enumerate(classes)),
        palette=palette,
        input_scaling=input_scaling,
        encoder_name_or_path=encoder_name_or_path,
        rel_pos=args.rel_pos,
        use_dfm=not args.no_dfm,
        score_classes=score_classes,
        padding_free_encoder=args.padding_free,
    )
    model = MFNetForSegmentation.from_encoder(encoder, config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = get_peft_model(model, tuner_config(args, len(modality_channels)))
    if args.encoder_dtype != "fp32":
        from ..models.sam.fast_path import optimize_sam_encoder

        if config.encoder_family.name != "sam":
            raise ValueError(
                f"encoder_dtype={args.encoder_dtype!r} applies to SAM encoders (mfpeft's fast SAM layers); "
                f"{encoder_name_or_path} is {config.encoder_family.display_name}: use mixed_precision instead"
            )
        optimize_sam_encoder(
            peft_model,
            padding_free=args.padding_free,
            frozen_dtype="bf16" if args.encoder_dtype == "bf16" else None,
            autocast_dtype="bf16",
        )
    if args.tuner == "none":
        for name, param in peft_model.named_parameters():
            if "mmlora_" in name:
                param.requires_grad_(False)
    return peft_model
