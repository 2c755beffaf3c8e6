"""Colour previews: a predicted class-id raster with a legend (optionally beside the optical image and DSM), and
the chip grid a training run leaves beside its adapter.

Rasters are read decimated (`mfpeft.data.quicklook`), so a preview of a 100k x 100k scene costs no more memory
than one of a small tile; figures are written by `mfpeft.common.files.save_figure` (whole, or not at all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from rasterio.enums import Resampling

from mfpeft.common.classes import IGNORE_INDEX, colourise, palette_or_default
from mfpeft.common.files import save_figure
from mfpeft.data.quicklook import read_decimated, read_quicklook

__all__ = ["colourise", "write_chip_previews", "write_preview"]


Panel = tuple[str, npt.NDArray[Any], dict[str, Any]]
"""A panel of a preview: its title, the image and the ``imshow`` keywords."""


def _input_panels(optical: str | Path | tuple[Path, ...] | None, dsm: str | Path | None, max_size: int) -> list[Panel]:
    """The optical quick-look (:func:`read_quicklook`) and the DSM (1-99 % colour range) panels asked for."""
    panels: list[Panel] = []
    if optical is not None:
        image = read_quicklook(optical, max_size)
        panels.append(("optical", np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], {"cmap": "gray"}))
    if dsm is not None:
        height = read_decimated(dsm, max_size, Resampling.average, bands=[1])[0]
        finite = height[np.isfinite(height)]
        vmin, vmax = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        panels.append(("DSM", height, {"cmap": "terrain", "vmin": vmin, "vmax": vmax}))
    return panels


def _legend(names: Sequence[str], colours: Sequence[Sequence[int]], class_ids: npt.NDArray[Any]) -> list[Any]:
    """A legend patch per class, and one for nodata when ``class_ids`` holds any."""
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=(r / 255, g / 255, b / 255), edgecolor="black", label=f"{k}: {name}")
        for k, ((r, g, b), name) in enumerate(zip(colours, names))
    ]
    if IGNORE_INDEX in set(np.unique(class_ids).tolist()):
        handles.append(Patch(facecolor="white", edgecolor="black", label="nodata"))
    return handles


def write_preview(
    labels: str | Path,
    output: str | Path,
    *,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | None = None,
    optical: str | Path | tuple[Path, ...] | None = None,
    dsm: str | Path | None = None,
    max_size: int = 1024,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the class-id raster ``labels`` in colour with a legend (and the inputs beside it) as a PNG.

    Args:
        labels: a uint8 class-id GeoTIFF (`IGNORE_INDEX` = nodata, drawn transparent on white).
        output: the PNG to write; its folder must exist.
        class_names: one name per class id; palette: one RGB colour per class (default:
            :func:`~mfpeft.data.palette.default_palette`, as for an all-black placeholder palette).
        optical: optionally the optical raster (or its band files), drawn first (:func:`read_quicklook`).
        dsm: optionally the elevation raster, drawn with a colour bar.
        max_size: longest side, in raster pixels, of each panel (rasters are read decimated).

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure

    names = list(class_names)
    colours = palette_or_default(palette, len(names))
    class_ids = read_decimated(labels, max_size, Resampling.nearest, bands=[1])[0]
    panels = [*_input_panels(optical, dsm, max_size), ("prediction", colourise(class_ids, colours), {})]
    h, w = class_ids.shape
    panel_inches = 5.0
    figure = Figure(figsize=(panel_inches * len(panels) + 2.2, panel_inches * h / w + 0.8))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, image, kwargs) in zip(axes, panels):
        shown = ax.imshow(image, interpolation="nearest", **kwargs)
        ax.set_title(name)
        ax.set_axis_off()
        if name == "DSM":
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="height")
    figure.legend(handles=_legend(names, colours, class_ids), loc="center right", frameon=False, fontsize=9)
    figure.suptitle(title if title is not None else Path(labels).name)
    figure.subplots_adjust(left=0.02, right=1 - 2.0 / figure.get_figwidth(), top=0.88, bottom=0.04, wspace=0.08)
    return save_figure(figure, output, dpi=dpi)


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
    return save_figure(figure, path, dpi=80)
