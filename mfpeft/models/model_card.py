"""The model card (README.md) written beside an MFNet adapter."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..data.palette import hex_colour, palette_or_default
from .sam.loading import size_name


def render_model_card(model_config: dict[str, Any], adapter_config: Any) -> str:
    """Markdown with YAML front matter: base model, tuner, classes and palette, modalities, metrics, training, usage."""
    from transformers import SamVisionConfig

    vision = SamVisionConfig(**model_config["vision_config"])
    peft_type = str(getattr(adapter_config.peft_type, "value", adapter_config.peft_type))
    tuner = {"MMLORA": "MMLoRA", "MMADAPTER": "MMAdapter"}.get(peft_type, peft_type)
    cross = getattr(adapter_config, "cross_modal", True)
    if peft_type == "MMLORA":
        detail = f"rank r = {adapter_config.r}, alpha = {adapter_config.alpha}"
    else:
        detail = f"bottleneck = {adapter_config.bottleneck_ratio} x D, activation {adapter_config.activation}"
    id2label = {int(k): v for k, v in model_config.get("id2label", {}).items()}
    palette = palette_or_default(model_config.get("palette"), len(id2label))
    modalities = model_config.get("modalities", [])
    base = model_config.get("sam_name_or_path", "")
    results = model_config.get("evaluation_results") or {}
    front = [
        "---",
        "library_name: peft",
        "license: apache-2.0",
        "pipeline_tag: image-segmentation",
        "tags: [mfpeft, mfnet, remote-sensing, semantic-segmentation, sam, " + peft_type.lower() + "]",
    ]
    if base and not os.path.exists(base) and not base.startswith(("random:", "demo:")):
        front.append(f"base_model: {base}")
    front.append("---")
    lines = [
        *front,
        "",
        "# MFNet multimodal segmentation adapter",
        "",
        f"MFNet (Ma et al., IEEE TGRS 2025) fine-tuned with **{tuner}** ({detail}, "
        f"{'cross-modal' if cross else 'per-modality, no cross-modal term'}) on SAM's frozen "
        f"{size_name(vision)} image encoder at {vision.image_size} x {vision.image_size} chips. "
        "This repository holds only the trained weights (tuner, Deep Fusion Module, UNetFormer decoder); "
        f"SAM itself is loaded from `{base}`.",
        "",
        "## Modalities",
        "",
        "| order | name | channels | scaling |",
        "|---|---|---|---|",
    ]
    scaling = model_config.get("input_scaling") or {}
    for index, (name, channels) in enumerate(modalities):
        lines.append(f"| {index} | {name} | {channels} | {scaling.get(name, {}).get('mode', 'as given')} |")
    lines += ["", "## Classes", "", *_class_table(id2label, palette, model_config.get("label_encoding"))]
    lines += ["", "## Evaluation", ""]
    if results:
        lines += ["| metric | value |", "|---|---|"]
        for key, value in results.items():
            if isinstance(value, (int, float)):
                lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    else:
        lines.append("No metrics were recorded for this adapter.")
    training = model_config.get("training_hyperparameters") or {}
    if training:
        lines += ["", "## Training", "", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in training.items()]
    inputs = ", ".join(f'"{n}": torch.rand(1, {c}, {vision.image_size}, {vision.image_size})' for n, c in modalities)
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import torch",
        "from mfpeft import MFNetForSegmentation",
        "",
        'model = MFNetForSegmentation.from_pretrained("<this repo or folder>")  # add base_model="path/to/sam"',
        f"logits = model(pixel_values={{{inputs}}}).logits  # (1, {len(id2label)}, H, W)",
        "```",
        "",
        "Whole GeoTIFF scenes: `mfpeft predict --model <this repo> "
        + " ".join(f"--{n} {n}.tif" for n, _ in modalities)
        + " --output labels.tif`.",
        "",
        "## Citation",
        "",
        "Ma, Zhang, Pun, Huang, *A Unified Framework with Multimodal Fine-tuning for Remote Sensing Semantic "
        "Segmentation*, IEEE TGRS 2025.",
        "",
    ]
    return "\n".join(lines)


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
    ignored = sorted(codes.get(255, []), key=_code_order)
    if ignored:
        lines += ["", f"Ignored label codes (255): {', '.join(ignored)} ('*' = every code not listed)."]
    if encoding and encoding.get("nodata") is not None:
        lines += ["", f"Label nodata value {encoding['nodata']} is ignored."]
    return lines


def _code_order(code: str) -> tuple[int, int]:
    return (1, 0) if code == "*" else (0, int(code))


def write_model_card(save_directory: str, model_config: dict[str, Any], adapter_config: Any) -> None:
    """Write README.md atomically, replacing peft's generic card."""
    path = os.path.join(save_directory, "README.md")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(render_model_card(model_config, adapter_config))
    os.replace(path + ".tmp", path)
