"""The scaling specification: how one modality's raw raster values become model inputs (`Scaling`).

A :class:`Scaling` has one text form, parsed by :meth:`Scaling.parse` (``--scaling NAME=MODE`` of every command,
and the Python API), and one JSON form (:meth:`Scaling.to_dict`), recorded in a model's ``config.json``
(``input_scaling``) and a prepared data set's metadata; :meth:`Scaling.apply` maps values. A leaf module (numpy
only), so that the models can check a recorded scaling without the data layer; which scaling a tile, a run and a
model use, and the statistics read from rasters, live in `mfpeft.data.scaling` and `mfpeft.data.statistics`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SCALING_MODES",
    "SCALING_SYNTAX",
    "Bound",
    "Scaling",
    "TileStatistics",
    "default_scaling",
    "parse_scalings",
]

SCALING_MODES = ("divide", "linear", "range", "stats", "minmax_tile", "minmax_chip", "zscore", "percentile", "none")
SCALING_SYNTAX = (
    "divide[:D], linear:SCALE,OFFSET, range:LO,HI, stats[:PLO,PHI], minmax_tile, minmax_chip, zscore[:MEAN,STD], "
    "percentile[:PLO,PHI], none"
)
_LEGACY_MODES = {"fixed": "range"}  # configs and data sets written before issue #12
_TILE_MODES = ("minmax_tile", "percentile")

Bound = float | tuple[float, ...]
"""A range bound: one value for every band, or one per band."""


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


def _number(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``3000`` rather than ``3000.0``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _bound_text(bound: Bound | None) -> str:
    if isinstance(bound, tuple):
        return "[" + ",".join(_number(v) for v in bound) + "]"
    return _number(bound if bound is not None else math.nan)


def _as_bound(value: Any, name: str) -> Bound:
    """A range bound as a float or a tuple of floats (lists from JSON included), each finite."""
    values = tuple(value) if isinstance(value, (list, tuple, np.ndarray)) else (value,)
    if not values or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"Scaling.{name} must be a number or a list of numbers, got {value!r}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"Scaling.{name} must be finite, got {value!r}")
    return floats if isinstance(value, (list, tuple, np.ndarray)) else floats[0]


@dataclass(frozen=True)
class Scaling:
    """How one modality's raw values ``x`` map to float32 model inputs.

    Modes (the text form of :meth:`parse` in brackets):
        ``divide`` (``divide[:D]``): ``x / divisor`` (default 255, the paper's optical scaling).
        ``linear`` (``linear:SCALE,OFFSET``): ``x * scale + offset``, e.g. Landsat surface reflectance
            ``linear:0.0000275,-0.2``; not clipped.
        ``range`` (``range:LO,HI``): clip to [low, high] (if ``clip``), then map to [0, 1]; ``low`` and
            ``high`` are one value or one per band (what ``stats`` resolves to).
        ``stats`` (``stats[:PLO,PHI]``): per-band ``percentiles`` (default 2 and 98) over the training tiles,
            computed once by :func:`mfpeft.data.scaling.resolve_input_scaling` into a ``range``; cannot be
            applied unresolved.
        ``minmax_tile``: ``(x - min) / (max - min)`` with min and max over the whole tile (the paper's DSM).
        ``minmax_chip``: the same over the chip being read.
        ``zscore`` (``zscore[:MEAN,STD]``): ``(x - mean) / std``, with ``mean``/``std`` given or else over the
            whole tile.
        ``percentile`` (``percentile[:PLO,PHI]``): stretch between each tile's ``percentiles``, clipped.
        ``none``: values are used as they are.

    ``per_band`` computes tile and chip statistics per band (True) or over all bands together. ``clip`` clips
    the ``range`` and ``percentile`` results to [0, 1]. ``resolved_from`` says where a resolved range came
    from (e.g. ``"stats:2,98 over 4 training tiles"``); it does not change the values, nor equality.
    """

    mode: str = "divide"
    divisor: float = 255.0
    low: Bound | None = None
    high: Bound | None = None
    mean: float | None = None
    std: float | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)
    per_band: bool = True
    clip: bool = True
    scale: float = 1.0
    offset: float = 0.0
    # Informational: two scalings with equal values are equal wherever their numbers came from.
    resolved_from: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        mode = _LEGACY_MODES.get(self.mode, self.mode)
        if mode not in SCALING_MODES:
            raise ValueError(f"Scaling.mode must be one of {SCALING_MODES}, got {self.mode!r}")
        object.__setattr__(self, "mode", mode)
        for bound in ("low", "high"):  # lists (from JSON) as tuples: a Scaling is hashable and compares equal
            if isinstance(getattr(self, bound), list):
                object.__setattr__(self, bound, tuple(getattr(self, bound)))
        if mode == "divide" and not (np.isfinite(self.divisor) and self.divisor > 0):
            raise ValueError(f"Scaling.divisor must be a positive number, got {self.divisor!r}")
        if mode == "linear" and not (np.isfinite(self.scale) and self.scale != 0 and np.isfinite(self.offset)):
            raise ValueError(
                f"Scaling.scale must be a finite non-zero number and offset finite, got "
                f"scale={self.scale!r}, offset={self.offset!r}"
            )
        if mode == "range":
            self._check_range()
        if mode == "zscore" and (self.mean is None) != (self.std is None):
            raise ValueError(
                f"Scaling mode 'zscore' needs both mean and std or neither, got mean={self.mean!r}, std={self.std!r}"
            )
        if self.std is not None and not self.std > 0:
            raise ValueError(f"Scaling.std must be positive, got {self.std!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"Scaling.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles!r}")
        object.__setattr__(self, "percentiles", (float(lo), float(hi)))

    def _check_range(self) -> None:
        if self.low is None or self.high is None:
            raise ValueError(f"Scaling mode 'range' needs low and high, got low={self.low!r}, high={self.high!r}")
        low, high = _as_bound(self.low, "low"), _as_bound(self.high, "high")
        if isinstance(low, tuple) or isinstance(high, tuple):
            bands = len(low) if isinstance(low, tuple) else len(high)  # type: ignore[arg-type]
            lows = low if isinstance(low, tuple) else (low,) * bands
            highs = high if isinstance(high, tuple) else (high,) * bands
            if len(lows) != len(highs):
                raise ValueError(f"Scaling.low and high need one value per band each, got low={low}, high={high}")
            ordered = all(h > lo for lo, h in zip(lows, highs))
            low, high = lows, highs
        else:
            ordered = high > low  # type: ignore[operator]
        if not ordered:
            raise ValueError(f"Scaling.high must exceed Scaling.low, got low={self.low}, high={self.high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    # -- the text form -------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, option: str = "scaling") -> Scaling:
        """The scaling a text names: one of :data:`SCALING_SYNTAX`, e.g. ``"range:0,3000"``, ``"stats:1,99"``.

        Raises:
            ValueError: one line ``"{option}={text}: problem"``, e.g.
                ``--scaling optical=linear:abc: linear needs SCALE,OFFSET numbers ...``.
        """
        raw = str(text)
        name, colon, value = raw.strip().partition(":")
        try:
            return cls._from_text(name.strip().lower(), value.strip() if colon else None)
        except ValueError as error:
            raise ValueError(f"{option}={raw}: {error}") from None

    @classmethod
    def _from_text(cls, mode: str, value: str | None) -> Scaling:
        """``mode`` and the text after its colon (None: no colon); ValueError saying what is expected."""
        expected = {
            "divide": "divide takes one number D > 0 (divide:D; default 255)",
            "linear": "linear needs SCALE,OFFSET numbers (x * SCALE + OFFSET), e.g. linear:0.0000275,-0.2",
            "range": "range needs LO,HI numbers with LO < HI (or [LO,...],[HI,...] per band), e.g. range:0,3000",
            "stats": "stats takes PLO,PHI percentiles with 0 <= PLO < PHI <= 100 (default stats:2,98)",
            "percentile": "percentile takes PLO,PHI percentiles with 0 <= PLO < PHI <= 100 (default 2,98)",
            "zscore": "zscore takes MEAN,STD numbers with STD > 0 (or none: the tile's own)",
        }
        if mode not in SCALING_MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {SCALING_SYNTAX}")
        if value is None and mode not in ("linear", "range"):
            return cls(mode)
        if mode not in expected:
            raise ValueError(f"{mode} takes no value")
        numbers = _split_numbers(value or "", per_band=mode == "range")
        if numbers is None or len(numbers) != (1 if mode == "divide" else 2):
            raise ValueError(expected[mode])
        try:
            if mode == "divide":
                return cls("divide", divisor=float(numbers[0]))  # type: ignore[arg-type]
            if mode == "linear":
                if numbers[0] == 0:
                    raise ValueError("SCALE must not be 0")
                return cls("linear", scale=float(numbers[0]), offset=float(numbers[1]))  # type: ignore[arg-type]
            if mode == "range":
                return cls("range", low=numbers[0], high=numbers[1])
            if mode == "zscore":
                return cls("zscore", mean=float(numbers[0]), std=float(numbers[1]))  # type: ignore[arg-type]
            return cls(mode, percentiles=(float(numbers[0]), float(numbers[1])))  # type: ignore[arg-type]
        except ValueError as error:
            if "SCALE" in str(error):
                raise
            raise ValueError(expected[mode]) from None

    def describe(self) -> str:
        """The text form (what :meth:`parse` reads back as this scaling), e.g. ``range:0,3000``."""
        mode = self.mode
        if mode == "divide":
            return f"divide:{_number(self.divisor)}"
        if mode == "linear":
            return f"linear:{_number(self.scale)},{_number(self.offset)}"
        if mode == "range":
            return f"range:{_bound_text(self.low)},{_bound_text(self.high)}"
        if mode in ("stats", "percentile"):
            return f"{mode}:{_number(self.percentiles[0])},{_number(self.percentiles[1])}"
        if mode == "zscore" and self.mean is not None and self.std is not None:
            return f"zscore:{_number(self.mean)},{_number(self.std)}"
        return mode

    # -- the JSON form -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("low", "high", "percentiles"):
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaling:
        """The inverse of :meth:`to_dict`; also reads the ``fixed`` mode of configs written before issue #12."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a scaling must be a JSON object such as {{'mode': 'divide'}}, got {data!r}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown Scaling field(s) {unknown}")
        for key in ("percentiles", "low", "high"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        return cls(**known)

    # -- applying it ---------------------------------------------------------------------------------------
    @property
    def needs_tile_statistics(self) -> bool:
        """Whether :meth:`apply` needs :class:`TileStatistics` of the whole tile."""
        return self.mode in _TILE_MODES or (self.mode == "zscore" and self.mean is None)

    def trained_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The raw values this scaling maps into [0, 1], ``(low, high)`` (scalars or one per band); None where
        that follows each tile or chip (min-max, percentile, zscore) or is unknown (none, unresolved stats)."""
        if self.mode == "divide":
            return np.asarray(0.0), np.asarray(self.divisor)
        if self.mode == "linear":
            ends = sorted(((0.0 - self.offset) / self.scale, (1.0 - self.offset) / self.scale))
            return np.asarray(ends[0]), np.asarray(ends[1])
        if self.mode == "range":
            return np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
        return None

    def apply(self, x: np.ndarray, statistics: TileStatistics | None = None) -> np.ndarray:
        """Scale ``x`` of shape (C, H, W); NaN marks missing pixels and stays NaN (the reader fills it).

        Returns:
            float32 array of shape (C, H, W).
        """
        x = np.asarray(x, dtype=np.float32)
        if self.mode == "stats":
            raise ValueError(
                f"scaling {self.describe()} is computed over the training tiles first "
                "(resolve_input_scaling); it cannot be applied as it is"
            )
        if self.needs_tile_statistics and statistics is None:
            raise ValueError(f"Scaling mode {self.mode!r} needs statistics of the whole tile")
        if self.mode == "none":
            return x
        if self.mode == "divide":
            return x / np.float32(self.divisor)
        if self.mode == "linear":
            return (x * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32)
        if self.mode == "range":
            return self._stretch(x, *self._range_bounds(x.shape[0]))
        if self.mode == "minmax_chip":
            lo, hi = _chip_minmax(x, self.per_band)
            return _ratio(x, lo, hi)
        if self.mode == "zscore" and self.mean is not None and self.std is not None:
            return (x - np.float32(self.mean)) / np.float32(self.std)
        if statistics is None:  # unreachable: needs_tile_statistics was checked above
            raise ValueError(f"Scaling mode {self.mode!r} needs statistics of the whole tile")
        return self._apply_tile(x, statistics)

    def _range_bounds(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 bounds: scalars (0-d), or (C,) per band, checked against the ``bands`` of the data."""
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        if low.ndim == 1 and len(low) != bands:
            raise ValueError(
                f"scaling {self.describe()}: range has {len(low)} per-band bounds but the data has {bands} bands"
            )
        return low, high

    def _apply_tile(self, x: np.ndarray, statistics: TileStatistics) -> np.ndarray:
        """The modes scaled by whole-tile statistics: minmax_tile, percentile, zscore without mean/std."""
        if self.mode == "minmax_tile":
            lo, hi = _band_values(statistics.minimum, statistics.maximum, self.per_band, np.min, np.max)
            return _ratio(x, lo, hi)
        if self.mode == "percentile":
            if statistics.low is None or statistics.high is None:
                raise ValueError("Scaling mode 'percentile' needs percentile statistics of the tile")
            lo, hi = _band_values(statistics.low, statistics.high, self.per_band, np.min, np.max)
            return self._stretch(x, lo, hi)
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


def _split_numbers(text: str, per_band: bool) -> list[float | tuple[float, ...]] | None:
    """``"A,B"`` -> [A, B] (finite numbers); with ``per_band`` also ``"[A1,A2],[B1,B2]"``; None if malformed."""
    lists = re.fullmatch(r"\[([^\]]*)\]\s*,\s*\[([^\]]*)\]", text) if per_band else None
    try:
        if lists is not None:
            parts = [tuple(float(v) for v in group.split(",")) for group in lists.groups()]
            flat = [v for part in parts for v in part]
            return list(parts) if all(math.isfinite(v) for v in flat) else None
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    return list(values) if all(math.isfinite(v) for v in values) else None


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


def default_scaling(modality: str) -> Scaling:
    """The paper's scaling for a modality name: min-max over the tile for elevation, /255 otherwise.

    What a tile without a recommendation is read with (the ISPRS sources, the demo, hand-built tiles), and the
    one fallback for a model that recorded no scaling (:func:`mfpeft.data.scaling.model_input_scaling`).
    """
    name = modality.lower()
    if any(key in name for key in ("dsm", "dem", "elev", "height", "topo", "ndsm", "srtm")):
        return Scaling(mode="minmax_tile")
    return Scaling(mode="divide", divisor=255.0)


def parse_scalings(
    scaling: Mapping[str, Scaling | str | Mapping[str, Any]] | None, flag: str = "--scaling"
) -> dict[str, Scaling]:
    """``{modality: Scaling}`` from texts (:meth:`Scaling.parse`), :class:`Scaling` objects or their dicts.

    Raises:
        ValueError: ``"{flag} NAME=TEXT: problem"`` for the first bad one.
    """
    if scaling is not None and not isinstance(scaling, Mapping):
        raise ValueError(f"{flag}: expected {{modality: scaling}}, got {scaling!r}")
    out: dict[str, Scaling] = {}
    for name, value in (scaling or {}).items():
        if isinstance(value, Scaling):
            out[str(name)] = value
        elif isinstance(value, str):
            out[str(name)] = Scaling.parse(value, f"{flag} {name}")
        elif isinstance(value, Mapping):
            try:
                out[str(name)] = Scaling.from_dict(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{flag} {name}={dict(value)}: {error}") from None
        else:
            raise ValueError(f"{flag} {name}={value!r}: give a text such as 'range:0,3000' or a Scaling")
    return out
