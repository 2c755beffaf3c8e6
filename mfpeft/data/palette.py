"""Class names and colour palettes, and the conversions between RGB label images and class indices.

The ISPRS 2D labelling benchmark (Vaihingen, Potsdam) stores labels as RGB images; black marks the
boundary pixels that the eroded "noBoundary" labels leave out of the evaluation, and becomes the ignore index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "BOUNDARY_COLOR",
    "IGNORE_INDEX",
    "ISPRS_CLASSES",
    "ISPRS_PALETTE",
    "MMHUNAN_CLASSES",
    "MMHUNAN_LC_TO_CLASS",
    "MMHUNAN_PALETTE",
    "Palette",
    "labels_to_rgb",
    "map_codes",
    "rgb_to_labels",
]

IGNORE_INDEX = 255
"""Label value ignored by the loss and the metrics."""

Palette = Sequence[tuple[int, int, int]]
"""RGB colour of each class, indexed by class index."""

ISPRS_CLASSES: tuple[str, ...] = (
    "impervious_surfaces",
    "building",
    "low_vegetation",
    "tree",
    "car",
    "clutter",
)
ISPRS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)
BOUNDARY_COLOR = (0, 0, 0)

MMHUNAN_CLASSES: tuple[str, ...] = (
    "cropland",
    "forest",
    "grassland",
    "wetland",
    "water",
    "unused_land",
    "built_up",
)
# Raw land-cover code -> class index, as the reference code maps it (MFNET_SPEC section 5). Note that code 11
# maps to 7, one past the seven named classes; datasets treat indices >= num_classes as ignore (docs/data.md).
MMHUNAN_LC_TO_CLASS: tuple[int, ...] = (255, 0, 1, 2, 1, 3, 4, 6, 6, 5, 6, 7, 255)
MMHUNAN_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 100),
    (0, 128, 0),
    (150, 230, 100),
    (0, 200, 200),
    (0, 0, 255),
    (180, 180, 180),
    (255, 0, 0),
)


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
) -> np.ndarray:
    """Map an RGB label image to class indices.

    Args:
        rgb: ``(H, W, 3)`` uint8 label image.
        palette: colour of each class (class index = position).
        source: the file (or other origin) the image came from, named in errors.
        ignore_colors: colours mapped to :data:`IGNORE_INDEX` (black boundary by default).

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
    """``(H, W)`` class indices -> ``(H, W, 3)`` uint8 RGB; ignore and indices past the palette are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[np.asarray(labels).astype(np.uint8)]


def map_codes(codes: np.ndarray, mapping: Mapping[int, int] | Sequence[int], *, source: str) -> np.ndarray:
    """Map integer label codes to class indices through a lookup (a dict, or a sequence indexed by code).

    Codes absent from the mapping raise a ValueError naming ``source`` with the offending codes and pixel
    counts; map a code to :data:`IGNORE_INDEX` to drop it on purpose.

    Returns:
        ``(H, W)`` uint8 class indices.
    """
    table = dict(mapping) if isinstance(mapping, Mapping) else dict(enumerate(mapping))
    codes = np.asarray(codes)
    if codes.dtype.kind == "f":
        codes = np.where(np.isfinite(codes), codes, -1).astype(np.int64)
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in table]
    if unknown:
        counts = {int(v): int(c) for v, c in zip(*np.unique(codes, return_counts=True)) if int(v) in unknown}
        raise ValueError(
            f"{source}: label codes not in the code -> class map {table}: "
            + ", ".join(f"{v}: {counts[v]} px" for v in unknown[:20])
        )
    lut = np.array([table[int(v)] for v in values], dtype=np.uint8)
    return lut[inverse.reshape(codes.shape)]
