"""Streaming statistics of rasters read block by block: a 20,000 x 20,000 raster is never held in memory at once.

:func:`compute_tile_statistics` gives one tile's per-band statistics (what ``minmax_tile``, ``percentile`` and
``zscore`` scale by); :func:`pooled_percentiles` the percentiles over several tiles pooled (what ``stats``
resolves to). Both take the reading as a callable, ``read_block(window) -> (C, h, w)`` raw values, so this module
does no raster I/O: the reader (`mfpeft.data.raster`) uses it, and `mfpeft.data.scaling` feeds it tiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mfpeft.common.scaling import TileStatistics
from mfpeft.data.geometry import ChipWindow

__all__ = ["BlockReader", "BlockVisitor", "compute_tile_statistics", "pooled_percentiles"]

_HIST_BINS = 65536
_BLOCK_PIXELS = 1 << 21

BlockReader = Callable[[ChipWindow], np.ndarray]
"""Returns the raw values of a window as float32 (C, h, w), NaN where missing."""

BlockVisitor = Callable[[str, str, BlockReader, int, int], None]
"""Called as ``visit(tile name, modality, read_block, height, width)`` once per tile and modality."""


def _strips(height: int, width: int, block_pixels: int) -> list[ChipWindow]:
    """Full-width row strips of about ``block_pixels`` pixels covering a ``height`` x ``width`` tile."""
    rows = max(1, min(height, block_pixels // max(width, 1)))
    return [ChipWindow(r, 0, min(rows, height - r), width) for r in range(0, height, rows)]


def _extent(read_block: BlockReader, windows: Sequence[ChipWindow]) -> tuple[Any, ...]:
    """Pass 1: per band (C,) ``(min, max, sum, sum of squares, count)`` of the finite values."""
    # Any: these start as None and become (C,) arrays once the band count is known from the first block.
    lo: Any = None
    hi: Any = None
    total: Any = None
    sq: Any = None
    count: Any = None
    for w in windows:
        block = np.asarray(read_block(w), dtype=np.float64)
        flat = block.reshape(block.shape[0], -1)
        finite = np.isfinite(flat)
        b_lo = np.where(finite, flat, np.inf).min(axis=1)
        b_hi = np.where(finite, flat, -np.inf).max(axis=1)
        vals = np.where(finite, flat, 0.0)
        if lo is None:
            lo, hi = b_lo, b_hi
            total, sq, count = vals.sum(axis=1), (vals**2).sum(axis=1), finite.sum(axis=1)
        else:
            lo, hi = np.minimum(lo, b_lo), np.maximum(hi, b_hi)
            total = total + vals.sum(axis=1)
            sq = sq + (vals**2).sum(axis=1)
            count = count + finite.sum(axis=1)
    return lo, hi, total, sq, count


def _add_histogram(
    hist: np.ndarray,
    read_block: BlockReader,
    windows: Sequence[ChipWindow],
    lo: np.ndarray,
    span: np.ndarray,
) -> None:
    """Pass 2: add the finite values to ``hist`` (C, 65,536 bins from ``lo`` over ``span``)."""
    for w in windows:
        block = np.asarray(read_block(w), dtype=np.float64).reshape(lo.shape[0], -1)
        for band in range(lo.shape[0]):
            v = block[band][np.isfinite(block[band])]
            idx = np.clip(((v - lo[band]) / span[band] * _HIST_BINS).astype(np.int64), 0, _HIST_BINS - 1)
            hist[band] += np.bincount(idx, minlength=_HIST_BINS)


def _quantiles(
    hist: np.ndarray, lo: np.ndarray, hi: np.ndarray, span: np.ndarray, percentiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per band (C,) the two percentiles: the centre of the bin holding them, within [lo, hi]."""
    p_lo, p_hi = np.empty_like(lo), np.empty_like(hi)
    for band in range(lo.shape[0]):
        cdf = np.cumsum(hist[band])
        n = max(int(cdf[-1]), 1)
        for q, out in ((percentiles[0], p_lo), (percentiles[1], p_hi)):
            k = int(np.searchsorted(cdf, q / 100.0 * n, side="left"))
            out[band] = lo[band] + (min(k, _HIST_BINS - 1) + 0.5) / _HIST_BINS * span[band]
    return np.maximum(p_lo, lo), np.minimum(p_hi, hi)


