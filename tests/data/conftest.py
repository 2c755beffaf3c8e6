"""Helpers for the data tests: writing tiny rasters."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from mfpeft.data.palette import ISPRS_PALETTE, labels_to_rgb

CRS = "EPSG:32632"
ORIGIN = (500_000.0, 5_400_000.0)

WriteRaster = Callable[..., Path]


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: Any = CRS,
    transform: Any = None,
    nodata: float | None = None,
    driver: str = "GTiff",
    georeferenced: bool = True,
    **extra: Any,
) -> Path:
    """Write (C, H, W) or (H, W) ``data``; georeferenced on a 1 m grid at ORIGIN unless told otherwise."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": driver,
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if georeferenced:
        profile["crs"] = crs
        profile["transform"] = transform if transform is not None else from_origin(*ORIGIN, 1.0, 1.0)
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if driver == "JPEG":
            # JPEG has no create(): write a GTiff in memory and copy it.
            with rasterio.MemoryFile() as mem:
                with mem.open(**{**profile, "driver": "GTiff"}) as tmp:
                    tmp.write(data)
                with mem.open() as src:
                    rasterio.shutil.copy(src, path, driver="JPEG", QUALITY=100)
        else:
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
    return path


def palette_rgb(labels: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (3, H, W) uint8 ISPRS colours (255 -> black)."""
    return np.ascontiguousarray(labels_to_rgb(labels, ISPRS_PALETTE).transpose(2, 0, 1))


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mfpeft.data.demo import demo_data_dir

    return demo_data_dir(cache_dir=tmp_path_factory.mktemp("demo-cache"), seed=0)
