"""What a data source yields: a tile, i.e. one raster per modality plus its labels, and how to read them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE, default_palette, hex_colour
from mfpeft.data.scaling import Scaling

__all__ = ["LabelEncoding", "RasterRef", "Tile", "describe_ref", "raster_files"]

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

LABEL_KINDS = ("palette", "codes", "index")


@dataclass(frozen=True)
class LabelEncoding:
    """How a label raster stores classes.

    ``palette``: RGB colours, one per class (``palette``), black = ignore. ``codes``: integer codes mapped to
    class indices by ``code_map`` (a code mapped to 255 is ignored); ``other`` is the class of every code not in
    ``code_map`` (the ``*`` of ``--code-map``, e.g. 255 = ignore them; None: such a code is an error naming it).
    ``index``: values are class indices (255 = ignore). ``nodata`` (a value) and the raster's own nodata are
    always ignore, and never read as a code. ``classes`` names the classes (index = position).

    ``palette`` is each class's colour: for the palette kind the colour in the label rasters, otherwise the
    display colour. Empty (the default) means the ISPRS palette for the ISPRS classes, else
    :func:`~mfpeft.data.palette.default_palette`; so is an all-black palette of code or index labels (the
    placeholder earlier versions recorded). Every field is checked: a bad one is a ValueError naming it.
    """

    kind: str = "palette"
    classes: tuple[str, ...] = ISPRS_CLASSES
    palette: tuple[tuple[int, int, int], ...] = ()
    code_map: Mapping[int, int] | None = None
    nodata: int | None = None
    other: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"LabelEncoding.kind must be one of {LABEL_KINDS}, got {self.kind!r}")
        classes = tuple(self.classes) if isinstance(self.classes, (list, tuple)) else ()
        if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"LabelEncoding.classes={self.classes!r} must be distinct, non-empty names")
        if len(classes) >= IGNORE_INDEX:
            raise ValueError(f"LabelEncoding.classes: {len(classes)} classes; at most {IGNORE_INDEX - 1} fit")
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "palette", self._checked_palette())
        if self.kind == "codes" and not self.code_map:
            raise ValueError("LabelEncoding.code_map is required for kind 'codes'")
        if self.code_map is not None:
            table = dict(self.code_map) if isinstance(self.code_map, Mapping) else {None: self.code_map}
            for code, index in table.items():
                if not _is_int(code) or not _is_int(index) or not 0 <= index <= IGNORE_INDEX:
                    raise ValueError(
                        f"LabelEncoding.code_map: {code!r}: {index!r} must map an integer code to a class index "
                        f"0-{len(classes) - 1} or {IGNORE_INDEX} (ignore)"
                    )
            object.__setattr__(self, "code_map", {int(k): int(v) for k, v in table.items()})
        if self.other is not None and (not _is_int(self.other) or not 0 <= self.other <= IGNORE_INDEX):
            raise ValueError(f"LabelEncoding.other={self.other!r} must be a class index or {IGNORE_INDEX} (ignore)")
        if self.nodata is not None and (isinstance(self.nodata, bool) or not isinstance(self.nodata, (int, float))):
            raise ValueError(f"LabelEncoding.nodata={self.nodata!r} must be a number or None")

    def _checked_palette(self) -> tuple[tuple[int, int, int], ...]:
        """The palette as tuples (the default filled in), or ValueError naming the bad colour."""
        colours = self.palette
        if not colours or (self.kind != "palette" and all(tuple(c) == (0, 0, 0) for c in colours)):
            return ISPRS_PALETTE if self.classes == ISPRS_CLASSES else default_palette(len(self.classes))
        for colour in colours:
            if not isinstance(colour, (list, tuple)) or len(colour) != 3 or not all(
                _is_int(v) and 0 <= v <= 255 for v in colour
            ):
                raise ValueError(f"LabelEncoding.palette: {colour!r} is not an RGB colour (3 integers 0-255)")
        if len(colours) != len(self.classes):
            raise ValueError(f"LabelEncoding.palette has {len(colours)} colours for {len(self.classes)} classes")
        return tuple((int(c[0]), int(c[1]), int(c[2])) for c in colours)

    def class_of(self, code: int) -> int | None:
        """The class index a code maps to (255: ignore), None when it is not mapped (an error when read)."""
        return (self.code_map or {}).get(int(code), self.other)

    def describe(self) -> str:
        """One line for messages: the kind, the code map (``*`` = every other code) and the classes."""
        if self.kind == "codes":
            pairs = [f"{k}={v}" for k, v in sorted((self.code_map or {}).items())]
            pairs += [] if self.other is None else [f"*={self.other}"]
            return f"integer codes {','.join(pairs)} -> classes {list(self.classes)}"
        if self.kind == "palette":
            return "RGB colours " + ",".join(f"{n}={hex_colour(c)}" for n, c in zip(self.classes, self.palette))
        return f"class indices -> classes {list(self.classes)}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the ``*`` key of ``code_map`` holds ``other``."""
        code_map: dict[str, int] | None = None
        if self.code_map is not None:
            code_map = {str(k): v for k, v in self.code_map.items()}
            if self.other is not None:
                code_map["*"] = self.other
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "code_map": code_map,
            "nodata": self.nodata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], field: str = "label_encoding") -> LabelEncoding:
        """The inverse of :meth:`to_dict`; a bad value is a ValueError naming ``field`` and the value."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{field}={data!r} must be a JSON object")
        code_map = data.get("code_map")
        if code_map is not None and not isinstance(code_map, Mapping):
            raise ValueError(f"{field}.code_map={code_map!r} must be an object of code: class index")
        table = dict(code_map or {})
        other = table.pop("*", None)
        bad = [k for k in table if not str(k).lstrip("-").isdigit()]
        if bad:
            raise ValueError(f"{field}.code_map: key {bad[0]!r} is not an integer code (or '*')")
        codes = {int(k): v for k, v in table.items()}
        try:
            return cls(
                kind=data.get("kind", "palette"),
                classes=tuple(data.get("classes", ISPRS_CLASSES)),
                palette=tuple(data.get("palette") or ()),
                code_map=None if code_map is None else codes,
                nodata=data.get("nodata"),
                other=other,
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{field}: {error}") from None


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


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
    report that scaling, which a model trained on the tile records (:func:`mfpeft.data.scaling.reader_scalings`).
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
                raise ValueError(f"tile {self.name!r}: window must be 4 integers (row, col, height, width), "
                                 f"got {values}")
            if values[0] < 0 or values[1] < 0 or values[2] <= 0 or values[3] <= 0:
                raise ValueError(f"tile {self.name!r}: window {values} needs row, col >= 0 and height, width > 0")
            self.window = ChipWindow(*(int(v) for v in values))
        unknown = sorted(set(self.bands) - set(self.modalities))
        if unknown:
            raise ValueError(f"tile {self.name!r}: bands given for unknown modalities {unknown}")
