"""Reading and writing class labels: palettes from the command line, RGB label images <-> class indices, codes.

The class names, palettes, ignore index and colouriser live in `mfpeft.common.classes` (shared with the models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mfpeft.common.classes import (
    BOUNDARY_COLOR,
    DEFAULT_COLOURS,
    IGNORE_INDEX,
    ISPRS_CLASSES,
    ISPRS_PALETTE,
    MMHUNAN_CLASSES,
    MMHUNAN_LC_TO_CLASS,
    MMHUNAN_PALETTE,
    Palette,
    colourise,
    default_palette,
    hex_colour,
    palette_or_default,
)

__all__ = [
    "BOUNDARY_COLOR",
    "DEFAULT_COLOURS",
    "IGNORE_INDEX",
    "ISPRS_CLASSES",
    "ISPRS_PALETTE",
    "MMHUNAN_CLASSES",
    "MMHUNAN_LC_TO_CLASS",
    "MMHUNAN_PALETTE",
    "Palette",
    "colourise",
    "default_palette",
    "hex_colour",
    "labels_to_rgb",
    "map_codes",
    "palette_or_default",
    "parse_palette",
    "rgb_to_labels",
]


def _parse_hex(text: str) -> tuple[int, int, int] | None:
    digits = text[1:] if text.startswith("#") else ""
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    if len(digits) != 6 or any(d not in "0123456789abcdefABCDEF" for d in digits):
        return None
    return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))


def parse_palette(text: str, option: str = "--palette") -> list[tuple[int, int, int]] | dict[str, tuple[int, int, int]]:
    """``"#228b22,#1f77b4"`` (one colour per class, in order) or ``"forest=#228b22,water=#1f77b4"`` (by name).

    Raises:
        ValueError: one line naming ``option`` and the value: a colour that is not ``#rrggbb`` (or ``#rgb``),
            a missing colour, a repeated class name, or the two forms mixed.
    """
    items = [item.strip() for item in str(text).split(",")]
    wanted = f"{option} {text!r}: expected '#rrggbb,...' (one colour per class) or 'NAME=#rrggbb,...'"
    if not text or not all(items):
        raise ValueError(f"{wanted}; an entry is empty")
    named = ["=" in item for item in items]
    if any(named) and not all(named):
        raise ValueError(f"{wanted}; do not mix the two forms")
    by_name: dict[str, tuple[int, int, int]] = {}
    in_order: list[tuple[int, int, int]] = []
    for item in items:
        name, _, colour_text = item.rpartition("=")
        colour = _parse_hex(colour_text.strip())
        if colour is None:
            raise ValueError(f"{wanted}; {colour_text.strip()!r} is not a colour")
        if not any(named):
            in_order.append(colour)
            continue
        name = name.strip()
        if not name or name in by_name:
            raise ValueError(f"{wanted}; class name {name!r} is {'empty' if not name else 'repeated'}")
        by_name[name] = colour
    return by_name if any(named) else in_order


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) int32 key ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_labels(
    rgb: np.ndarray,
    palette: Palette,
    *,
    source: str,
    ignore_colors: Sequence[tuple[int, int, int]] = (BOUNDARY_COLOR,),
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Map an RGB label image to class indices.

    Args:
        rgb: ``(H, W, 3)`` uint8 label image.
        palette: colour of each class (class index = position).
        source: the file (or other origin) the image came from, named in errors.
        ignore_colors: colours mapped to :data:`IGNORE_INDEX` (black boundary by default).
        valid: ``(H, W)`` bool, False where the image holds no label (nodata, transparent, outside the
            raster): those pixels are ignore whatever their colour, and never an unknown colour.

    Returns:
        ``(H, W)`` uint8 class indices, :data:`IGNORE_INDEX` where the colour is an ignore colour.

    Raises:
        ValueError: naming ``source`` and listing every colour not in the palette with its pixel count.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{source}: an RGB label image needs shape (H, W, 3), got {tuple(rgb.shape)}")
    if len(palette) >= IGNORE_INDEX:
        raise ValueError(f"palette has {len(palette)} colours; at most {IGNORE_INDEX - 1} fit in uint8 labels")
    keys = _pack(rgb)
    labels = np.full(keys.shape, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(keys.shape, dtype=bool)
    for index, colour in enumerate(palette):
        hit = keys == _pack(np.asarray(colour, dtype=np.int32))
        labels[hit] = index
        known |= hit
    for colour in ignore_colors:
        known |= keys == _pack(np.asarray(colour, dtype=np.int32))
    if valid is not None:
        labels[~valid] = IGNORE_INDEX
        known |= ~valid
    if not known.all():
        values, counts = np.unique(keys[~known], return_counts=True)
        order = np.argsort(-counts)
        listed = ", ".join(
            f"({v >> 16}, {(v >> 8) & 255}, {v & 255}): {c} px"
            for v, c in zip(values[order][:20].tolist(), counts[order][:20].tolist())
        )
        more = f" and {len(values) - 20} more" if len(values) > 20 else ""
        raise ValueError(
            f"{source}: {int(counts.sum())} label pixels have colours not in the palette "
            f"{[tuple(c) for c in palette]}: {listed}{more}"
        )
    return labels


def labels_to_rgb(labels: np.ndarray, palette: Palette) -> np.ndarray:
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 RGB, as palette label rasters store them: ignore and
    indices past the palette black (the ISPRS boundary colour). :func:`colourise` without the alpha."""
    return colourise(labels, palette)[..., :3]


def map_codes(
    codes: np.ndarray, mapping: Mapping[int, int] | Sequence[int], *, source: str, other: int | None = None
) -> np.ndarray:
    """Map integer label codes to class indices through a lookup (a dict, or a sequence indexed by code).

    Codes absent from the mapping get ``other`` (the ``*`` of a code map, e.g. :data:`IGNORE_INDEX`); without
    it they raise a ValueError naming ``source`` with the offending codes and pixel counts. Map a code to
    :data:`IGNORE_INDEX` to drop it on purpose. Pass only pixels that hold a label: nodata is the caller's to
    mask (it is no code). Floating-point codes must be whole numbers.

    Returns:
        uint8 class indices, shaped as ``codes``.
    """
    table = dict(mapping) if isinstance(mapping, Mapping) else dict(enumerate(mapping))
    codes = np.asarray(codes)
    if codes.dtype.kind == "f":
        bad = ~np.isfinite(codes) | (codes % 1 != 0)
        if bad.any():
            values = np.unique(codes[bad])
            raise ValueError(f"{source}: label codes must be whole numbers, found {values[:10].tolist()}")
        codes = codes.astype(np.int64)
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown and other is None:
        counts = {int(v): int(c) for v, c in zip(*np.unique(codes, return_counts=True)) if int(v) in unknown}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(table.items()))
        raise ValueError(
            f"{source}: label codes not in the code -> class map {{{shown}}}: "
            + ", ".join(f"{v}: {counts[v]} px" for v in unknown[:20])
            + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
            + " (map them, or add *=255 to ignore every other code)"
        )
    lut = np.array([table.get(int(v), other) for v in values], dtype=np.uint8)
    return lut[inverse.reshape(codes.shape)]
