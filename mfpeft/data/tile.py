"""What a data source yields: a tile, i.e. one raster per modality plus its labels, and how to read them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.data.palette import ISPRS_CLASSES, ISPRS_PALETTE
from mfpeft.data.scaling import Scaling

__all__ = ["LabelEncoding", "RasterRef", "Tile"]

RasterRef = Path | np.ndarray | Callable[[], np.ndarray]
"""Where a raster's values come from: a file, an in-memory (C, H, W) or (H, W) array, or a callable returning
one (lazy, e.g. a row of a Hugging Face dataset)."""

LABEL_KINDS = ("palette", "codes", "index")


@dataclass(frozen=True)
class LabelEncoding:
    """How a label raster stores classes.

    ``palette``: RGB colours, one per class (``palette``), black = ignore. ``codes``: integer codes mapped to
    class indices by ``code_map`` (a code mapped to 255 is ignored). ``index``: values are class indices.
    ``nodata`` (a value) is always ignore. ``classes`` names the classes (index = position).
    """

    kind: str = "palette"
    classes: tuple[str, ...] = ISPRS_CLASSES
    palette: tuple[tuple[int, int, int], ...] = ISPRS_PALETTE
    code_map: Mapping[int, int] | None = None
    nodata: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"LabelEncoding.kind must be one of {LABEL_KINDS}, got {self.kind!r}")
        if self.kind == "codes" and not self.code_map:
            raise ValueError("LabelEncoding.code_map is required for kind 'codes'")
        if self.kind == "palette" and len(self.palette) != len(self.classes):
            raise ValueError(f"LabelEncoding.palette has {len(self.palette)} colours for {len(self.classes)} classes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "code_map": None if self.code_map is None else {str(k): v for k, v in self.code_map.items()},
            "nodata": self.nodata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelEncoding:
        code_map = data.get("code_map")
        return cls(
            kind=data.get("kind", "palette"),
            classes=tuple(data.get("classes", ISPRS_CLASSES)),
            palette=tuple(tuple(c) for c in data.get("palette", ISPRS_PALETTE)),  # type: ignore[misc]
            code_map=None if code_map is None else {int(k): int(v) for k, v in code_map.items()},
            nodata=data.get("nodata"),
        )


@dataclass
class Tile:
    """One scene: a raster per modality (the first one defines the grid), labels, and eroded labels.

    ``bands`` selects bands per modality (1-based, e.g. ``{"optical": (1, 2, 3)}`` for Potsdam's RGBIR);
    ``scaling`` is the source's recommended scaling per modality (a data set's own convention), which a
    dataset's explicit scaling overrides.
    """

    name: str
    modalities: dict[str, RasterRef]
    labels: RasterRef | None = None
    eroded_labels: RasterRef | None = None
    label_encoding: LabelEncoding = field(default_factory=LabelEncoding)
    bands: dict[str, tuple[int, ...]] = field(default_factory=dict)
    scaling: dict[str, Scaling] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError(f"tile {self.name!r} has no modalities")
        unknown = sorted(set(self.bands) - set(self.modalities))
        if unknown:
            raise ValueError(f"tile {self.name!r}: bands given for unknown modalities {unknown}")
