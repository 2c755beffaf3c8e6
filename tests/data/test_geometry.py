"""Property tests for the chip window geometry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfpeft.data.geometry import ChipWindow, axis_starts, random_chip_window, sliding_chip_windows

sizes = st.integers(min_value=1, max_value=300)


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, int, int, int]:
    height = draw(sizes)
    width = draw(sizes)
    chip = draw(st.integers(min_value=1, max_value=128))
    stride = draw(st.integers(min_value=1, max_value=chip))
    return height, width, chip, stride


@settings(max_examples=150, deadline=None, derandomize=True)
@given(grids())
def test_sliding_grid_covers_every_pixel_and_stays_inside(grid: tuple[int, int, int, int]) -> None:
    height, width, chip, stride = grid
    windows = sliding_chip_windows(height, width, chip, stride)
    covered = np.zeros((height, width), dtype=np.int32)
    for w in windows:
        assert w.row >= 0 and w.col >= 0
        assert w.row + w.height <= height and w.col + w.width <= width
        assert w.height == min(chip, height) and w.width == min(chip, width)
        covered[w.slices] += 1
    assert covered.min() >= 1


@settings(max_examples=100, deadline=None, derandomize=True)
@given(grids())
def test_sliding_grid_is_row_major_and_unique(grid: tuple[int, int, int, int]) -> None:
    height, width, chip, stride = grid
    windows = sliding_chip_windows(height, width, chip, stride)
    keys = [(w.row, w.col) for w in windows]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(grids())
def test_axis_starts_step_is_at_most_stride(grid: tuple[int, int, int, int]) -> None:
    length, _, chip, stride = grid
    starts = axis_starts(length, chip, stride)
    assert starts[0] == 0
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(sizes, sizes, st.integers(min_value=1, max_value=128), st.integers(min_value=0, max_value=2**32 - 1))
def test_random_window_inside_scene(height: int, width: int, chip: int, seed: int) -> None:
    w = random_chip_window(height, width, chip, np.random.default_rng(seed))
    assert w.row >= 0 and w.row + w.height <= height
    assert w.col >= 0 and w.col + w.width <= width
    assert (w.height, w.width) == (min(chip, height), min(chip, width))


def test_paper_protocol_snaps_last_window() -> None:
    # 300 px, chip 256, stride 32: 0 and 32 fit, then the last is snapped to 300 - 256 = 44.
    assert axis_starts(300, 256, 32) == [0, 32, 44]
    assert axis_starts(512, 256, 256) == [0, 256]
    assert axis_starts(100, 256, 32) == [0]


def test_small_scene_gives_one_window_of_scene_size() -> None:
    assert sliding_chip_windows(100, 50, 256, 128) == [ChipWindow(0, 0, 100, 50)]


def test_random_window_is_deterministic_and_varies() -> None:
    a = [random_chip_window(1000, 1000, 256, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    assert len({random_chip_window(1000, 1000, 256, rng) for _ in range(20)}) > 1


def test_slices_select_window() -> None:
    scene = np.arange(100).reshape(10, 10)
    w = ChipWindow(2, 3, 4, 5)
    assert scene[w.slices].shape == (4, 5)
    assert scene[w.slices][0, 0] == 23


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 10, 4, 2), "length"),
        ((10, 0, 4, 2), "chip_size"),
        ((10, 4, 0, 2), "stride"),
        ((10, 4, 8, 2), "stride"),
    ],
)
def test_bad_arguments_name_the_field(args: tuple[int, int, int, int], field: str) -> None:
    length, chip, stride, _ = args
    with pytest.raises(ValueError, match=field):
        axis_starts(length, chip, stride)


def test_column_sections_split_at_multiples_of_the_section_width() -> None:
    from mfpeft.data.geometry import column_sections, section_windows

    assert column_sections(700, 256) == [(0, 256), (256, 512), (512, 700)]
    assert column_sections(700, 0) == column_sections(700, None) == [(0, 700)]
    assert column_sections(200, 256) == [(0, 200)]
    with pytest.raises(ValueError, match="section_width must be a positive integer, got -4"):
        column_sections(700, -4)
    # Windows of a 700-wide grid (chip 256, stride 128: starts 0, 128, ..., 384, 444) overlapping 256..512.
    cols = sorted({w.col for w in section_windows(300, 700, 256, 128, (256, 512))})
    assert cols == [128, 256, 384, 444]
