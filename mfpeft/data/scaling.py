"""Which input scaling a run, a data set and a model use: written once, recorded once, applied everywhere.

The specification itself, :class:`Scaling` (one modality's raw -> input map, with its text and JSON forms), lives
in the leaf `mfpeft.common.scaling`, so that the models can check a recorded one; it is importable from here as
before. This module decides which scaling applies: a tile's (:func:`~mfpeft.data.tile.reader_scalings`), a run's
on its training tiles (:func:`resolve_input_scaling`), recorded in a model's ``config.json`` (``input_scaling``)
and a prepared data set's metadata, and a model's (:func:`model_input_scaling`), so that evaluation and
prediction read rasters exactly as training did.

``stats`` is computed once over the training tiles (:func:`resolve_input_scaling`) and becomes a ``range`` with
concrete per-band bounds: a chip's input then depends on its pixels only, not on the raster it was cut from.
``minmax_tile`` and ``percentile`` follow each tile; their statistics come from :func:`compute_tile_statistics`,
which reads a tile block by block, so a 20,000 x 20,000 raster is never held in memory at once
(`mfpeft.data.statistics`).

Layering inside `mfpeft.data`: `statistics` (blocks, no I/O) and `tile` (which scaling a reader uses) sit below
`raster` (the reader), and this module above it: resolving ``stats`` reads the training tiles.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfpeft.common.scaling import (
    SCALING_MODES,
    SCALING_SYNTAX,
    Scaling,
    TileStatistics,
    default_scaling,
    parse_scalings,
)
from mfpeft.data.raster import TileReader
from mfpeft.data.statistics import BlockVisitor, compute_tile_statistics, pooled_percentiles
from mfpeft.data.tile import Tile, reader_scalings, requested_scaling

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
        raise ValueError(
            f"--scaling names modality {unknown[0]!r}, which the tiles do not have (they have {sorted(have)})"
        )
    out: dict[str, Scaling] = {}
    for m in modalities:
        out[m] = given.get(m) or default_scaling(m)  # no tiles: what a tile without a recommendation gets
        for index, tile in enumerate(tiles):
            s = requested_scaling(tile, m, given.get(m))
            if index == 0:
                out[m] = s
            elif s != out[m]:
                raise ValueError(
                    f"modality {m!r}: tile {tiles[0].name!r} is read with {out[m].describe()} but tile "
                    f"{tile.name!r} with {s.describe()}; give one with --scaling {m}=MODE"
                )
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
        raise ValueError(
            f"--scaling {m}={scaling[m].describe()}: computed over the training tiles, and there are "
            f"none here; give its range instead (--scaling {m}=range:LO,HI)"
        )
    bounds = _pooled_percentiles(tiles, {m: scaling[m].percentiles for m in pending})
    for m, (low, high) in bounds.items():
        origin = f"{scaling[m].describe()} over {len(tiles)} training tile{'s' if len(tiles) != 1 else ''}"
        out[m] = Scaling("range", low=tuple(low.tolist()), high=tuple(high.tolist()), resolved_from=origin)
    return out


def model_input_scaling(
    config: Any, given: Mapping[str, Any] | None = None, train_tiles: Sequence[Tile] | None = None
) -> dict[str, Scaling]:
    """The raw -> input scaling a model expects, per modality of ``config`` (an ``MFNetConfig``), the one
    answer for ``evaluate``, ``predict`` and ``heatmap``.

    The scaling it recorded (``config.input_scaling``), unless ``given`` (``--scaling``) names another: that is
    used, with a warning when it differs. A modality it recorded none for (a model saved before mfpeft recorded
    input_scaling) falls back to :func:`default_scaling`, the paper's, with a one-line warning.

    ``train_tiles``: the data source's training tiles where there are (``evaluate``): a ``stats`` in ``given``
    is then computed over them first, as training does (:func:`resolve_stats`). None (a scene alone:
    ``predict``, ``heatmap``): there are no training tiles, and a ``stats`` is an error.

    Raises:
        ValueError: a ``given`` modality the model lacks, or a ``stats`` without training tiles (naming the
            ``--scaling`` and what to give instead).
    """
    asked = parse_scalings(given)
    names = list(config.modality_names)
    unknown = sorted(set(asked) - set(names))
    if unknown:
        raise ValueError(f"--scaling names modality {unknown[0]!r}, which the model does not have (it has {names})")
    if train_tiles is not None:
        asked = resolve_stats(train_tiles, asked)
    recorded = getattr(config, "input_scaling", None) or {}
    out: dict[str, Scaling] = {}
    for name in names:
        have = Scaling.from_dict(recorded[name]) if name in recorded else None
        want = asked.get(name)
        if want is not None and want.mode == "stats":
            raise ValueError(
                f"--scaling {name}={want.describe()}: computed over the training tiles, and a scene "
                f"has none; give the range (--scaling {name}=range:LO,HI) or leave the model's "
                f"({have.describe() if have else 'none recorded'})"
            )
        if want is not None:
            if have is not None and want != have:
                message = (
                    f"modality {name!r}: reading it with {want.describe()} as --scaling asks, not with "
                    f"{have.describe()}, the scaling the model was trained with"
                )
                warnings.warn(message, UserWarning, stacklevel=2)
            out[name] = want
        elif have is not None:
            out[name] = have
        else:
            out[name] = default_scaling(name)
            message = (
                f"the model records no input scaling for modality {name!r}; reading it with "
                f"{out[name].describe()} (the paper's; models saved before mfpeft recorded it were trained "
                f"so); give --scaling {name}=MODE if it was not"
            )
            warnings.warn(message, UserWarning, stacklevel=2)
    return out


def _pooled_percentiles(
    tiles: Sequence[Tile], percentiles: Mapping[str, tuple[float, float]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality (C,) percentiles over the valid pixels of all ``tiles`` pooled, their raw values read
    block by block (:func:`~mfpeft.data.statistics.pooled_percentiles`, two passes over each tile)."""
    mods = list(percentiles)
    unscaled = {m: Scaling("none") for m in mods}

    def each_tile(visit: BlockVisitor) -> None:
        for tile in tiles:
            with TileReader(tile, mods, scaling=unscaled, labels="none") as reader:
                for m in mods:
                    visit(tile.name, m, functools.partial(reader.read_raw, m), reader.height, reader.width)

    return pooled_percentiles(each_tile, len(tiles), percentiles)
