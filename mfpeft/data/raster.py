"""Reading a tile's modalities on one pixel grid, chip by chip (rasterio).

The first modality defines the grid. Every other raster (further modalities, labels) is read on that grid:
directly, with a pixel offset, when it shares the CRS and resolution and sits at a whole-pixel offset;
otherwise through a ``WarpedVRT`` (bilinear for continuous bands, nearest for labels). The usable area is the
overlap of all rasters. Rasters without georeferencing must have the reference's exact shape.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from mfpeft.common.scaling import Scaling, TileStatistics
from mfpeft.data.geometry import ChipWindow, intersect_windows
from mfpeft.data.palette import IGNORE_INDEX, map_codes, rgb_to_labels
from mfpeft.data.statistics import compute_tile_statistics
from mfpeft.data.tile import LabelEncoding, RasterRef, Tile, describe_ref, raster_files

__all__ = ["LABEL_SETS", "TileReader", "describe_ref", "pad_chip"]

# GDAL's block cache defaults to 5% of RAM per process; with random chips over huge rasters in several
# DataLoader workers that alone can exceed the memory budget. 64 MB per process keeps reads fast (a 256 x 256
# chip touches a few 256 x 256 blocks) and can be overridden by setting GDAL_CACHEMAX before import.
os.environ.setdefault("GDAL_CACHEMAX", "64")

LABEL_SETS = ("full", "eroded", "none")
_EPS = 1e-6

# Whole-scene statistics of the blocks of a scene (tiles with a window), computed once per process: every
# block of a scene shares them, and a scene cut into 100 blocks must not be read 100 times. Keyed by the files
# (path, mtime, size), bands, percentiles and usable area, so a changed file is read again.
_SCENE_STATISTICS: dict[tuple[Any, ...], TileStatistics] = {}
_SCENE_STATISTICS_SIZE = 256


class _Layer:
    """One raster read on the reference grid: ``read`` takes windows in reference-grid pixels."""

    def __init__(self, ref: RasterRef, name: str, decode_threads: int | str = 1) -> None:
        self.name = name
        self.ref = ref
        self._dataset: Any = None
        self._vrt: Any = None
        self._array: np.ndarray | None = None
        self.offset = (0, 0)  # (rows, cols) to add to reference-grid coordinates
        # Labels set this before footprint_on: a warped label raster without a nodata value then gets an alpha
        # band marking its footprint, since the warp fills the rest with 0, which may be a real code.
        self.mark_outside = False
        self._inside_band: int | None = None
        self.alpha_band: int | None = None  # band 4 of an RGBA raster (palette labels)
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
            if ds.count == 4 and ds.colorinterp[3] == ColorInterp.alpha:
                self.alpha_band = 4
        else:
            if isinstance(ref, tuple):  # band files are a _BandStack of single-file layers (_open_layer)
                raise TypeError(f"{describe_ref(ref)}: band files need _open_layer, not _Layer ({name})")
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

    def own_footprint(self) -> tuple[int, int, int, int]:
        """Where this layer holds values on its own grid, as (row0, col0, row1, col1): all of it."""
        return 0, 0, self.height, self.width

    def footprint_on(self, ref: _Layer | _BandStack, resampling: Resampling) -> tuple[int, int, int, int]:
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
        # With a nodata value the warp fills outside the raster with it; without one, labels get an alpha band
        # (an RGBA label raster has one already: the warp sets it to 0 outside).
        alpha = nodata is None and self.mark_outside and self.alpha_band is None
        self._vrt = WarpedVRT(
            self._dataset,
            crs=ref.crs,
            transform=r,
            width=ref.width,
            height=ref.height,
            resampling=resampling,
            **({"add_alpha": True} if alpha else {} if nodata is None else {"nodata": nodata}),
        )
        self._inside_band = self._vrt.count if alpha else None
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

    def inside(self, window: ChipWindow) -> np.ndarray | None:
        """(h, w) bool, False where ``window`` (reference-grid pixels) is off this raster, for a warped label
        raster without a nodata value (its alpha band); None when every pixel is on it or reads as nodata."""
        if self._inside_band is None:
            return None
        return self.read(window, (self._inside_band,), self.dtype.name)[0] > 0

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


class _BandStack:
    """Single-band files stacked in order as one raster (``Tile.modalities[m] = (b4.tif, b5.tif, ...)``).

    The stack's grid is its first band file's. Each band file is a :class:`_Layer` aligned like any other
    raster (direct offset or ``WarpedVRT``): onto the first band file when the stack defines the tile's grid,
    onto that grid otherwise. Band ``k`` of the stack is band 1 of the ``k``-th file.
    """

    def __init__(self, ref: tuple[Path, ...], name: str, decode_threads: int | str = 1) -> None:
        self.name, self.ref = name, ref
        self.parts: list[_Layer] = []
        try:
            for index, path in enumerate(raster_files(ref), start=1):
                part = _Layer(path, f"band file {index} of {name}", decode_threads)
                self.parts.append(part)
                if part.count != 1:
                    # Taking band 1 silently would hide a wrong file (an RGB image listed as one band).
                    raise ValueError(
                        f"{path}: band file {index} of {name} has {part.count} bands; each listed band file "
                        "must have exactly one (give a multi-band raster as a single file instead)"
                    )
        except BaseException:
            self.close()
            raise
        first = self.parts[0]
        self.height, self.width, self.count = first.height, first.width, len(self.parts)
        self.crs, self.transform = first.crs, first.transform
        self.nodata = None  # per band file: read() returns NaN where a file holds its own nodata value
        self.dtype = np.result_type(*(p.dtype for p in self.parts))

    @property
    def georeferenced(self) -> bool:
        return self.parts[0].georeferenced

    def _intersect(self, footprints: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
        r0, c0, r1, c1 = footprints[0]
        for part, (a, b, c, d) in zip(self.parts[1:], footprints[1:]):
            r0, c0, r1, c1 = max(r0, a), max(c0, b), min(r1, c), min(c1, d)
            if r1 <= r0 or c1 <= c0:
                raise ValueError(
                    f"{describe_ref(part.ref)} does not overlap {describe_ref(self.parts[0].ref)} (band files of "
                    f"{self.name})"
                )
        return r0, c0, r1, c1

    def own_footprint(self) -> tuple[int, int, int, int]:
        """Align the band files onto the first one; returns where all of them hold values on its grid."""
        first = self.parts[0]
        return self._intersect(
            [first.own_footprint()] + [p.footprint_on(first, Resampling.bilinear) for p in self.parts[1:]]
        )

    def footprint_on(self, ref: _Layer | _BandStack, resampling: Resampling) -> tuple[int, int, int, int]:
        """Align every band file onto ``ref``'s grid; returns where all of them hold values there."""
        return self._intersect([p.footprint_on(ref, resampling) for p in self.parts])

    def read(self, window: ChipWindow, bands: Sequence[int], dtype: str) -> np.ndarray:
        """Values of ``window`` (reference-grid pixels) as (len(bands), h, w) ``dtype``; for a float ``dtype``
        each band file's own nodata value reads as NaN."""
        out = np.empty((len(bands), window.height, window.width), dtype=dtype)
        for i, band in enumerate(bands):
            part = self.parts[band - 1]
            values = part.read(window, (1,), dtype)
            if out.dtype.kind == "f" and part.nodata is not None and not np.isnan(part.nodata):
                values[values == np.asarray(part.nodata, dtype=dtype)] = np.nan
            out[i] = values[0]
        return out

    def check_bands(self, bands: Sequence[int]) -> None:
        bad = [b for b in bands if not 1 <= b <= self.count]
        if bad:
            raise ValueError(
                f"{describe_ref(self.ref)} ({self.name}) has {self.count} band file(s); bands "
                f"{list(bands)} were asked for (1-based, one per band file), too few for {bad}"
            )

    def close(self) -> None:
        for part in self.parts:
            part.close()


