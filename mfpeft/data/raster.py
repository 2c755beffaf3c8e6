"""Reading a tile's modalities on one pixel grid, chip by chip (rasterio).

The first modality defines the grid. Every other raster (further modalities, labels) is read on that grid:
directly, with a pixel offset, when it shares the CRS and resolution and sits at a whole-pixel offset;
otherwise through a ``WarpedVRT`` (bilinear for continuous bands, nearest for labels). The usable area is the
overlap of all rasters. Rasters without georeferencing must have the reference's exact shape.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import IGNORE_INDEX, map_codes, rgb_to_labels
from mfpeft.data.scaling import Scaling, TileStatistics, compute_tile_statistics
from mfpeft.data.tile import LabelEncoding, RasterRef, Tile

__all__ = ["LABEL_SETS", "TileReader", "describe_ref"]

# GDAL's block cache defaults to 5% of RAM per process; with random chips over huge rasters in several
# DataLoader workers that alone can exceed the memory budget. 64 MB per process keeps reads fast (a 256 x 256
# chip touches a few 256 x 256 blocks) and can be overridden by setting GDAL_CACHEMAX before import.
os.environ.setdefault("GDAL_CACHEMAX", "64")

LABEL_SETS = ("full", "eroded", "none")
_EPS = 1e-6


def describe_ref(ref: RasterRef | None) -> str:
    """A short name for a raster reference, used in error messages."""
    if isinstance(ref, (str, Path)):
        return str(ref)
    if isinstance(ref, np.ndarray):
        return f"<in-memory array {tuple(ref.shape)}>"
    return f"<{getattr(ref, 'description', type(ref).__name__)}>"


class _Layer:
    """One raster read on the reference grid: ``read`` takes windows in reference-grid pixels."""

    def __init__(self, ref: RasterRef, name: str, decode_threads: int | str = 1) -> None:
        self.name = name
        self.ref = ref
        self._dataset: Any = None
        self._vrt: Any = None
        self._array: np.ndarray | None = None
        self.offset = (0, 0)  # (rows, cols) to add to reference-grid coordinates
        if isinstance(ref, (str, Path)):
            path = Path(ref)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: file not found ({name})")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    # GTiff decodes the several blocks a chip spans in parallel with NUM_THREADS.
                    threads = {} if path.suffix.lower() not in (".tif", ".tiff") else {"num_threads": decode_threads}
                    self._dataset = rasterio.open(path, **threads)
            except RasterioError as err:
                raise ValueError(f"{path}: unreadable or not a raster ({name}): {err}") from err
            ds = self._dataset
            self.height, self.width, self.count = ds.height, ds.width, ds.count
            self.crs, self.transform, self.nodata = ds.crs, ds.transform, ds.nodata
            self.dtype = np.dtype(ds.dtypes[0])
        else:
            array = ref if isinstance(ref, np.ndarray) else np.asarray(ref())
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3:
                raise ValueError(
                    f"{describe_ref(ref)}: an in-memory raster needs shape (C, H, W) or (H, W), "
                    f"got {tuple(array.shape)} ({name})"
                )
            self._array = array
            self.count, self.height, self.width = array.shape
            self.crs, self.transform, self.nodata = None, None, None
            self.dtype = array.dtype

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None and not self.transform.is_identity

    def footprint_on(self, ref: _Layer, resampling: Resampling) -> tuple[int, int, int, int]:
        """Align this layer to ``ref``'s grid; returns its footprint there as (row0, col0, row1, col1)."""
        if not (self.georeferenced and ref.georeferenced):
            if (self.height, self.width) != (ref.height, ref.width):
                raise ValueError(
                    f"{describe_ref(self.ref)} ({self.name}) is {self.height}x{self.width} but "
                    f"{describe_ref(ref.ref)} ({ref.name}) is {ref.height}x{ref.width}; rasters without "
                    f"georeferencing must have equal shapes"
                )
            return 0, 0, ref.height, ref.width
        same_crs = self.crs == ref.crs
        t, r = self.transform, ref.transform
        if same_crs and (t.a, t.b, t.d, t.e) == (r.a, r.b, r.d, r.e) and r.b == 0 and r.d == 0:
            col_f, row_f = ~t @ (r.c, r.f)
            if abs(col_f - round(col_f)) < 1e-3 and abs(row_f - round(row_f)) < 1e-3:
                self.offset = (round(row_f), round(col_f))
                return (
                    -self.offset[0],
                    -self.offset[1],
                    self.height - self.offset[0],
                    self.width - self.offset[1],
                )
        bounds = self._dataset.bounds
        if not same_crs:
            bounds = transform_bounds(self.crs, ref.crs, *bounds, densify_pts=21)
        inv = ~r
        cols, rows = zip(*(inv @ (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])))
        footprint = (
            math.ceil(min(rows) - _EPS),
            math.ceil(min(cols) - _EPS),
            math.floor(max(rows) + _EPS),
            math.floor(max(cols) + _EPS),
        )
        nodata = self.nodata
        if nodata is None and self.dtype.kind == "f":
            nodata = float("nan")
        self._vrt = WarpedVRT(
            self._dataset,
            crs=ref.crs,
            transform=r,
            width=ref.width,
            height=ref.height,
            resampling=resampling,
            **({} if nodata is None else {"nodata": nodata}),
        )
        self.nodata = self._vrt.nodata
        self.offset = (0, 0)
        return footprint

    def read(self, window: ChipWindow, bands: Sequence[int], dtype: str) -> np.ndarray:
        """Values of ``window`` (reference-grid pixels) as (len(bands), h, w) ``dtype``."""
        row, col = window.row + self.offset[0], window.col + self.offset[1]
        if self._array is not None:
            idx = [b - 1 for b in bands]
            return np.asarray(self._array[idx, row : row + window.height, col : col + window.width], dtype=dtype)
        src = self._vrt if self._vrt is not None else self._dataset
        try:
            # Reading the native type and converting in numpy is ~10 % faster than GDAL's out_dtype.
            out = src.read(indexes=list(bands), window=Window(col, row, window.width, window.height))
            return out.astype(dtype, copy=False)
        except RasterioError as err:
            raise ValueError(
                f"{describe_ref(self.ref)}: cannot read {window} ({self.name}); the file may be "
                f"truncated or corrupt: {err}"
            ) from err

    def check_bands(self, bands: Sequence[int]) -> None:
        bad = [b for b in bands if not 1 <= b <= self.count]
        if bad:
            raise ValueError(
                f"{describe_ref(self.ref)} ({self.name}) has {self.count} band(s); bands "
                f"{list(bands)} were asked for (1-based), too few bands for {bad}"
            )

    def close(self) -> None:
        for handle in (self._vrt, self._dataset):
            if handle is not None:
                handle.close()
        self._vrt = self._dataset = None


