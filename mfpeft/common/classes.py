"""Class names, palettes, the ignore index and the class-id -> colour lookup: what data and models agree on.

A leaf module (numpy only): the data layer reads and writes labels with these, the models record and print them.
The ISPRS 2D labelling benchmark (Vaihingen, Potsdam) stores labels as RGB images; black marks the boundary pixels
that the eroded "noBoundary" labels leave out of the evaluation, and becomes the ignore index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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

DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (228, 26, 28),
    (55, 126, 184),
    (77, 175, 74),
    (152, 78, 163),
    (255, 127, 0),
    (240, 210, 40),
    (166, 86, 40),
    (247, 129, 191),
    (0, 190, 190),
    (153, 153, 153),
    (140, 210, 80),
    (120, 170, 230),
    (200, 40, 120),
    (0, 120, 90),
    (250, 190, 120),
    (100, 70, 170),
    (190, 190, 40),
    (255, 160, 160),
    (40, 100, 150),
    (210, 170, 230),
)
"""The first colours of :func:`default_palette`: distinct, legible on white and on each other, none dark."""

_GOLDEN = 0.618033988749895


def default_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """The colour of each of ``count`` classes that have no palette of their own (codes, class indices).

    :data:`DEFAULT_COLOURS`, then a golden-ratio walk round the hue circle at two brightness levels, both
    far from black, so that black (the ignore colour of palette labels and of previews) is never a class.
    The one default of mfpeft: colour tables, previews, legends and model cards all use it.
    """
    import colorsys

    colours = list(DEFAULT_COLOURS[:count])
    step = 0
    while len(colours) < count:
        value = 0.95 if step % 2 == 0 else 0.75
        rgb = tuple(round(255 * v) for v in colorsys.hsv_to_rgb((step * _GOLDEN) % 1.0, 0.65, value))
        step += 1
        if rgb not in colours:  # 8-bit rounding may repeat a colour far along the walk
            colours.append(rgb)  # type: ignore[arg-type]
    return tuple(colours)


def palette_or_default(palette: Sequence[Sequence[int]] | None, count: int) -> tuple[tuple[int, int, int], ...]:
    """``palette`` as tuples, or :func:`default_palette` when there is none or it is all black.

    All black is the placeholder earlier versions recorded for code and index labels, not a choice of colours.

    Raises:
        ValueError: ``palette`` has another number of colours than ``count``.
    """
    if palette is None or len(palette) == 0 or all(tuple(c) == (0, 0, 0) for c in palette):
        return default_palette(count)
    if len(palette) != count:
        raise ValueError(f"palette has {len(palette)} colours for {count} classes")
    return tuple((int(c[0]), int(c[1]), int(c[2])) for c in palette)


def hex_colour(rgb: Sequence[int]) -> str:
    """``(34, 139, 34)`` -> ``"#228b22"``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def colourise(class_ids: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``(h, w)`` class ids -> ``(h, w, 4)`` RGBA uint8: each class its palette colour, opaque; ignore (255) and
    ids past the palette transparent black. The one class-id -> colour lookup (previews, chip previews)."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    if len(palette):
        lut[: len(palette), :3] = np.asarray(palette, dtype=np.uint8)[:, :3]
        lut[: len(palette), 3] = 255
    return lut[np.asarray(class_ids).astype(np.uint8)]