def _open_layer(ref: RasterRef, name: str, decode_threads: int | str = 1) -> _Layer | _BandStack:
    """The reader of one raster reference: a :class:`_BandStack` for band files, else a :class:`_Layer`."""
    if isinstance(ref, tuple):
        return _BandStack(ref, name, decode_threads)
    return _Layer(ref, name, decode_threads)


class TileReader:
    """Reads chips of one tile: every modality and the labels on the first modality's grid.

    Args:
        tile: the tile.
        modalities: which modalities to read (default: all of the tile's, in its order); the first one of the
            tile always defines the grid.
        chip_size: pad windows smaller than this to ``chip_size`` (inputs with 0, labels with ignore).
        scaling: the raw -> input scaling per modality; default the tile's recommendation, else
            :func:`default_scaling` (see :func:`mfpeft.data.scaling.reader_scalings`: an unresolved ``stats``
            is an error, and a prepared tile is read as stored). ``self.scaling`` is the raw -> input scaling.
        labels: ``"full"``, ``"eroded"`` (the noBoundary labels used for evaluation; falls back to the full
            ones where a tile has none) or ``"none"``.
        statistics: precomputed tile statistics per modality (skips the streaming pass).
        mask_nodata: set labels to ignore where any input is nodata/NaN.
        decode_threads: GDAL threads decoding the blocks of one read of a GeoTIFF (``NUM_THREADS``, e.g.
            ``"ALL_CPUS"``). Default 1: measured on 2 busy cores, more threads cost ~15 % more CPU per chip
            and were slower; they may help a single reader on idle cores.

    ``area`` is the overlap of every raster on the first modality's grid and ``window`` the part of it read
    (the tile's ``window`` cut from it, or all of it), both ``ChipWindow`` in that grid's pixels; ``height``,
    ``width`` and every window passed to the read methods are relative to ``window``. A modality given as band
    files (a tuple of paths) is read as one raster stacked in file order.
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
        from mfpeft.data.tile import reader_scalings

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
        # What the values mean (raw -> input) and what is applied to them: "none" for a prepared tile's.
        self.scaling, self._applied = reader_scalings(tile, self.modalities, scaling)
        self.bands: dict[str, tuple[int, ...]] = {}
        self._layers: dict[str, _Layer | _BandStack] = {}
        try:
            self._open(labels)
            self.statistics: dict[str, TileStatistics] = dict(statistics or {})
            for m in self.modalities:
                s = self._applied[m]
                if s.needs_tile_statistics and m not in self.statistics:
                    self.statistics[m] = self._scene_statistics(m, s.percentiles if s.mode == "percentile" else None)
        except BaseException:
            self.close()
            raise

    def _open(self, labels: str) -> None:
        tile = self.tile
        reference_name = next(iter(tile.modalities))
        threads = self.decode_threads
        ref = _open_layer(tile.modalities[reference_name], f"tile {tile.name!r} modality {reference_name!r}", threads)
        self._layers[reference_name] = ref
        self._reference = ref
        footprints: list[tuple[_Layer | _BandStack, tuple[int, int, int, int]]] = [(ref, ref.own_footprint())]
        for m in self.modalities:
            if m == reference_name:
                continue
            layer = _open_layer(tile.modalities[m], f"tile {tile.name!r} modality {m!r}", threads)
            self._layers[m] = layer
            footprints.append((layer, layer.footprint_on(ref, Resampling.bilinear)))
        label_ref = None
        if labels == "eroded":
            label_ref = tile.eroded_labels if tile.eroded_labels is not None else tile.labels
        elif labels == "full":
            label_ref = tile.labels
        if label_ref is not None:
            layer = _open_layer(label_ref, f"tile {tile.name!r} labels", threads)
            self._layers["__labels__"] = layer
            if isinstance(layer, _Layer):
                layer.mark_outside = True
            footprints.append((layer, layer.footprint_on(ref, Resampling.nearest)))
        r0, c0, r1, c1 = 0, 0, ref.height, ref.width
        for layer, (a, b, c, d) in footprints:
            r0, c0, r1, c1 = max(r0, a), max(c0, b), min(r1, c), min(c1, d)
            if r1 <= r0 or c1 <= c0:
                raise ValueError(
                    f"{describe_ref(layer.ref)} ({layer.name}) does not overlap "
                    f"{describe_ref(ref.ref)} ({ref.name}) on the reference grid"
                )
        self._set_window(ChipWindow(r0, c0, r1 - r0, c1 - c0))
        for m in self.modalities:
            layer = self._layers[m]
            bands = tuple(tile.bands.get(m, range(1, layer.count + 1)))
            layer.check_bands(bands)
            self.bands[m] = bands
        if "__labels__" in self._layers:
            layer = self._layers["__labels__"]
            if self.encoding.kind == "palette" and layer.count < 3:
                raise ValueError(
                    f"{describe_ref(layer.ref)} ({layer.name}) has {layer.count} band(s) but palette labels are "
                    "RGB (3 bands); for integer codes use --label-kind codes (or auto, the default)"
                )
            layer.check_bands((1, 2, 3) if self.encoding.kind == "palette" else (1,))

    def _set_window(self, area: ChipWindow) -> None:
        """Record the usable ``area`` (the overlap of every raster, on the reference grid) and the part of it
        this reader reads: all of it, or the tile's window cut from it."""
        self.area = area
        window = area if self.tile.window is None else intersect_windows(area, self.tile.window)
        if window is None:
            a = area
            raise ValueError(
                f"tile {self.tile.name!r}: window {tuple(self.tile.window or ())} (row, col, height, width) lies "
                f"outside rows {a.row}..{a.row + a.height}, cols {a.col}..{a.col + a.width}, the area every raster "
                f"covers on the grid of {describe_ref(self._reference.ref)}"
            )
        self.window = window
        self._origin = (window.row, window.col)
        self.height, self.width = window.height, window.width

    def _scene_statistics(self, modality: str, percentiles: tuple[float, float] | None) -> TileStatistics:
        """Statistics of ``modality`` over the whole usable area, also for a tile with a window (a block of a
        scene is scaled as the whole scene is when predicted); shared by the blocks of one scene."""
        area = self.area
        key = self._statistics_key(modality, percentiles) if self.tile.window is not None else None
        if key is not None and key in _SCENE_STATISTICS:
            return _SCENE_STATISTICS[key]

        def read(window: ChipWindow) -> np.ndarray:
            return self._read_at(modality, ChipWindow(window.row + area.row, window.col + area.col, *window[2:]))

        statistics = compute_tile_statistics(read, area.height, area.width, percentiles=percentiles)
        if key is not None:
            if len(_SCENE_STATISTICS) >= _SCENE_STATISTICS_SIZE:
                del _SCENE_STATISTICS[next(iter(_SCENE_STATISTICS))]
            _SCENE_STATISTICS[key] = statistics
        return statistics

    def _statistics_key(self, modality: str, percentiles: tuple[float, float] | None) -> tuple[Any, ...] | None:
        """What whole-scene statistics depend on: the modality's and the reference's files (path, mtime,
        size), bands, percentiles and the usable area; None for in-memory rasters (not cached)."""
        refs = (self._layers[modality].ref, self._reference.ref)
        files = [f for ref in refs for f in raster_files(ref)]
        if any(not isinstance(ref, (str, Path, tuple)) for ref in refs):
            return None
        stats = [(str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files]
        return (tuple(stats), modality, self.bands[modality], percentiles, tuple(self.area))

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
        """A rasterio profile of a single-band uint8 class map on the first modality's whole grid: what a
        prediction of the tile is written on (:class:`mfpeft.data.writer.PredictionWriter`), :attr:`window`
        being the part of it read. Its CRS and transform (a transform alone without a CRS), if it has them."""
        ref = self._reference
        profile: dict[str, Any] = {"driver": "GTiff", "height": ref.height, "width": ref.width}
        profile.update(count=1, dtype="uint8")
        if ref.crs is not None:
            profile.update(crs=ref.crs, transform=ref.transform)
        elif ref.transform is not None and not ref.transform.is_identity:
            profile.update(transform=ref.transform)
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
        return self._read_at(modality, self._shift(window))

    def _read_at(self, modality: str, window: ChipWindow) -> np.ndarray:
        """:meth:`read_raw` of a window in reference-grid pixels (not relative to this reader's window)."""
        layer = self._layers[modality]
        out = layer.read(window, self.bands[modality], "float32")
        if layer.nodata is not None and not np.isnan(layer.nodata):
            out[out == np.float32(layer.nodata)] = np.nan
        return out

    def read_label_codes(self, window: ChipWindow) -> tuple[np.ndarray, np.ndarray]:
        """Raw values of a code or index label raster in ``window``: float64 (h, w), and (h, w) bool where they
        are labels; False at NaN, the raster's nodata, the encoding's nodata and off the raster's footprint.

        Those pixels are left out *before* any code is mapped: a fill value must never become a code.
        """
        if not self.has_labels:
            raise ValueError(f"tile {self.tile.name!r} has no labels")
        layer = self._layers["__labels__"]
        shifted = self._shift(window)
        raw = layer.read(shifted, (1,), "float64")[0]
        valid = np.isfinite(raw)
        for nodata in (layer.nodata, self.encoding.nodata):
            if nodata is not None and not np.isnan(nodata):
                valid &= raw != nodata
        inside = layer.inside(shifted) if isinstance(layer, _Layer) else None
        if inside is not None:
            valid &= inside
        return raw, valid

    def _read_palette_labels(self, window: ChipWindow) -> np.ndarray:
        """Palette labels: colours -> classes; transparent (alpha 0), all-bands-nodata and off-footprint
        pixels are ignore."""
        layer = self._layers["__labels__"]
        shifted = self._shift(window)
        alpha = layer.alpha_band if isinstance(layer, _Layer) else None
        rgb = layer.read(shifted, (1, 2, 3) if alpha is None else (1, 2, 3, alpha), "uint8")
        valid = np.ones(rgb.shape[1:], dtype=bool)
        if alpha is not None:
            valid &= rgb[3] > 0
        if layer.nodata is not None and not np.isnan(layer.nodata):
            valid &= ~(rgb[:3] == layer.nodata).all(axis=0)
        inside = layer.inside(shifted) if isinstance(layer, _Layer) else None
        if inside is not None:
            valid &= inside
        name = describe_ref(layer.ref)
        return rgb_to_labels(np.moveaxis(rgb[:3], 0, -1), self.encoding.palette, source=name, valid=valid)

    def read_labels(self, window: ChipWindow) -> np.ndarray | None:
        """Class indices of ``window`` as uint8 (h, w), 255 = ignore; None without labels."""
        if not self.has_labels:
            return None
        enc = self.encoding
        if enc.kind == "palette":
            return self._read_palette_labels(window)
        name = describe_ref(self._layers["__labels__"].ref)
        raw, valid = self.read_label_codes(window)
        values = raw[valid]
        if enc.kind == "codes":
            mapped = map_codes(values, enc.code_map or {}, source=name, other=enc.other)
            # An index past the classes is ignore: the MMHunan reference map sends code 11 to 7 of 7 classes.
            mapped[mapped >= len(enc.classes)] = IGNORE_INDEX
        else:
            out_of_range = (values >= len(enc.classes)) & (values != IGNORE_INDEX)
            bad = (values < 0) | out_of_range | (values % 1 != 0)
            if bad.any():
                found, counts = np.unique(values[bad], return_counts=True)
                listed = ", ".join(f"{v:g}: {c} px" for v, c in zip(found[:20].tolist(), counts[:20].tolist()))
                raise ValueError(
                    f"{name}: label values outside the class indices 0..{len(enc.classes) - 1} (or 255): {listed}"
                )
            mapped = values.astype(np.uint8)
        labels = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
        labels[valid] = mapped
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
            scaled = self._applied[m].apply(raw, self.statistics.get(m))
            scaled[nan | ~np.isfinite(scaled)] = 0.0
            pixel_values[m] = scaled
        labels8 = self.read_labels(window)
        labels = None
        if labels8 is not None:
            if self.mask_nodata:
                labels8[missing] = IGNORE_INDEX
            labels = labels8.astype(np.int64)
        chip = {"pixel_values": pixel_values, "labels": labels}
        return chip if self.chip_size is None else pad_chip(chip, self.chip_size)

    def close(self) -> None:
        for layer in self._layers.values():
            layer.close()

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pad_chip(chip: Mapping[str, Any], size: int) -> dict[str, Any]:
    """A chip padded at the bottom and right to ``size`` x ``size``: the one chip padder (readers, datasets,
    heatmaps).

    Args:
        chip: ``{"pixel_values": {modality: (C, h, w)}, "labels": (h, w) or None}``.

    Returns:
        The same keys, inputs ``(C, size, size)`` padded with 0 and labels ``(size, size)`` with `IGNORE_INDEX`;
        the arrays themselves when the chip already has that size (or a larger one).
    """
    pixel_values, labels = chip["pixel_values"], chip["labels"]
    height, width = labels.shape if labels is not None else next(iter(pixel_values.values())).shape[1:]
    pad_h, pad_w = max(size - height, 0), max(size - width, 0)
    if pad_h or pad_w:
        pixel_values = {m: np.pad(v, ((0, 0), (0, pad_h), (0, pad_w))) for m, v in pixel_values.items()}
        if labels is not None:
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
    return {"pixel_values": dict(pixel_values), "labels": labels}


def label_row_bands(tiles: Sequence[Tile], rows: int = 512) -> Iterator[tuple[TileReader, ChipWindow]]:
    """Each labelled tile's reader with its grid cut into row bands of ``rows`` (whole width): a scan of every
    label pixel in bounded memory. Only the first modality (the grid) and the labels are opened; "none" scaling
    needs no statistics pass."""
    for tile in tiles:
        if tile.labels is None:
            continue
        first = next(iter(tile.modalities))
        with TileReader(tile, [first], scaling={first: Scaling(mode="none")}, mask_nodata=False) as reader:
            for row in range(0, reader.height, rows):
                yield reader, ChipWindow(row, 0, min(rows, reader.height - row), reader.width)
