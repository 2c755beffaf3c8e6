"""Decimated reads of a raster for display: a quick-look of a 100k x 100k scene costs no more memory than one of
a small tile (``out_shape``: nearest for class ids, averaged for the inputs)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning

__all__ = ["read_decimated", "read_quicklook", "stretch_for_display"]


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
        bands = [1, 2, 3] if count >= 3 else [1]
        return stretch_for_display(read_decimated(files[0], max_size, Resampling.average, bands=bands))
    first = read_decimated(files[0], max_size, Resampling.average, bands=[1])
    chosen = files[:3] if len(files) >= 3 else files[:1]
    shape = (int(first.shape[1]), int(first.shape[2]))
    bands = [first[0]] + [read_decimated(f, max_size, Resampling.average, [1], shape)[0] for f in chosen[1:]]
    return stretch_for_display(np.stack(bands))


def stretch_for_display(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
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
