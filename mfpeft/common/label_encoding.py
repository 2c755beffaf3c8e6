"""How a label raster stores classes (`LabelEncoding`): a pure, self-validating record shared by data and models.

The data layer reads label rasters with it; a model records it (``MFNetConfig.label_encoding``) so that evaluation
and prediction read raw labels as training did. A leaf module: numpy and `mfpeft.common.classes` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfpeft.common.classes import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE, default_palette, hex_colour

__all__ = ["LABEL_KINDS", "LabelEncoding"]

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
    :func:`~mfpeft.common.classes.default_palette`; so is an all-black palette of code or index labels (the
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
            if (
                not isinstance(colour, (list, tuple))
                or len(colour) != 3
                or not all(_is_int(v) and 0 <= v <= 255 for v in colour)
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
