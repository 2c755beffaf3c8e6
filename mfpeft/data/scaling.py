"""Input scaling: how raw raster values become model inputs, written once, recorded once, applied everywhere.

A :class:`Scaling` is one modality's raw -> input map. It has one text form, parsed by :meth:`Scaling.parse`
(``--scaling NAME=MODE`` of every command, and the Python API), and one JSON form (:meth:`Scaling.to_dict`),
recorded in a model's ``config.json`` (``input_scaling``) and a prepared data set's metadata, so that
evaluation and prediction read rasters exactly as training did (:func:`model_input_scaling`).

``stats`` is computed once over the training tiles (:func:`resolve_input_scaling`) and becomes a ``range`` with
concrete per-band bounds: a chip's input then depends on its pixels only, not on the raster it was cut from.
``minmax_tile`` and ``percentile`` follow each tile; their statistics come from :func:`compute_tile_statistics`,
which reads a tile block by block, so a 20,000 x 20,000 raster is never held in memory at once.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mfpeft.data.geometry import ChipWindow

if TYPE_CHECKING:
    from mfpeft.data.tile import Tile

__all__ = [
    "SCALING_MODES",
    "SCALING_SYNTAX",
    "Scaling",
    "TileStatistics",
    "compute_tile_statistics",
    "default_scaling",
    "model_input_scaling",
    "parse_scalings",
    "reader_scalings",
    "requested_scalings",
    "resolve_input_scaling",
    "resolve_stats",
]

SCALING_MODES = ("divide", "linear", "range", "stats", "minmax_tile", "minmax_chip", "zscore", "percentile", "none")
SCALING_SYNTAX = (
    "divide[:D], linear:SCALE,OFFSET, range:LO,HI, stats[:PLO,PHI], minmax_tile, minmax_chip, zscore[:MEAN,STD], "
    "percentile[:PLO,PHI], none"
)
_LEGACY_MODES = {"fixed": "range"}  # configs and data sets written before issue #12
_TILE_MODES = ("minmax_tile", "percentile")
_HIST_BINS = 65536

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
            computed once by :func:`resolve_input_scaling` into a ``range``; cannot be applied unresolved.
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
            raise ValueError(f"Scaling.scale must be a finite non-zero number and offset finite, got "
                             f"scale={self.scale!r}, offset={self.offset!r}")  # fmt: skip
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
            raise ValueError(f"scaling {self.describe()} is computed over the training tiles first "
                             "(resolve_input_scaling); it cannot be applied as it is")  # fmt: skip
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
            raise ValueError(f"scaling {self.describe()}: range has {len(low)} per-band bounds but the data has "
                             f"{bands} bands")  # fmt: skip
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
    one fallback for a model that recorded no scaling (:func:`model_input_scaling`).
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


# -- which scaling a reader, a run and a model use ----------------------------------------------------------
_NONE = Scaling("none")


def requested_scaling(tile: Tile, modality: str, asked: Scaling | None = None) -> Scaling:
    """The raw -> input scaling of ``modality`` of ``tile``: ``asked``, else the source's recommendation
    (``tile.scaling``), else :func:`default_scaling`; for a prepared tile the one its values were made with.

    Raises:
        ValueError: ``asked`` differs from the scaling a prepared tile's values already have (a second scaling).
    """
    prepared = tile.prepared_scaling.get(modality)
    if prepared is None:
        return asked or tile.scaling.get(modality) or default_scaling(modality)
    if asked is not None and asked.mode != "none" and asked != prepared:
        raise ValueError(
            f"tile {tile.name!r} modality {modality!r} is prepared: its values are already scaled with "
            f"{prepared.describe()}; it cannot be read with {asked.describe()} as well (use the raw rasters, or "
            f"prepare them with --scaling {modality}={asked.describe()})"
        )
    return prepared


def reader_scalings(
    tile: Tile, modalities: Sequence[str], scaling: Mapping[str, Scaling] | None = None
) -> tuple[dict[str, Scaling], dict[str, Scaling]]:
    """``(raw -> input scaling, scaling applied to what the tile stores)`` per modality, for a reader.

    They differ for a prepared tile only: its stored values are already inputs, so ``none`` is applied, while
    the raw -> input scaling (what a model trained on it records) is the one it was prepared with.

    Raises:
        ValueError: an unresolved ``stats`` (see :func:`resolve_input_scaling`), or a second scaling of a
            prepared tile, naming the tile and modality.
    """
    asked = dict(scaling or {})
    recorded: dict[str, Scaling] = {}
    applied: dict[str, Scaling] = {}
    for m in modalities:
        s = requested_scaling(tile, m, asked.get(m))
        if s.mode == "stats":
            raise ValueError(
                f"tile {tile.name!r} modality {m!r}: scaling {s.describe()} is resolved over the training tiles "
                "first; pass the resolved scaling (mfpeft.data.scaling.resolve_input_scaling(train_tiles, "
                "modalities), or a RandomChipDataset's input_scaling)"
            )
        recorded[m] = s
        applied[m] = _NONE if m in tile.prepared_scaling else s
    return recorded, applied


def requested_scalings(
    tiles: Sequence[Tile], modalities: Sequence[str], scaling: Mapping[str, Any] | None = None
) -> dict[str, Scaling]:
    """:func:`requested_scaling` per modality, the same for every tile (``stats`` still unresolved).

    Raises:
        ValueError: a bad ``scaling`` (naming ``--scaling NAME=TEXT``), one for a modality the tiles lack, or
            tiles that recommend different scalings for one modality.
    """
    given = parse_scalings(scaling)
    have = set(tiles[0].modalities) if tiles else set(modalities)
    unknown = sorted(set(given) - have)
    if unknown:
        raise ValueError(f"--scaling names modality {unknown[0]!r}, which the tiles do not have (they have "
                         f"{sorted(have)})")  # fmt: skip
    out: dict[str, Scaling] = {}
    for m in modalities:
        out[m] = given.get(m) or default_scaling(m)  # no tiles: what a tile without a recommendation gets
        for index, tile in enumerate(tiles):
            s = requested_scaling(tile, m, given.get(m))
            if index == 0:
                out[m] = s
            elif s != out[m]:
                raise ValueError(f"modality {m!r}: tile {tiles[0].name!r} is read with {out[m].describe()} but tile "
                                 f"{tile.name!r} with {s.describe()}; give one with --scaling {m}=MODE")  # fmt: skip
    return out


def resolve_input_scaling(
    tiles: Sequence[Tile], modalities: Sequence[str], scaling: Mapping[str, Any] | None = None
) -> dict[str, Scaling]:
    """The raw -> input scaling per modality of a run on the training ``tiles``: :func:`requested_scalings`,
    with ``stats`` computed once over those tiles into a per-band ``range`` (:func:`resolve_stats`).

    This is what a model records (``config.input_scaling``) and a prepared data set stores: concrete numbers.
    """
    return resolve_stats(tiles, requested_scalings(tiles, modalities, scaling))


def resolve_stats(tiles: Sequence[Tile], scaling: Mapping[str, Scaling]) -> dict[str, Scaling]:
    """``scaling`` with every ``stats`` replaced by a ``range`` whose per-band bounds are its percentiles over
    the valid pixels of all of ``tiles`` (the training tiles), streamed in two passes (extent, histogram).

    Raises:
        ValueError: ``stats`` without tiles, or a band without one valid pixel in them.
    """
    out = dict(scaling)
    pending = [m for m, s in scaling.items() if s.mode == "stats"]
    if not pending:
        return out
    if not tiles:
        m = pending[0]
        raise ValueError(f"--scaling {m}={scaling[m].describe()}: computed over the training tiles, and there are "
                         f"none here; give its range instead (--scaling {m}=range:LO,HI)")  # fmt: skip
    bounds = _pooled_percentiles(tiles, {m: scaling[m].percentiles for m in pending})
    for m, (low, high) in bounds.items():
        origin = f"{scaling[m].describe()} over {len(tiles)} training tile{'s' if len(tiles) != 1 else ''}"
        out[m] = Scaling("range", low=tuple(low.tolist()), high=tuple(high.tolist()), resolved_from=origin)
    return out


def model_input_scaling(config: Any, given: Mapping[str, Any] | None = None) -> dict[str, Scaling]:
    """The raw -> input scaling a model expects, per modality of ``config`` (an ``MFNetConfig``), the one
    answer for ``evaluate``, ``predict`` and ``heatmap``.

    The scaling it recorded (``config.input_scaling``), unless ``given`` (``--scaling``) names another: that is
    used, with a warning when it differs. A modality it recorded none for (a model saved before mfpeft recorded
    input_scaling) falls back to :func:`default_scaling`, the paper's, with a one-line warning.

    Raises:
        ValueError: a ``given`` modality the model lacks, or an unresolved ``stats`` (a scene has no training
            tiles; :func:`resolve_stats` first where there are).
    """
    asked = parse_scalings(given)
    names = list(config.modality_names)
    unknown = sorted(set(asked) - set(names))
    if unknown:
        raise ValueError(f"--scaling names modality {unknown[0]!r}, which the model does not have (it has {names})")
    recorded = getattr(config, "input_scaling", None) or {}
    out: dict[str, Scaling] = {}
    for name in names:
        have = Scaling.from_dict(recorded[name]) if name in recorded else None
        want = asked.get(name)
        if want is not None and want.mode == "stats":
            raise ValueError(f"--scaling {name}={want.describe()}: computed over the training tiles, and a scene "
                             f"has none; give the range (--scaling {name}=range:LO,HI) or leave the model's "
                             f"({have.describe() if have else 'none recorded'})")  # fmt: skip
        if want is not None:
            if have is not None and want != have:
                message = (f"modality {name!r}: reading it with {want.describe()} as --scaling asks, not with "
                           f"{have.describe()}, the scaling the model was trained with")  # fmt: skip
                warnings.warn(message, UserWarning, stacklevel=2)
            out[name] = want
        elif have is not None:
            out[name] = have
        else:
            out[name] = default_scaling(name)
            message = (f"the model records no input scaling for modality {name!r}; reading it with "
                       f"{out[name].describe()} (the paper's; models saved before mfpeft recorded it were trained "
                       f"so); give --scaling {name}=MODE if it was not")  # fmt: skip
            warnings.warn(message, UserWarning, stacklevel=2)
    return out


# -- streaming statistics -----------------------------------------------------------------------------------
def _strips(height: int, width: int, block_pixels: int) -> list[ChipWindow]:
    """Full-width row strips of about ``block_pixels`` pixels covering a ``height`` x ``width`` tile."""
    rows = max(1, min(height, block_pixels // max(width, 1)))
    return [ChipWindow(r, 0, min(rows, height - r), width) for r in range(0, height, rows)]


def _extent(read_block: Callable[[ChipWindow], np.ndarray], windows: Sequence[ChipWindow]) -> tuple[Any, ...]:
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
    hist: np.ndarray, read_block: Callable[[ChipWindow], np.ndarray], windows: Sequence[ChipWindow],
    lo: np.ndarray, span: np.ndarray,
) -> None:  # fmt: skip
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


def _pooled_percentiles(
    tiles: Sequence[Tile], percentiles: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality (C,) percentiles over the valid pixels of all ``tiles`` pooled, bounds ``low < high``:
    pass 1 finds each band's extent over every tile, pass 2 fills one histogram over that extent.

    Raises:
        ValueError: a band without one valid pixel in the tiles, or tiles with different band counts.
    """
    from mfpeft.data.raster import TileReader

    mods = list(percentiles)
    unscaled = {m: _NONE for m in mods}

    def each_tile(visit: Callable[[str, str, Callable[[ChipWindow], np.ndarray], list[ChipWindow]], None]) -> None:
        for tile in tiles:
            with TileReader(tile, mods, scaling=unscaled, labels="none") as reader:
                windows = _strips(reader.height, reader.width, 1 << 21)
                for m in mods:
                    visit(tile.name, m, functools.partial(reader.read_raw, m), windows)

    extents: dict[str, list[np.ndarray]] = {}

    def extend(name: str, m: str, read: Callable[[ChipWindow], np.ndarray], windows: list[ChipWindow]) -> None:
        lo, hi, _, _, count = _extent(read, windows)
        seen = extents.setdefault(m, [lo, hi, count * 0])
        if len(lo) != len(seen[0]):
            raise ValueError(f"tile {name!r}: modality {m!r} has {len(lo)} bands, the training tiles before it "
                             f"have {len(seen[0])}")  # fmt: skip
        extents[m] = [np.minimum(seen[0], lo), np.maximum(seen[1], hi), seen[2] + count]

    each_tile(extend)
    for m, (_, _, count) in extents.items():
        for band in np.flatnonzero(count == 0):
            raise ValueError(f"modality {m!r} band {band + 1} has no valid pixel in the {len(tiles)} training "
                             "tiles; its statistics (stats) cannot be computed")  # fmt: skip
    hists = {m: np.zeros((len(lo), _HIST_BINS), dtype=np.int64) for m, (lo, _, _) in extents.items()}
    spans = {m: np.where(hi > lo, hi - lo, 1.0) for m, (lo, hi, _) in extents.items()}
    each_tile(lambda _, m, read, windows: _add_histogram(hists[m], read, windows, extents[m][0], spans[m]))
    return {m: _bounds(m, extents[m][0], extents[m][1], hists[m], spans[m], percentiles[m]) for m in mods}


def _bounds(
    modality: str, lo: np.ndarray, hi: np.ndarray, hist: np.ndarray, span: np.ndarray,
    percentiles: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The percentiles of one modality's pooled histogram, widened where they coincide (a band that is
    nearly constant: its min and max; one that is constant: one unit, with a warning)."""
    p_lo, p_hi = _quantiles(hist, lo, hi, span, percentiles)
    for band in np.flatnonzero(p_hi <= p_lo):
        p_lo[band], p_hi[band] = lo[band], hi[band]
        if hi[band] <= lo[band]:
            p_hi[band] = lo[band] + 1.0
            warnings.warn(f"modality {modality!r} band {band + 1} holds the one value {lo[band]:g} in every training "
                          "tile; its model input is 0 everywhere", UserWarning, stacklevel=3)  # fmt: skip
    return p_lo, p_hi
