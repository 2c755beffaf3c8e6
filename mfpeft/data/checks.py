"""How much of a raster holds data: one streamed count shared by prediction and training.

A DSM that is NaN everywhere is scaled to a flat zero, and a model then predicts from it as if the ground were
flat: a silent wrong answer. :func:`valid_share` counts the pixels that hold a value; :func:`check_valid_share`
turns an empty modality into an error and a patchy one into a warning, each naming the modality and the file.

Reading: exact, block by block. The file is read in windows aligned to its internal blocks (GeoTIFF tiles or
strips), grouped to about ``block_pixels`` pixels, so memory stays bounded whatever the scene size and every
block is decoded once. A decimated or overview read would be cheaper on huge scenes but can miss a small valid
area (or report an all-NaN overview of valid data), and an exact count never does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from mfpeft.data.tile import RasterRef, Tile, describe_ref, raster_files

__all__ = [
    "MISSING_WARNING_SHARE",
    "LabelCounts",
    "ValidShare",
    "check_tile_inputs",
    "check_valid_share",
    "count_labels",
    "valid_share",
]

MISSING_WARNING_SHARE = 0.05
"""Above this share of pixels without data, :func:`check_valid_share` warns."""


@dataclass(frozen=True)
class ValidShare:
    """Pixels of a raster that hold data: ``valid`` of ``total``; ``nodata`` is the value that means none
    (NaN for a float raster without one, None for an integer raster without one: every pixel is valid);
    ``floating``: float values, so NaN is missing too."""

    valid: int
    total: int
    nodata: float | None
    floating: bool

    @property
    def share(self) -> float:
        """``valid / total`` in [0, 1] (0 for an empty raster)."""
        return self.valid / self.total if self.total else 0.0

    @property
    def missing_share(self) -> float:
        return 1.0 - self.share if self.total else 1.0

    def describe_missing(self) -> str:
        """What a missing pixel is: "NaN", "the nodata value -32768" or "NaN or the nodata value -9999"."""
        if self.nodata is None or math.isnan(self.nodata):
            return "NaN"
        return ("NaN or " if self.floating else "") + f"the nodata value {self.nodata:g}"


def _missing(values: npt.NDArray[np.generic], nodata: float | None) -> npt.NDArray[np.bool_]:
    """(h, w): True where every band is nodata or NaN (GDAL's per-dataset mask rule)."""
    if values.dtype.kind == "f":
        bad = np.isnan(values)
        if nodata is not None and not math.isnan(nodata):
            bad |= values == nodata
    elif nodata is not None and not math.isnan(nodata):
        bad = values == nodata
    else:
        return np.zeros(values.shape[1:], dtype=bool)
    return np.asarray(bad.all(axis=0))


def _windows(height: int, width: int, block: tuple[int, int], block_pixels: int) -> Iterator[Window]:
    """Windows of whole blocks (``block`` = (rows, cols)) covering the raster, about ``block_pixels`` each."""
    block_rows, block_cols = max(1, min(block[0], height)), max(1, min(block[1], width))
    cols = min(width, max(1, block_pixels // (block_rows * block_cols)) * block_cols)
    rows = min(height, max(1, block_pixels // (block_rows * cols)) * block_rows)
    for row in range(0, height, rows):
        for col in range(0, width, cols):
            yield Window(col, row, min(cols, width - col), min(rows, height - row))


def _check_bands(name: str, count: int, bands: Sequence[int] | None) -> list[int]:
    chosen = list(range(1, count + 1)) if bands is None else [int(b) for b in bands]
    bad = [b for b in chosen if not 1 <= b <= count]
    if not chosen or bad:
        raise ValueError(f"{name} has {count} band(s); bands {chosen} were asked for (1-based)")
    return chosen


def _band_files(source: tuple[Path, ...], bands: Sequence[int] | None) -> list[Path]:
    """The band files that ``bands`` (1-based, one per file; default all) choose from a band-file stack."""
    files = [Path(f).expanduser() for f in source]
    return [files[b - 1] for b in _check_bands(describe_ref(source), len(files), bands)]


def valid_share(
    source: RasterRef | str, bands: Sequence[int] | None = None, *, block_pixels: int = 1 << 22
) -> ValidShare:
    """Count the pixels of ``source`` that hold data in at least one of ``bands``.

    Args:
        source: a raster file, or an in-memory ``(C, H, W)`` / ``(H, W)`` array (or a callable returning one).
        bands: 1-based bands to look at (default: all).
        block_pixels: pixels per read; memory is about ``block_pixels`` x bands x (dtype size + 1) bytes.

    A pixel is missing where every chosen band is NaN or equals the raster's nodata value, the rule GDAL's
    dataset mask and :func:`mfpeft.engine.predict.predict_scene` use; integer rasters without a nodata value
    have no missing pixels. The whole raster is counted, not only its overlap with other modalities. Band
    files (a tuple of single-band paths, ``bands`` choosing files) may lie on different grids, so pixels are
    not matched across them: the result is that of the chosen band file holding the smallest share of values.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ValueError: not a readable raster, or bands it does not have.
    """
    if isinstance(source, tuple):
        return min(
            (valid_share(f, [1], block_pixels=block_pixels) for f in _band_files(source, bands)),
            key=lambda counted: counted.share,
        )
    if not isinstance(source, (str, Path)):
        return _array_share(np.asarray(source() if callable(source) else source), bands)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                chosen = _check_bands(str(path), src.count, bands)
                nodata = src.nodata
                missing = 0
                for window in _windows(src.height, src.width, src.block_shapes[0], block_pixels):
                    missing += int(np.count_nonzero(_missing(src.read(chosen, window=window), nodata)))
                total = src.height * src.width
                floating = np.dtype(src.dtypes[chosen[0] - 1]).kind == "f"
    except RasterioError as error:
        raise ValueError(f"{path}: unreadable or not a raster: {error}") from error
    if nodata is None and floating:
        nodata = math.nan
    return ValidShare(total - missing, total, None if nodata is None else float(nodata), floating)


def _array_share(array: npt.NDArray[np.generic], bands: Sequence[int] | None) -> ValidShare:
    """:func:`valid_share` of an in-memory ``(C, H, W)`` or ``(H, W)`` array (NaN is its only missing value)."""
    array = array[None] if array.ndim == 2 else array
    chosen = _check_bands(f"<in-memory array {tuple(array.shape)}>", array.shape[0], bands)
    floating = array.dtype.kind == "f"
    missing = int(np.count_nonzero(_missing(array[[b - 1 for b in chosen]], None)))
    total = int(array.shape[1] * array.shape[2])
    return ValidShare(total - missing, total, math.nan if floating else None, floating)


def check_valid_share(
    modality: str,
    source: RasterRef | str,
    bands: Sequence[int] | None = None,
    *,
    warn_above: float = MISSING_WARNING_SHARE,
) -> ValidShare:
    """:func:`valid_share` of one modality's raster, refusing one without data and warning about a patchy one.

    Raises:
        ValueError: no pixel of ``source`` holds data, naming the modality and the file.

    Warns:
        UserWarning: more than ``warn_above`` of the pixels hold no data (one line, with the share).
    """
    if isinstance(source, tuple):  # each band file on its own, so that a message names the file at fault
        shares = [check_valid_share(modality, f, [1], warn_above=warn_above) for f in _band_files(source, bands)]
        return min(shares, key=lambda counted: counted.share)
    counted = valid_share(source, bands)
    name = str(source) if isinstance(source, (str, Path)) else "<in-memory array>"
    if counted.valid == 0:
        raise ValueError(
            f"{name}: modality {modality!r} has no data: every pixel is {counted.describe_missing()}; "
            "give a raster with values (or check its nodata value)"
        )
    if counted.missing_share > warn_above:
        warnings.warn(
            f"{name}: {100 * counted.missing_share:.1f} % of the pixels of modality {modality!r} are "
            f"{counted.describe_missing()} (no data); they are read as 0",
            UserWarning,
            stacklevel=2,
        )
    return counted


@dataclass(frozen=True)
class LabelCounts:
    """Label pixels of some tiles: ``pixels[k]`` of class ``k``, and ``ignored`` (255: boundary, nodata, unknown)."""

    pixels: tuple[int, ...]
    ignored: int

    @property
    def total(self) -> int:
        return sum(self.pixels) + self.ignored

    @property
    def ignored_share(self) -> float:
        return self.ignored / self.total if self.total else 1.0


def count_labels(tiles: Sequence[Tile], num_classes: int, rows: int = 512) -> LabelCounts:
    """Decode every label pixel of ``tiles`` once, in row bands, with the reader training uses.

    A colour not in the palette or a code not in the code map anywhere in a tile fails here, before the first
    optimizer step, with the reader's (and ``mfpeft prepare``'s) message naming the file; not when a random chip
    first lands on it.

    Raises:
        ValueError: a label value the tile's label encoding cannot map, or no labelled pixel at all.
    """
    from mfpeft.data.raster import label_row_bands

    counts = np.zeros(256, dtype=np.int64)
    for reader, window in label_row_bands(tiles, rows):
        labels = reader.read_labels(window)
        if labels is not None:
            counts += np.bincount(labels.ravel(), minlength=256)
    pixels = tuple(int(c) for c in counts[:num_classes])
    result = LabelCounts(pixels, int(counts[num_classes:].sum()))
    if tiles and result.total and not sum(pixels):
        raise ValueError(f"tiles {[t.name for t in tiles][:5]}: every label pixel is ignore (255); nothing to learn")
    return result


def check_tile_inputs(tiles: Sequence[Tile], modalities: Sequence[str]) -> None:
    """`check_valid_share` of every modality of every tile: an empty one is an error, a patchy one a warning.

    A raster shared by several tiles (the blocks of one scene, ``Tile.window``) is counted once."""
    seen: set[tuple[str, tuple[int, ...] | None]] = set()
    for tile in tiles:
        for m in modalities:
            ref, bands = tile.modalities[m], tile.bands.get(m)
            key = (describe_ref(ref) if raster_files(ref) else f"id {id(ref)}", None if bands is None else tuple(bands))
            if key not in seen:
                seen.add(key)
                check_valid_share(m, ref, bands)
