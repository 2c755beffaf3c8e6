"""Chip window geometry, free of any raster I/O.

A *tile* is a whole raster file (a scene), a *chip* a model-sized window of it. Every function here works on
integer pixel coordinates of the scene only, so that training (random chips), evaluation (sliding grid) and
stitching share one definition of where a chip lies.

Conventions: rows are the first axis, columns the second; a window is half-open,
``scene[row:row + height, col:col + width]``. Windows never leave the scene: where the scene is smaller than a
chip along an axis, the window covers the whole axis and the reader pads it to the chip size with ignore.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "ChipWindow",
    "axis_starts",
    "block_windows",
    "column_sections",
    "intersect_windows",
    "random_chip_window",
    "section_windows",
    "sliding_chip_windows",
]


class ChipWindow(NamedTuple):
    """A rectangular window of a scene, in pixels: ``scene[row:row + height, col:col + width]``."""

    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices selecting this window from a ``(..., H, W)`` array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def axis_starts(length: int, chip_size: int, stride: int) -> list[int]:
    """Start offsets of a sliding window along one axis of ``length`` pixels.

    Windows start at 0, stride, 2*stride, ...; where the last one would leave a strip uncovered at the end,
    one more window is snapped inside the border (start ``length - chip_size``), as the paper's test
    protocol does.
    An axis shorter than or equal to a chip gets a single start, 0.
    """
    _check_positive("length", length)
    _check_positive("chip_size", chip_size)
    _check_positive("stride", stride)
    if stride > chip_size:
        raise ValueError(
            f"stride must not exceed chip_size (pixels would be skipped), got stride={stride} and chip_size={chip_size}"
        )
    if length <= chip_size:
        return [0]
    last = length - chip_size
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def sliding_chip_windows(scene_height: int, scene_width: int, chip_size: int, stride: int) -> list[ChipWindow]:
    """All windows of a sliding grid over a scene, row-major.

    Every scene pixel is covered by at least one window and every window lies inside the scene. A window
    is ``chip_size`` square unless the scene is smaller than a chip along an axis, in which case it spans
    the whole axis (the reader pads it to ``chip_size``).
    """
    rows = axis_starts(scene_height, chip_size, stride)
    cols = axis_starts(scene_width, chip_size, stride)
    height = min(chip_size, scene_height)
    width = min(chip_size, scene_width)
    return [ChipWindow(int(r), int(c), height, width) for r in rows for c in cols]


def column_sections(width: int, section_width: int | None) -> list[tuple[int, int]]:
    """Column ranges ``[start, stop)`` that split ``width`` columns at the multiples of ``section_width``.

    Prediction stitches a wide scene one section at a time, top to bottom, so that its buffers span a section
    and not the scene's width. ``None`` or 0: one section, the whole width.
    """
    _check_positive("width", width)
    if not section_width:
        return [(0, width)]
    _check_positive("section_width", section_width)
    return [(start, min(start + section_width, width)) for start in range(0, width, section_width)]


def section_windows(
    scene_height: int, scene_width: int, chip_size: int, stride: int, columns: tuple[int, int] | None = None
) -> list[ChipWindow]:
    """The windows of :func:`sliding_chip_windows` that overlap scene columns ``[start, stop)``, row-major.

    Every grid row holds the same number of them; ``None``: all windows.
    """
    rows = axis_starts(scene_height, chip_size, stride)
    cols = axis_starts(scene_width, chip_size, stride)
    height = min(chip_size, scene_height)
    width = min(chip_size, scene_width)
    if columns is not None:
        start, stop = columns
        if not 0 <= start < stop <= scene_width:
            raise ValueError(f"columns {columns} must be a non-empty range inside the {scene_width} scene columns")
        cols = [c for c in cols if c < stop and c + width > start]
    return [ChipWindow(int(r), int(c), height, width) for r in rows for c in cols]


def random_chip_window(scene_height: int, scene_width: int, chip_size: int, rng: np.random.Generator) -> ChipWindow:
    """A uniformly random ``chip_size`` window inside the scene (whole axis where the scene is smaller)."""
    _check_positive("scene_height", scene_height)
    _check_positive("scene_width", scene_width)
    _check_positive("chip_size", chip_size)
    height = min(chip_size, scene_height)
    width = min(chip_size, scene_width)
    row = int(rng.integers(0, scene_height - height + 1))
    col = int(rng.integers(0, scene_width - width + 1))
    return ChipWindow(row, col, height, width)


def intersect_windows(a: ChipWindow, b: ChipWindow) -> ChipWindow | None:
    """The overlap of two windows of one grid, or None where they do not overlap."""
    row0, col0 = max(a.row, b.row), max(a.col, b.col)
    row1, col1 = min(a.row + a.height, b.row + b.height), min(a.col + a.width, b.col + b.width)
    if row1 <= row0 or col1 <= col0:
        return None
    return ChipWindow(row0, col0, row1 - row0, col1 - col0)


def _block_starts(length: int, block_size: int, min_size: int) -> list[int]:
    """Block starts along one axis: every ``block_size``; a last strip under ``min_size`` joins the block before
    it (a strip narrower than a chip would only yield padded chips, and be drawn as often as a full block)."""
    starts = list(range(0, length, block_size))
    if len(starts) > 1 and length - starts[-1] < min_size:
        starts.pop()
    return starts


def block_windows(height: int, width: int, block_size: int, min_size: int = 1) -> list[ChipWindow]:
    """Square ``block_size`` blocks tiling a ``height`` x ``width`` area, row-major, disjoint, covering it.

    Blocks at the bottom and right border are cut by the border; a border strip narrower than ``min_size``
    (the chip size) is merged into its neighbour, so those blocks are up to ``block_size + min_size - 1``
    long. An area smaller than ``min_size`` along an axis is one block along that axis.
    """
    _check_positive("height", height)
    _check_positive("width", width)
    _check_positive("block_size", block_size)
    _check_positive("min_size", min_size)
    rows, cols = _block_starts(height, block_size, min_size), _block_starts(width, block_size, min_size)
    row_ends, col_ends = [*rows[1:], height], [*cols[1:], width]
    return [ChipWindow(r, c, r1 - r, c1 - c) for r, r1 in zip(rows, row_ends) for c, c1 in zip(cols, col_ends)]
