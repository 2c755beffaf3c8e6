"""What a data source yields: a tile, i.e. one raster per modality plus its labels, and how to read them.

`LabelEncoding` (how labels are stored) lives in the leaf `mfpeft.common.label_encoding` and `Scaling` in
`mfpeft.common.scaling`, shared with the models; both are importable from here as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfpeft.common.label_encoding import LabelEncoding
from mfpeft.common.scaling import Scaling, default_scaling
from mfpeft.data.geometry import ChipWindow

__all__ = [
    "LabelEncoding",
    "RasterRef",
    "Tile",
    "describe_ref",
    "raster_files",
    "reader_scalings",
    "requested_scaling",
]

RasterRef = Path | tuple[Path, ...] | np.ndarray | Callable[[], np.ndarray]
"""Where a raster's values come from: a file, several single-band files stacked in order (band files, e.g.
``(b4.tif, b5.tif, b6.tif)``; the first one's grid is the stack's grid), an in-memory (C, H, W) or (H, W)
array, or a callable returning one (lazy, e.g. a row of a Hugging Face dataset)."""


def raster_files(ref: RasterRef | str | None) -> tuple[Path, ...]:
    """The files behind a raster reference, in band order: one for a file, several for band files, none for
    an in-memory array or a callable."""
    if isinstance(ref, (str, Path)):
        return (Path(ref),)
    if isinstance(ref, tuple):
        return tuple(Path(p) for p in ref)
    return ()


def describe_ref(ref: RasterRef | str | None) -> str:
    """A short name for a raster reference, used in error messages: the path, or the band files joined by
    commas (as ``--optical a_b4.tif,a_b5.tif`` takes them)."""
    if isinstance(ref, (str, Path, tuple)):
        return ",".join(str(p) for p in raster_files(ref))
    if isinstance(ref, np.ndarray):
        return f"<in-memory array {tuple(ref.shape)}>"
    return f"<{getattr(ref, 'description', type(ref).__name__)}>"


@dataclass
class Tile:
    """One scene: a raster per modality (the first one defines the grid), labels, and eroded labels.

    ``bands`` selects bands per modality (1-based, e.g. ``{"optical": (1, 2, 3)}`` for Potsdam's RGBIR);
    ``scaling`` is the source's recommended scaling per modality (a data set's own convention), which a
    dataset's explicit scaling overrides.

    ``window`` restricts the tile to a sub-rectangle ``(row, col, height, width)`` of the first modality's
    raster grid (its first band file's pixels): a block of a scene split by ``--split-blocks``. Readers then
    see only that rectangle (intersected with the overlap of all rasters), while whole-tile scaling
    statistics stay those of the whole scene, so a block is scaled exactly as the scene is at prediction.

    ``source_encoding``: where ``labels`` are class indices already made from other label rasters (a data set
    written by ``mfpeft prepare``), how those rasters were encoded; a model trained on the tile records it
    (see :attr:`recorded_encoding`), so that it can read raw label rasters again without the code map.

    ``prepared_scaling``: modalities whose stored values are already model inputs (a data set written by
    ``mfpeft prepare``), with the raw -> input scaling they were made with. Readers use them as they are and
    report that scaling, which a model trained on the tile records (:func:`reader_scalings`).
    """

    name: str
    modalities: dict[str, RasterRef]
    labels: RasterRef | None = None
    eroded_labels: RasterRef | None = None
    label_encoding: LabelEncoding = field(default_factory=LabelEncoding)
    bands: dict[str, tuple[int, ...]] = field(default_factory=dict)
    scaling: dict[str, Scaling] = field(default_factory=dict)
    window: ChipWindow | None = None
    source_encoding: LabelEncoding | None = None
    prepared_scaling: dict[str, Scaling] = field(default_factory=dict)

    @property
    def recorded_encoding(self) -> LabelEncoding:
        """The label encoding a model trained on this tile records: the original rasters' one."""
        return self.source_encoding if self.source_encoding is not None else self.label_encoding

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError(f"tile {self.name!r} has no modalities")
        for m, ref in self.modalities.items():
            if isinstance(ref, tuple) and (not ref or not all(isinstance(p, (str, Path)) for p in ref)):
                raise ValueError(f"tile {self.name!r}: modality {m!r} needs one or more band files, got {ref!r}")
        if self.window is not None:
            values = tuple(self.window)
            integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
            if len(values) != 4 or not integers:
                raise ValueError(
                    f"tile {self.name!r}: window must be 4 integers (row, col, height, width), got {values}"
                )
            if values[0] < 0 or values[1] < 0 or values[2] <= 0 or values[3] <= 0:
                raise ValueError(f"tile {self.name!r}: window {values} needs row, col >= 0 and height, width > 0")
            self.window = ChipWindow(*(int(v) for v in values))
        unknown = sorted(set(self.bands) - set(self.modalities))
        if unknown:
            raise ValueError(f"tile {self.name!r}: bands given for unknown modalities {unknown}")


# -- which scaling a reader of a tile uses ---------------------------------------------------------------------
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
        ValueError: an unresolved ``stats`` (see :func:`mfpeft.data.scaling.resolve_input_scaling`), or a
            second scaling of a prepared tile, naming the tile and modality.
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
        applied[m] = Scaling("none") if m in tile.prepared_scaling else s
    return recorded, applied
