"""Small GeoTIFFs for the tests: one writer, a two-modality scene, and rasters with missing data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32632"
PIXEL = 0.5
ORIGIN = (500_000.0, 5_400_000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    transform=None,
    nodata: float | None = None,
    crs: str = CRS,
    **creation: object,
) -> Path:
    """Write ``data`` ``(C, H, W)`` as a GeoTIFF on the test grid (or ``transform``); ``creation``: e.g. tiled=True."""
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform or from_origin(*ORIGIN, PIXEL, PIXEL),
        **creation,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def write_scene(folder: Path, height: int, width: int, seed: int = 0) -> dict[str, Path]:
    """Optical uint8 RGB (nodata 0, with a nodata block) and a float32 DSM (with NaN holes) on one grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    optical = np.stack([(xx * 3 + yy) % 250, (yy * 5) % 250, ((xx // 16 + yy // 16) % 2) * 200], 0) + 1
    optical = (optical + rng.integers(0, 5, optical.shape)).astype(np.uint8)
    optical[:, : height // 5, : width // 6] = 0  # nodata in every band
    optical[0, -3:, -3:] = 0  # one band zero only: still valid data
    dsm = (30 + 10 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 0.5, (height, width))).astype(np.float32)
    dsm[height // 2 : height // 2 + 7, width // 2 : width // 2 + 9] = np.nan
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "optical": write_raster(folder / "rgb.tif", optical, nodata=0),
        "dsm": write_raster(folder / "dsm.tif", dsm[None]),
    }


def write_nan_dsm(path: Path, height: int, width: int) -> Path:
    """A float32 DSM without a single value: NaN everywhere (and no nodata value set)."""
    return write_raster(path, np.full((1, height, width), np.nan, np.float32))


def write_patchy_int16_dsm(path: Path, height: int, width: int, missing: float = 0.3, nodata: int = -32768) -> Path:
    """An int16 DSM whose top ``missing`` share of rows is ``nodata``, tiled 64 x 64 (several blocks)."""
    yy, xx = np.mgrid[0:height, 0:width]
    dsm = (100 + (xx + yy) % 50).astype(np.int16)
    dsm[: round(missing * height)] = nodata
    return write_raster(path, dsm[None], nodata=nodata, tiled=True, blockxsize=64, blockysize=64)