class TileReader:
    """Reads chips of one tile: every modality and the labels on the first modality's grid.

    Args:
        tile: the tile.
        modalities: which modalities to read (default: all of the tile's, in its order); the first one of the
            tile always defines the grid.
        chip_size: pad windows smaller than this to ``chip_size`` (inputs with 0, labels with ignore).
        scaling: per modality; default the tile's recommendation, else :func:`default_scaling`.
        labels: ``"full"``, ``"eroded"`` (the noBoundary labels used for evaluation; falls back to the full
            ones where a tile has none) or ``"none"``.
        statistics: precomputed tile statistics per modality (skips the streaming pass).
        mask_nodata: set labels to ignore where any input is nodata/NaN.
        decode_threads: GDAL threads decoding the blocks of one read of a GeoTIFF (``NUM_THREADS``, e.g.
            ``"ALL_CPUS"``). Default 1: measured on 2 busy cores, more threads cost ~15 % more CPU per chip
            and were slower; they may help a single reader on idle cores.
    """

    def __init__(
        self,
        tile: Tile,
        modalities: Sequence[str] | None = None,
        *,
        chip_size: int | None = None,
        scaling: Mapping[str, Scaling] | None = None,
        labels: str = "full",
        statistics: Mapping[str, TileStatistics] | None = None,
        mask_nodata: bool = True,
        decode_threads: int | str = 1,
    ) -> None:
        from mfpeft.data.scaling import default_scaling

        if labels not in LABEL_SETS:
            raise ValueError(f"labels must be one of {LABEL_SETS}, got {labels!r}")
        self.tile = tile
        self.modalities = list(modalities) if modalities is not None else list(tile.modalities)
        missing = [m for m in self.modalities if m not in tile.modalities]
        if missing:
            raise ValueError(f"tile {tile.name!r} has no modality {missing} (it has {list(tile.modalities)})")
        self.chip_size = chip_size
        self.mask_nodata = mask_nodata
        self.decode_threads = decode_threads
        self.encoding: LabelEncoding = tile.label_encoding
        scaling = dict(scaling or {})
        self.scaling = {m: scaling.get(m) or tile.scaling.get(m) or default_scaling(m) for m in self.modalities}
        self.bands: dict[str, tuple[int, ...]] = {}
        self._layers: dict[str, _Layer] = {}
        try:
            self._open(labels)
            self.statistics: dict[str, TileStatistics] = dict(statistics or {})
            for m in self.modalities:
                s = self.scaling[m]
                if s.needs_tile_statistics and m not in self.statistics:
                    self.statistics[m] = compute_tile_statistics(
                        functools.partial(self.read_raw, m),
                        self.height,
                        self.width,
                        percentiles=s.percentiles if s.mode == "percentile" else None,
                    )
        except BaseException:
            self.close()
            raise

    def _open(self, labels: str) -> None:
        tile = self.tile
        reference_name = next(iter(tile.modalities))
        threads = self.decode_threads
        ref = _Layer(tile.modalities[reference_name], f"tile {tile.name!r} modality {reference_name!r}", threads)
        self._layers[reference_name] = ref
        self._reference = ref
        footprints = [(ref, (0, 0, ref.height, ref.width))]
        for m in self.modalities:
            if m == reference_name:
                continue
            layer = _Layer(tile.modalities[m], f"tile {tile.name!r} modality {m!r}", threads)
            self._layers[m] = layer
            footprints.append((layer, layer.footprint_on(ref, Resampling.bilinear)))
        label_ref = None
        if labels == "eroded":
            label_ref = tile.eroded_labels if tile.eroded_labels is not None else tile.labels
        elif labels == "full":
            label_ref = tile.labels
        if label_ref is not None:
            layer = _Layer(label_ref, f"tile {tile.name!r} labels", threads)
            self._layers["__labels__"] = layer
            footprints.append((layer, layer.footprint_on(ref, Resampling.nearest)))
        r0, c0, r1, c1 = 0, 0, ref.height, ref.width
        for layer, (a, b, c, d) in footprints:
            r0, c0, r1, c1 = max(r0, a), max(c0, b), min(r1, c), min(c1, d)
            if r1 <= r0 or c1 <= c0:
                raise ValueError(
                    f"{describe_ref(layer.ref)} ({layer.name}) does not overlap "
                    f"{describe_ref(ref.ref)} ({ref.name}) on the reference grid"
                )
        self._origin = (r0, c0)
        self.height, self.width = r1 - r0, c1 - c0
        for m in self.modalities:
            layer = self._layers[m]
            bands = tuple(tile.bands.get(m, range(1, layer.count + 1)))
            layer.check_bands(bands)
            self.bands[m] = bands
        if "__labels__" in self._layers:
            layer = self._layers["__labels__"]
            layer.check_bands((1, 2, 3) if self.encoding.kind == "palette" else (1,))

    # -- georeferencing of the usable grid -------------------------------------------------------------------
    @property
    def transform(self) -> Any:
        """Affine transform of the usable grid (the reference grid restricted to the overlap), or None."""
        t = self._reference.transform
        if t is None or not self._reference.georeferenced:
            return None
        return t @ t.translation(self._origin[1], self._origin[0])

    @property
    def crs(self) -> Any:
        return self._reference.crs if self._reference.georeferenced else None

    @property
    def profile(self) -> dict[str, Any]:
        """A rasterio profile for writing a single-band uint8 class map on the usable grid."""
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": self.height,
            "width": self.width,
            "count": 1,
            "dtype": "uint8",
        }
        if self.crs is not None:
            profile.update(crs=self.crs, transform=self.transform)
        return profile

    @property
    def has_labels(self) -> bool:
        return "__labels__" in self._layers

    # -- reading ---------------------------------------------------------------------------------------------
    def _shift(self, window: ChipWindow) -> ChipWindow:
        if (
            window.row < 0
            or window.col < 0
            or window.row + window.height > self.height
            or window.col + window.width > self.width
        ):
            raise ValueError(f"{window} lies outside tile {self.tile.name!r} ({self.height}x{self.width})")
        row, col = window.row + self._origin[0], window.col + self._origin[1]
        return ChipWindow(row, col, window.height, window.width)

    def read_raw(self, modality: str, window: ChipWindow) -> np.ndarray:
        """Unscaled values of ``window`` as float32 (C, h, w), NaN where nodata."""
        layer = self._layers[modality]
        out = layer.read(self._shift(window), self.bands[modality], "float32")
        if layer.nodata is not None and not np.isnan(layer.nodata):
            out[out == np.float32(layer.nodata)] = np.nan
        return out

    def read_labels(self, window: ChipWindow) -> np.ndarray | None:
        """Class indices of ``window`` as uint8 (h, w), 255 = ignore; None without labels."""
        if not self.has_labels:
            return None
        layer = self._layers["__labels__"]
        enc = self.encoding
        name = describe_ref(layer.ref)
        shifted = self._shift(window)
        if enc.kind == "palette":
            rgb = layer.read(shifted, (1, 2, 3), "uint8")
            return rgb_to_labels(np.moveaxis(rgb, 0, -1), enc.palette, source=name)
        raw = layer.read(shifted, (1,), "float64")[0]
        invalid = ~np.isfinite(raw)
        if layer.nodata is not None and not np.isnan(layer.nodata):
            invalid |= raw == layer.nodata
        if enc.nodata is not None:
            invalid |= raw == enc.nodata
        raw = np.where(invalid, 0, raw)
        if enc.kind == "codes":
            assert enc.code_map is not None
            labels = map_codes(raw.astype(np.int64), enc.code_map, source=name)
            labels[labels >= len(enc.classes)] = IGNORE_INDEX
        else:
            out_of_range = (raw >= len(enc.classes)) & (raw != IGNORE_INDEX)
            bad = (~invalid) & ((raw < 0) | out_of_range | (raw % 1 != 0))
            if bad.any():
                values, counts = np.unique(raw[bad], return_counts=True)
                listed = ", ".join(f"{v:g}: {c} px" for v, c in zip(values[:20].tolist(), counts[:20].tolist()))
                raise ValueError(
                    f"{name}: label values outside the class indices 0..{len(enc.classes) - 1} (or 255): {listed}"
                )
            labels = raw.astype(np.uint8)
        labels[invalid] = IGNORE_INDEX
        return labels

    def read(self, window: ChipWindow) -> dict[str, Any]:
        """One chip.

        Returns:
            ``{"pixel_values": {modality: float32 (C, h, w)}, "labels": int64 (h, w) or None}``, scaled, with
            nodata filled with 0 (and ignore in the labels), padded to ``chip_size`` at the bottom and right.
        """
        pixel_values: dict[str, np.ndarray] = {}
        missing = np.zeros((window.height, window.width), dtype=bool)
        for m in self.modalities:
            raw = self.read_raw(m, window)
            nan = np.isnan(raw)
            missing |= nan.any(axis=0)
            scaled = self.scaling[m].apply(raw, self.statistics.get(m))
            scaled[nan | ~np.isfinite(scaled)] = 0.0
            pixel_values[m] = scaled
        labels8 = self.read_labels(window)
        labels = None
        if labels8 is not None:
            if self.mask_nodata:
                labels8[missing] = IGNORE_INDEX
            labels = labels8.astype(np.int64)
        if self.chip_size is not None and (window.height < self.chip_size or window.width < self.chip_size):
            size = self.chip_size
            pad_h, pad_w = max(size - window.height, 0), max(size - window.width, 0)
            pixel_values = {m: np.pad(v, ((0, 0), (0, pad_h), (0, pad_w))) for m, v in pixel_values.items()}
            if labels is not None:
                labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        return {"pixel_values": pixel_values, "labels": labels}

    def close(self) -> None:
        for layer in self._layers.values():
            layer.close()

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