def compute_tile_statistics(
    read_block: BlockReader,
    height: int,
    width: int,
    *,
    percentiles: tuple[float, float] | None = None,
    block_pixels: int = _BLOCK_PIXELS,
) -> TileStatistics:
    """Statistics of a whole tile, read in blocks of full-width row strips.

    Args:
        read_block: the raw values of a window as float32 (C, h, w), NaN where missing.
        height, width: tile size in pixels.
        percentiles: also compute these percentiles (a second pass with a 65,536-bin histogram between the
            band's min and max, so the result is exact to (max - min) / 65,536).
        block_pixels: pixels per block; memory use is about ``16 * C * block_pixels`` bytes.
    """
    windows = _strips(height, width, block_pixels)
    lo, hi, total, sq, count = _extent(read_block, windows)
    safe = np.maximum(count, 1)
    mean = total / safe
    std = np.sqrt(np.maximum(sq / safe - mean**2, 0.0))
    empty = count == 0
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    p_lo = p_hi = None
    if percentiles is not None:
        hist = np.zeros((lo.shape[0], _HIST_BINS), dtype=np.int64)
        span = np.where(hi > lo, hi - lo, 1.0)
        _add_histogram(hist, read_block, windows, lo, span)
        p_lo, p_hi = _quantiles(hist, lo, hi, span, percentiles)
    return TileStatistics(minimum=lo, maximum=hi, mean=mean, std=std, low=p_lo, high=p_hi)


def pooled_percentiles(
    each_tile: Callable[[BlockVisitor], None], tile_count: int, percentiles: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality (C,) percentiles over the valid pixels of all tiles pooled, bounds ``low < high``:
    pass 1 finds each band's extent over every tile, pass 2 fills one histogram over that extent.

    Args:
        each_tile: ``each_tile(visit)`` calls ``visit`` for every tile and every modality of ``percentiles``
            (see :data:`BlockVisitor`); it is called twice, once per pass.
        tile_count: how many tiles ``each_tile`` visits (for messages).
        percentiles: ``(low, high)`` percentiles per modality.

    Raises:
        ValueError: a band without one valid pixel in the tiles, or tiles with different band counts.
    """
    mods = list(percentiles)
    extents: dict[str, list[np.ndarray]] = {}

    def extend(name: str, m: str, read: BlockReader, height: int, width: int) -> None:
        lo, hi, _, _, count = _extent(read, _strips(height, width, _BLOCK_PIXELS))
        seen = extents.setdefault(m, [lo, hi, count * 0])
        if len(lo) != len(seen[0]):
            raise ValueError(
                f"tile {name!r}: modality {m!r} has {len(lo)} bands, the training tiles before it have {len(seen[0])}"
            )
        extents[m] = [np.minimum(seen[0], lo), np.maximum(seen[1], hi), seen[2] + count]

    each_tile(extend)
    for m, (_, _, count) in extents.items():
        for band in np.flatnonzero(count == 0):
            raise ValueError(
                f"modality {m!r} band {band + 1} has no valid pixel in the {tile_count} training "
                "tiles; its statistics (stats) cannot be computed"
            )
    hists = {m: np.zeros((len(lo), _HIST_BINS), dtype=np.int64) for m, (lo, _, _) in extents.items()}
    spans = {m: np.where(hi > lo, hi - lo, 1.0) for m, (lo, hi, _) in extents.items()}

    def fill(_: str, m: str, read: BlockReader, height: int, width: int) -> None:
        _add_histogram(hists[m], read, _strips(height, width, _BLOCK_PIXELS), extents[m][0], spans[m])

    each_tile(fill)
    return {m: _bounds(m, extents[m][0], extents[m][1], hists[m], spans[m], percentiles[m]) for m in mods}


def _bounds(
    modality: str,
    lo: np.ndarray,
    hi: np.ndarray,
    hist: np.ndarray,
    span: np.ndarray,
    percentiles: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """The percentiles of one modality's pooled histogram, widened where they coincide (a band that is
    nearly constant: its min and max; one that is constant: one unit, with a warning)."""
    p_lo, p_hi = _quantiles(hist, lo, hi, span, percentiles)
    for band in np.flatnonzero(p_hi <= p_lo):
        p_lo[band], p_hi[band] = lo[band], hi[band]
        if hi[band] <= lo[band]:
            p_hi[band] = lo[band] + 1.0
            warnings.warn(
                f"modality {modality!r} band {band + 1} holds the one value {lo[band]:g} in every training "
                "tile; its model input is 0 everywhere",
                UserWarning,
                stacklevel=3,
            )
    return p_lo, p_hi
