"""The model card (README.md) written beside an MFNet adapter.

Tuner-agnostic: the tuner is named and described by its config (`MultimodalConfig.tuner_name`,
`card_description`, `cross_modal`, `peft_type`), so a new tuner's card needs no change here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..common.classes import IGNORE_INDEX, hex_colour, palette_or_default
from ..common.files import write_text
from .encoders.base import EncoderFamily
from .encoders.registry import family_of, vision_config_from

CITATION = (
    "Ma, Zhang, Pun, Huang, *A Unified Framework with Multimodal Fine-tuning for Remote Sensing Semantic "
    "Segmentation*, IEEE TGRS 2025."
)


def render_model_card(model_config: dict[str, Any], adapter_config: Any) -> str:
    """Markdown with YAML front matter: base model, tuner, classes and palette, modalities, metrics, training, usage.

    ``model_config`` is MFNet's ``config.json`` as a dict; ``adapter_config`` a `MultimodalConfig`.
    """
    vision = vision_config_from(model_config["vision_config"])
    family = family_of(vision)
    base = str(model_config.get("encoder_name_or_path", model_config.get("sam_name_or_path", "")))
    id2label = {int(k): v for k, v in model_config.get("id2label", {}).items()}
    palette = palette_or_default(model_config.get("palette"), len(id2label))
    modalities = [(str(name), int(channels)) for name, channels in model_config.get("modalities", [])]
    lines = [
        *_front_matter(base, adapter_config, family),
        "",
        "# MFNet multimodal segmentation adapter",
        "",
        _summary(vision, family, base, adapter_config),
        "",
        *_modality_table(modalities, model_config.get("input_scaling") or {}),
        "",
        "## Classes",
        "",
        *_class_table(id2label, palette, model_config.get("label_encoding")),
        "",
        *_evaluation(model_config.get("evaluation_results") or {}),
        *_training(model_config.get("training_hyperparameters") or {}),
        "",
        *_usage(modalities, family.image_size(vision), len(id2label)),
        "",
        "## Citation",
        "",
        CITATION,
        "",
    ]
    return "\n".join(lines)


def _front_matter(base: str, adapter_config: Any, family: EncoderFamily) -> list[str]:
    """YAML front matter; ``base_model`` only for a Hub id (not a local folder, a random or a demo encoder).

    The licence is the encoder weights' (an adapter trained on them carries their terms): an SPDX id, or ``other``
    with the licence's name for non-Apache weights such as DINOv3's.
    """
    peft_type = str(getattr(adapter_config.peft_type, "value", adapter_config.peft_type))
    spdx = family.licence if " " not in family.licence else "other"
    licence = [f"license: {spdx}"] + ([f"license_name: {family.name}-license"] if spdx == "other" else [])
    front = [
        "---",
        "library_name: peft",
        *licence,
        "pipeline_tag: image-segmentation",
        f"tags: [mfpeft, mfnet, remote-sensing, semantic-segmentation, {family.name}, {peft_type.lower()}]",
    ]
    if base and not os.path.exists(base) and not base.startswith(("random:", "demo:")):
        front.append(f"base_model: {base}")
    return [*front, "---"]


def _summary(vision: Any, family: EncoderFamily, base: str, adapter_config: Any) -> str:
    """The opening paragraph: which tuner, how set, on which encoder (and its licence), what the repository holds."""
    mixing = "cross-modal" if getattr(adapter_config, "cross_modal", True) else "per-modality, no cross-modal term"
    return (
        f"MFNet (Ma et al., IEEE TGRS 2025) fine-tuned with **{adapter_config.tuner_name}** "
        f"({adapter_config.card_description()}, {mixing}) on the frozen {family.display_name} "
        f"{family.describe_size(vision)} image encoder at {family.image_size(vision)} x {family.image_size(vision)} "
        "chips. This repository holds only the trained weights (tuner, neck where the encoder has none, Deep Fusion "
        f"Module, UNetFormer decoder); the encoder itself is loaded from `{base}` (licence of its weights: "
        f"{family.licence})."
    )


def _modality_table(modalities: Sequence[tuple[str, int]], scaling: dict[str, Any]) -> list[str]:
    lines = ["## Modalities", "", "| order | name | channels | scaling |", "|---|---|---|---|"]
    for index, (name, channels) in enumerate(modalities):
        lines.append(f"| {index} | {name} | {channels} | {scaling.get(name, {}).get('mode', 'as given')} |")
    return lines


def _evaluation(results: dict[str, Any]) -> list[str]:
    if not results:
        return ["## Evaluation", "", "No metrics were recorded for this adapter."]
    lines = ["## Evaluation", "", "| metric | value |", "|---|---|"]
    for key, value in results.items():
        if isinstance(value, (int, float)):
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return lines


def _training(training: dict[str, Any]) -> list[str]:
    if not training:
        return []
    return ["", "## Training", "", "| hyperparameter | value |", "|---|---|"] + [
        f"| {key} | {value} |" for key, value in training.items()
    ]


def _usage(modalities: Sequence[tuple[str, int]], size: object, num_labels: int) -> list[str]:
    """Loading in Python (random inputs of the right shapes) and whole scenes on the command line."""
    inputs = ", ".join(f'"{n}": torch.rand(1, {c}, {size}, {size})' for n, c in modalities)
    return [
        "## Usage",
        "",
        "```python",
        "import torch",
        "from mfpeft import MFNetForSegmentation",
        "",
        'model = MFNetForSegmentation.from_pretrained("<this repo or folder>")  # add base_model="path/to/sam"',
        f"logits = model(pixel_values={{{inputs}}}).logits  # (1, {num_labels}, H, W)",
        "```",
        "",
        "Whole GeoTIFF scenes: `mfpeft predict --model <this repo> "
        + " ".join(f"--{n} {n}.tif" for n, _ in modalities)
        + " --output labels.tif`.",
    ]


def _class_table(
    id2label: dict[int, str], palette: Sequence[Sequence[int]], encoding: dict[str, Any] | None
) -> list[str]:
    """The classes with their colour and, for integer code labels, the codes that map to each (recorded in
    config.json's ``label_encoding``, which evaluation and prediction read)."""
    code_map = (encoding or {}).get("code_map") if (encoding or {}).get("kind") == "codes" else None
    codes: dict[int, list[str]] = {}
    for code, index in (code_map or {}).items():
        codes.setdefault(int(index), []).append(str(code))
    head = "| id | name | colour |" + (" label codes |" if code_map else "")
    lines = [head, "|---" * head.count(" |") + "|"]
    for index, name in sorted(id2label.items()):
        colour = palette[index]
        row = f"| {index} | {name} | {hex_colour(colour)} {tuple(colour)} |"
        listed = ", ".join(sorted(codes.get(index, []), key=_code_order)) or "-"
        lines.append(row + (f" {listed} |" if code_map else ""))
    ignored = sorted(codes.get(IGNORE_INDEX, []), key=_code_order)
    if ignored:
        lines += ["", f"Ignored label codes ({IGNORE_INDEX}): {', '.join(ignored)} ('*' = every code not listed)."]
    if encoding and encoding.get("nodata") is not None:
        lines += ["", f"Label nodata value {encoding['nodata']} is ignored."]
    return lines


def _code_order(code: str) -> tuple[int, int]:
    return (1, 0) if code == "*" else (0, int(code))


def write_model_card(save_directory: str, model_config: dict[str, Any], adapter_config: Any) -> None:
    """Write README.md atomically (`mfpeft.common.files`), replacing peft's generic card."""
    write_text(os.path.join(save_directory, "README.md"), render_model_card(model_config, adapter_config))
