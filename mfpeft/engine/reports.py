"""What a training run leaves beside its adapter: metrics.json, plots and a colour preview of some chips."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.palette import colourise, palette_or_default


def write_json(path: Path, data: Mapping[str, Any], *, allow_nan: bool = False) -> None:
    """Write JSON (strict unless ``allow_nan``) atomically: a reader sees the old file or the whole new one, and a
    failure (full disk, signal) leaves no temporary file behind."""
    text = json.dumps(data, indent=2, sort_keys=False, allow_nan=allow_nan) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@torch.no_grad()
def write_chip_previews(
    model: Any,
    samples: Sequence[Mapping[str, Any]],
    palette: Sequence[Sequence[int]],
    path: Path,
    *,
    device: torch.device | str = "cpu",
) -> Path:
    """A PNG grid: one row per chip with each modality, the reference labels and the prediction.

    ``samples`` are dataset items (``pixel_values`` {name: (C, H, W)}, ``labels`` (H, W)). Classes are drawn
    in ``palette`` (or the default one, see :func:`~mfpeft.data.palette.palette_or_default`), ignore transparent.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(samples[0]["pixel_values"])
    columns = [*names, "labels", "prediction"]
    figure = Figure(figsize=(2.2 * len(columns), 2.2 * len(samples)))
    axes = figure.subplots(len(samples), len(columns), squeeze=False)
    for row, sample in enumerate(samples):
        pixel_values = {k: v.unsqueeze(0).to(device) for k, v in sample["pixel_values"].items()}
        logits = model(pixel_values=pixel_values).logits
        prediction = logits.argmax(1)[0].cpu().numpy()
        colours = palette_or_default(palette, len(palette) or int(logits.shape[1]))
        images: list[np.ndarray] = []
        for name in names:
            x = sample["pixel_values"][name].numpy()
            images.append(np.clip(np.moveaxis(x[:3], 0, -1), 0, 1) if x.shape[0] >= 3 else x[0])
        images += [colourise(sample["labels"].numpy(), colours), colourise(prediction, colours)]
        for col, image in enumerate(images):
            ax = axes[row][col]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col])
    figure.tight_layout()
    from .preview import save_figure

    return save_figure(figure, path, dpi=80)
