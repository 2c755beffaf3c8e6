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

from mfpeft.data.palette import colourise, palette_or_default

__all__ = ["colourise", "read_decimated", "read_quicklook", "save_figure", "write_preview"]

NODATA = 255


def read_decimated(
    path: str | Path,
    max_size: int,
    resampling: Resampling,
    bands: Sequence[int] | None = None,
    shape: tuple[int, int] | None = None,
) -> npt.NDArray[Any]:
    """A raster read at most ``max_size`` pixels on its longer side (or at ``shape`` (h, w)): ``(C, h, w)``,
    masked values as NaN for float reads (class rasters are returned as read, uint8)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            scale = min(1.0, max_size / max(src.height, src.width))
            if shape is None:
                shape = (max(1, round(src.height * scale)), max(1, round(src.width * scale)))
            indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
            if src.dtypes[0] == "uint8" and resampling == Resampling.nearest:
                return src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling)
            data = src.read(indexes, out_shape=(len(indexes), *shape), resampling=resampling, masked=True)
            return np.ma.filled(data.astype(np.float32), np.nan)


def read_quicklook(source: str | Path | tuple[Path, ...], max_size: int) -> npt.NDArray[np.float32]:
    """An optical raster decimated to ``max_size`` and stretched (2-98 %) for display: ``(3, h, w)`` from bands
    1-3, else ``(1, h, w)`` from band 1, in [0, 1]. Band files (a tuple of paths): the first three, each read on
    the first file's decimated shape (a quick-look ignores their sub-pixel offsets)."""
    files = [Path(source)] if isinstance(source, (str, Path)) else [Path(f) for f in source]
    if len(files) == 1:
        with rasterio.open(files[0]) as src:
            count = src.count
        return _stretch(read_decimated(files[0], max_size, Resampling.average, bands=[1, 2, 3] if count >= 3 else [1]))
    first = read_decimated(files[0], max_size, Resampling.average, bands=[1])
    chosen = files[:3] if len(files) >= 3 else files[:1]
    shape = (int(first.shape[1]), int(first.shape[2]))
    bands = [first[0]] + [read_decimated(f, max_size, Resampling.average, [1], shape)[0] for f in chosen[1:]]
    return _stretch(np.stack(bands))


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
        labels: a uint8 class-id GeoTIFF (255 = nodata, drawn transparent on white).
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
    from matplotlib.patches import Patch

    names = list(class_names)
    colours = palette_or_default(palette, len(names))
    class_ids = read_decimated(labels, max_size, Resampling.nearest, bands=[1])[0]
    panels: list[tuple[str, npt.NDArray[Any], dict[str, Any]]] = []
    if optical is not None:
        image = read_quicklook(optical, max_size)
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
