"""Colour quick-looks of a predicted class-id raster, with a legend, optionally beside the optical image and DSM.

Rasters are read decimated (``out_shape``, nearest for class ids, averaged for the inputs), so a preview of a
100k x 100k scene costs no more memory than one of a small tile. Figures are drawn with matplotlib's Agg
canvas (no display, no pyplot global state) and written to a temporary name, then renamed.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

__all__ = ["colourise", "read_decimated", "save_figure", "write_preview"]

NODATA = 255


def read_decimated(
    path: str | Path, max_size: int, resampling: Resampling, bands: Sequence[int] | None = None
) -> npt.NDArray[Any]:
    """A raster read at most ``max_size`` pixels on its longer side: ``(C, h, w)``, masked values as NaN
    for float reads (class rasters are returned as read, uint8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            scale = min(1.0, max_size / max(src.height, src.width))
            shape = (max(1, round(src.height * scale)), max(1, round(src.width * scale)))
            indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
            if src.dtypes[0] == "uint8" and resampling == Resampling.nearest:
                return src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling)
            data = src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling, masked=True)
            return np.ma.filled(data.astype(np.float32), np.nan)


def colourise(class_ids: npt.NDArray[np.integer], palette: Sequence[Sequence[int]]) -> npt.NDArray[np.uint8]:
    """``(h, w)`` class ids -> ``(h, w, 4)`` RGBA uint8; ids without a colour (nodata 255) are transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for k, colour in enumerate(palette):
        lut[k, :3] = colour
        lut[k, 3] = 255
    return lut[np.asarray(class_ids, dtype=np.uint8)]


def _stretch(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Per-band 2-98 percentile stretch to [0, 1] of a ``(C, h, w)`` image (NaN -> 0)."""
    out = np.zeros(image.shape, dtype=np.float32)
    for b, band in enumerate(image):
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, (2, 98))
        span = hi - lo if hi > lo else 1.0
        out[b] = np.clip((np.nan_to_num(band, nan=lo) - lo) / span, 0, 1)
    return out


def save_figure(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib ``Figure`` as PNG at ``path`` atomically (temporary name in the same folder, renamed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: the folder {target.parent} does not exist")
    FigureCanvasAgg(figure)
    temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp.png")
    try:
        figure.savefig(temp, dpi=dpi, format="png", facecolor="white")
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
    return target


def _default_palette(count: int) -> list[tuple[int, int, int]]:
    import colorsys

    return [
        tuple(round(255 * v) for v in colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65, 0.95))  # type: ignore[misc]
        for k in range(count)
    ]


def write_preview(
    labels: str | Path,
    output: str | Path,
    *,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | None = None,
    optical: str | Path | None = None,
    dsm: str | Path | None = None,
    max_size: int = 1024,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the class-id raster ``labels`` in colour with a legend (and the inputs beside it) as a PNG.

    Args:
        labels: a uint8 class-id GeoTIFF (255 = nodata, drawn transparent on white).
        output: the PNG to write; its folder must exist.
        class_names: one name per class id; palette: one RGB colour per class (default: spread hues).
        optical: optionally the optical raster, drawn first (bands 1-3, 2-98 % stretch).
        dsm: optionally the elevation raster, drawn with a colour bar.
        max_size: longest side, in raster pixels, of each panel (rasters are read decimated).

    Returns:
        The written path.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(class_names)
    colours = [tuple(int(v) for v in c) for c in palette] if palette is not None else _default_palette(len(names))
    if len(colours) < len(names):
        raise ValueError(f"palette has {len(colours)} colours for {len(names)} classes")
    class_ids = read_decimated(labels, max_size, Resampling.nearest, bands=[1])[0]
    panels: list[tuple[str, npt.NDArray[Any], dict[str, Any]]] = []
    if optical is not None:
        with rasterio.open(optical) as src:
            count = src.count
        rgb = read_decimated(optical, max_size, Resampling.average, bands=[1, 2, 3] if count >= 3 else [1])
        image = _stretch(rgb)
        panels.append(("optical", np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], {"cmap": "gray"}))
    if dsm is not None:
        height = read_decimated(dsm, max_size, Resampling.average, bands=[1])[0]
        finite = height[np.isfinite(height)]
        vmin, vmax = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
        panels.append(("DSM", height, {"cmap": "terrain", "vmin": vmin, "vmax": vmax}))
    panels.append(("prediction", colourise(class_ids, colours), {}))

    h, w = class_ids.shape
    panel_inches = 5.0
    aspect = h / w
    figure = Figure(figsize=(panel_inches * len(panels) + 2.2, panel_inches * aspect + 0.8))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, image, kwargs) in zip(axes, panels):
        shown = ax.imshow(image, interpolation="nearest", **kwargs)
        ax.set_title(name)
        ax.set_axis_off()
        if name == "DSM":
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="height")
    present = set(np.unique(class_ids).tolist())
    handles = [
        Patch(
            facecolor=(colours[k][0] / 255, colours[k][1] / 255, colours[k][2] / 255),
            edgecolor="black",
            label=f"{k}: {names[k]}",
        )
        for k in range(len(names))
    ]
    if NODATA in present:
        handles.append(Patch(facecolor="white", edgecolor="black", label="nodata"))
    figure.legend(handles=handles, loc="center right", frameon=False, fontsize=9)
    figure.suptitle(title if title is not None else Path(labels).name)
    figure.subplots_adjust(left=0.02, right=1 - 2.0 / figure.get_figwidth(), top=0.88, bottom=0.04, wspace=0.08)
    return save_figure(figure, output, dpi=dpi)
