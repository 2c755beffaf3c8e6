"""Input scaling: how raw raster values become model inputs.

The paper divides 8-bit optical images by 255 and min-max scales the DSM over the whole tile (not per chip).
A :class:`Scaling` is recorded in the model configuration (``to_dict``/``from_dict``) so that prediction
scales inputs exactly as training did. Modes that need statistics of the whole tile get them from
:func:`compute_tile_statistics`, which reads the tile block by block, so a 20,000 x 20,000 raster is never
held in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mfpeft.data.geometry import ChipWindow

__all__ = [
    "SCALING_MODES",
    "Scaling",
    "TileStatistics",
    "compute_tile_statistics",
    "default_scaling",
]

SCALING_MODES = ("divide", "minmax_tile", "minmax_chip", "fixed", "zscore", "percentile", "none")
_TILE_MODES = ("minmax_tile", "percentile")
_HIST_BINS = 65536


@dataclass(frozen=True)
class TileStatistics:
    """Per-band statistics of a whole tile over its valid (finite, not nodata) pixels; arrays (C,)."""

    minimum: np.ndarray
    maximum: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    """Lower percentile (``percentile`` mode only)."""
    high: np.ndarray | None = None

    def to_dict(self) -> dict[str, list[float] | None]:
        return {k: (None if v is None else np.asarray(v).tolist()) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TileStatistics:
        arrays: dict[str, Any] = {k: (None if v is None else np.asarray(v, dtype=np.float64)) for k, v in data.items()}
        return cls(**arrays)


@dataclass(frozen=True)
class Scaling:
    """How one modality's raw values map to float32 model inputs.

    Modes:
        ``divide``: ``x / divisor`` (default 255, the paper's optical scaling).
        ``minmax_tile``: ``(x - min) / (max - min)`` with min and max over the whole tile (the paper's DSM).
        ``minmax_chip``: the same over the chip being read.
        ``fixed``: ``(x - low) / (high - low)`` with given ``low`` and ``high``.
        ``zscore``: ``(x - mean) / std``, with ``mean``/``std`` given or else over the whole tile.
        ``percentile``: stretch between the tile's ``percentiles`` (e.g. 2 and 98) for uint16 imagery.
        ``none``: values are used as they are (already scaled, e.g. a prepared data set).

    ``per_band`` computes statistics per band (True) or over all bands together. ``clip`` clips the
    ``fixed`` and ``percentile`` results to [0, 1].
    """

    mode: str = "divide"
    divisor: float = 255.0
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    std: float | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    per_band: bool = True
    clip: bool = True

    def __post_init__(self) -> None:
        if self.mode not in SCALING_MODES:
            raise ValueError(f"Scaling.mode must be one of {SCALING_MODES}, got {self.mode!r}")
        if self.mode == "divide" and not (np.isfinite(self.divisor) and self.divisor > 0):
            raise ValueError(f"Scaling.divisor must be a positive number, got {self.divisor!r}")
        if self.mode == "fixed":
            if self.low is None or self.high is None:
                raise ValueError(f"Scaling mode 'fixed' needs low and high, got low={self.low!r}, high={self.high!r}")
            if not self.high > self.low:
                raise ValueError(f"Scaling.high must exceed Scaling.low, got low={self.low}, high={self.high}")
        if self.mode == "zscore" and (self.mean is None) != (self.std is None):
            raise ValueError(
                f"Scaling mode 'zscore' needs both mean and std or neither, got mean={self.mean!r}, std={self.std!r}"
            )
        if self.std is not None and not self.std > 0:
            raise ValueError(f"Scaling.std must be positive, got {self.std!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"Scaling.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles!r}")
        object.__setattr__(self, "percentiles", (float(lo), float(hi)))

    @property
    def needs_tile_statistics(self) -> bool:
        """Whether :meth:`apply` needs :class:`TileStatistics` of the whole tile."""
        return self.mode in _TILE_MODES or (self.mode == "zscore" and self.mean is None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["percentiles"] = list(self.percentiles)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaling:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown Scaling field(s) {unknown}")
        if "percentiles" in known:
            known["percentiles"] = tuple(known["percentiles"])
        return cls(**known)

    def apply(self, x: np.ndarray, statistics: TileStatistics | None = None) -> np.ndarray:
        """Scale ``x`` of shape (C, H, W); NaN marks missing pixels and stays NaN (the reader fills it).

        Returns:
            float32 array of shape (C, H, W).
        """
        x = np.asarray(x, dtype=np.float32)
        if self.needs_tile_statistics and statistics is None:
            raise ValueError(f"Scaling mode {self.mode!r} needs statistics of the whole tile")
        if self.mode == "none":
            return x
        if self.mode == "divide":
            return x / np.float32(self.divisor)
        if self.mode == "fixed":
            assert self.low is not None and self.high is not None  # validated in __post_init__
            return self._stretch(x, np.float32(self.low), np.float32(self.high))
        if self.mode == "minmax_chip":
            lo, hi = _chip_minmax(x, self.per_band)
            return _ratio(x, lo, hi)
        if self.mode == "zscore" and self.mean is not None and self.std is not None:
            return (x - np.float32(self.mean)) / np.float32(self.std)
        assert statistics is not None  # needs_tile_statistics was checked above
        if self.mode == "minmax_tile":
            lo, hi = _band_values(statistics.minimum, statistics.maximum, self.per_band, np.min, np.max)
            return _ratio(x, lo, hi)
        if self.mode == "percentile":
            if statistics.low is None or statistics.high is None:
                raise ValueError("Scaling mode 'percentile' needs percentile statistics of the tile")
            lo, hi = _band_values(statistics.low, statistics.high, self.per_band, np.min, np.max)
            return self._stretch(x, lo, hi)
        # zscore with tile statistics
        if self.per_band:
            mean, std = statistics.mean, statistics.std
        else:
            # Pooled over bands: the mean of means and the root of the mean second moment minus mean^2.
            mean = np.full_like(statistics.mean, statistics.mean.mean())
            second = (statistics.std**2 + statistics.mean**2).mean()
            std = np.full_like(statistics.std, np.sqrt(max(second - mean[0] ** 2, 0.0)))
        std = np.where(std > 0, std, 1.0)
        return ((x - mean.astype(np.float32)[:, None, None]) / std.astype(np.float32)[:, None, None]).astype(np.float32)

    def _stretch(self, x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
        out = _ratio(x, lo, hi)
        return np.clip(out, 0.0, 1.0) if self.clip else out


def _ratio(x: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    if lo.ndim == 1:
        lo, hi = lo[:, None, None], hi[:, None, None]
    span = hi - lo
    # A constant band (flat DSM) maps to 0 rather than dividing by zero.
    span = np.where(span > 0, span, np.float32(np.inf))
    return ((x - lo) / span).astype(np.float32)


def _chip_minmax(x: np.ndarray, per_band: bool) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(x)
    big = np.float32(np.finfo(np.float32).max)
    lo = np.where(finite, x, big).min(axis=(1, 2))
    hi = np.where(finite, x, -big).max(axis=(1, 2))
    empty = lo > hi
    lo, hi = np.where(empty, 0, lo), np.where(empty, 0, hi)
    if not per_band:
        lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
    return lo, hi


def _band_values(
    lo: np.ndarray,
    hi: np.ndarray,
    per_band: bool,
    reduce_lo: Callable[..., Any],
    reduce_hi: Callable[..., Any],
) -> tuple[np.ndarray, np.ndarray]:
    if per_band:
        return lo, hi
    return np.full_like(lo, reduce_lo(lo)), np.full_like(hi, reduce_hi(hi))


def compute_tile_statistics(
    read_block: Callable[[ChipWindow], np.ndarray],
    height: int,
    width: int,
    *,
    percentiles: tuple[float, float] | None = None,
    block_pixels: int = 1 << 21,
) -> TileStatistics:
    """Statistics of a whole tile, read in blocks of full-width row strips.

    Args:
        read_block: returns the raw values of a window as float32 (C, h, w), NaN where missing.
        height, width: tile size in pixels.
        percentiles: also compute these percentiles (a second pass with a 65,536-bin histogram between the
            band's min and max, so the result is exact to (max - min) / 65,536).
        block_pixels: pixels per block; memory use is about ``16 * C * block_pixels`` bytes.
    """
    rows = max(1, min(height, block_pixels // max(width, 1)))
    windows = [ChipWindow(r, 0, min(rows, height - r), width) for r in range(0, height, rows)]
    # Any: these start as None and become (C,) arrays once the band count is known from the first block.
    lo: Any = None
    hi: Any = None
    total: Any = None
    count: Any = None
    sq: Any = None
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
    safe = np.maximum(count, 1)
    mean = total / safe
    std = np.sqrt(np.maximum(sq / safe - mean**2, 0.0))
    empty = count == 0
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 0.0, hi)
    p_lo = p_hi = None
    if percentiles is not None:
        hist = np.zeros((lo.shape[0], _HIST_BINS), dtype=np.int64)
        span = np.where(hi > lo, hi - lo, 1.0)
        for w in windows:
            block = np.asarray(read_block(w), dtype=np.float64).reshape(lo.shape[0], -1)
            for band in range(lo.shape[0]):
                v = block[band][np.isfinite(block[band])]
                idx = np.clip(((v - lo[band]) / span[band] * _HIST_BINS).astype(np.int64), 0, _HIST_BINS - 1)
                hist[band] += np.bincount(idx, minlength=_HIST_BINS)
        p_lo, p_hi = np.empty_like(lo), np.empty_like(hi)
        for band in range(lo.shape[0]):
            cdf = np.cumsum(hist[band])
            n = max(int(cdf[-1]), 1)
            for q, out in ((percentiles[0], p_lo), (percentiles[1], p_hi)):
                k = int(np.searchsorted(cdf, q / 100.0 * n, side="left"))
                out[band] = lo[band] + (min(k, _HIST_BINS - 1) + 0.5) / _HIST_BINS * span[band]
        p_lo, p_hi = np.maximum(p_lo, lo), np.minimum(p_hi, hi)
    return TileStatistics(minimum=lo, maximum=hi, mean=mean, std=std, low=p_lo, high=p_hi)


def default_scaling(modality: str) -> Scaling:
    """The paper's scaling for a modality name: min-max over the tile for elevation, /255 otherwise."""
    name = modality.lower()
    if any(key in name for key in ("dsm", "dem", "elev", "height", "topo", "ndsm", "srtm")):
        return Scaling(mode="minmax_tile")
    return Scaling(mode="divide", divisor=255.0)
