"""Streamed row-band stitching equals whole-scene stitching, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mfpeft.data.geometry import ChipWindow, sliding_chip_windows
from mfpeft.engine.stitching import (
    RowBandStitcher,
    stitch_in_memory,
    window_weights,
)


def fake_model(windows: list[ChipWindow], num_labels: int, chip_size: int, seed: int = 0) -> torch.Tensor:
    """Random logits per window, ``(N, num_labels, chip, chip)``; padding regions get extreme values so that
    using them instead of cropping them would change the result."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(windows), num_labels, chip_size, chip_size, generator=generator) * 3
    for i, window in enumerate(windows):
        logits[i, :, window.height :, :] = 1e4
        logits[i, :, :, window.width :] = -1e4
    return logits


def stream(
    height: int,
    width: int,
    num_labels: int,
    chip: int,
    stride: int,
    weights: torch.Tensor | None = None,
    batch_size: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Streamed and in-memory results for the same fake logits."""
    stitcher = RowBandStitcher(height, width, num_labels, chip, stride, weights=weights)
    windows = stitcher.windows
    logits = fake_model(windows, num_labels, chip, seed)
    bands = []
    for start in range(0, len(windows), batch_size):
        bands += stitcher.push_batch(windows[start : start + batch_size], logits[start : start + batch_size])
    assert stitcher.done and stitcher.rows_emitted == height
    # Bands are contiguous, in order, full width, and cover the scene exactly once.
    assert [b.row_start for b in bands] == list(np.cumsum([0] + [len(b.class_ids) for b in bands[:-1]]))
    assert sum(len(b.class_ids) for b in bands) == height
    streamed_ids = np.concatenate([b.class_ids for b in bands])
    streamed_conf = np.concatenate([b.confidence for b in bands])
    assert streamed_ids.dtype == np.uint8 and streamed_conf.dtype == np.float32
    ids, conf = stitch_in_memory(zip(windows, logits), height, width, num_labels, chip, weights=weights)
    return streamed_ids, streamed_conf, ids, conf


def assert_same(result: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> None:
    streamed_ids, streamed_conf, ids, conf = result
    assert streamed_ids.shape == ids.shape
    np.testing.assert_array_equal(streamed_ids, ids)
    np.testing.assert_allclose(streamed_conf, conf, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("height", "width", "chip", "stride"),
    [
        (20, 13, 32, 8),  # scene smaller than a chip: one window, padded
        (20, 90, 32, 8),  # shorter than a chip, wider than one
        (90, 20, 32, 8),  # narrower than a chip, taller than one
        (101, 77, 32, 12),  # sizes not divisible by the stride: last row/column snapped
        (96, 64, 32, 32),  # stride == chip: no overlap
        (97, 65, 32, 32),  # stride == chip with a snapped, overlapping last window
        (64, 64, 32, 1),  # stride 1: every pixel in up to 32 x 32 windows
        (32, 32, 32, 8),  # exactly one chip
        (400, 40, 32, 16),  # tall
        (40, 400, 32, 16),  # wide
    ],
)
@pytest.mark.parametrize("mode", ["uniform", "gaussian", "cosine"])
def test_streamed_equals_in_memory(height: int, width: int, chip: int, stride: int, mode: str) -> None:
    weights = window_weights(chip, mode)  # type: ignore[arg-type]
    assert_same(stream(height, width, 5, chip, stride, weights=weights))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    chip=st.integers(8, 32),
    stride_fraction=st.floats(0.25, 1.0),
    num_labels=st.integers(1, 6),
    batch_size=st.integers(1, 7),
    smooth=st.booleans(),
)
def test_streamed_equals_in_memory_any_size(
    height: int, width: int, chip: int, stride_fraction: float, num_labels: int, batch_size: int, smooth: bool
) -> None:
    stride = max(1, int(chip * stride_fraction))
    weights = window_weights(chip, "gaussian" if smooth else "uniform")
    assert_same(stream(height, width, num_labels, chip, stride, weights, batch_size=batch_size))


def test_matches_a_per_pixel_numpy_reference() -> None:
    """Both stitchers against explicit loops over windows and pixels (guards a bug they might share)."""
    height, width, chip, stride, labels = 11, 9, 6, 4, 3
    windows = sliding_chip_windows(height, width, chip, stride)
    logits = fake_model(windows, labels, chip, seed=3)
    weights = window_weights(chip, "cosine").numpy().astype(np.float64)
    total = np.zeros((labels, height, width))
    weight = np.zeros((height, width))
    for window, chip_logits in zip(windows, logits.numpy().astype(np.float64)):
        for y in range(window.height):
            for x in range(window.width):
                total[:, window.row + y, window.col + x] += weights[y, x] * chip_logits[:, y, x]
                weight[window.row + y, window.col + x] += weights[y, x]
    average = total / weight
    expected_conf = np.exp(average).max(0) / np.exp(average).sum(0)
    streamed_ids, streamed_conf, ids, conf = stream(
        height, width, labels, chip, stride, torch.from_numpy(weights).float(), seed=3
    )
    np.testing.assert_array_equal(ids, total.argmax(0))
    np.testing.assert_array_equal(streamed_ids, total.argmax(0))
    np.testing.assert_allclose(conf, expected_conf, rtol=1e-5)
    np.testing.assert_allclose(streamed_conf, expected_conf, rtol=1e-5)


def test_hand_computed_overlap() -> None:
    # A 1 x 3 scene, chip 2, stride 1: windows cover columns 0-1 and 1-2; column 1 sums both windows.
    first = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])  # (2 labels, 1, 2)
    second = torch.tensor([[[1.5, 0.0]], [[0.0, 5.0]]])
    stitcher = RowBandStitcher(1, 3, 2, chip_size=2, stride=1)
    assert stitcher.windows == [ChipWindow(0, 0, 1, 2), ChipWindow(0, 1, 1, 2)]
    assert stitcher.push(stitcher.windows[0], first) == []
    (band,) = stitcher.push(stitcher.windows[1], second)
    # column 0: (2, 0) -> 0; column 1: (0 + 1.5, 1 + 0) -> 0; column 2: (0, 5) -> 1
    np.testing.assert_array_equal(band.class_ids, [[0, 0, 1]])
    expected = [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-0.25)), 1 / (1 + np.exp(-5))]  # averaged logits
    np.testing.assert_allclose(band.confidence, [expected], rtol=1e-6)


def test_bands_are_emitted_as_soon_as_final_and_memory_is_bounded() -> None:
    chip, stride, width = 32, 12, 50
    short = RowBandStitcher(100, width, 4, chip, stride)
    tall = RowBandStitcher(2000, width, 4, chip, stride)
    assert tall.buffer_shape == short.buffer_shape == (4, chip, width)
    assert tall.buffer_nbytes == short.buffer_nbytes == (4 + 1) * chip * width * 4

    windows = tall.windows
    logits = fake_model(windows, 4, chip)
    pointer = tall._logit_sum.data_ptr()
    for i, (window, chip_logits) in enumerate(zip(windows, logits)):
        bands = tall.push(window, chip_logits)
        last_in_row = i + 1 == len(windows) or windows[i + 1].row != window.row
        assert bool(bands) == last_in_row
        for band in bands:
            end = band.row_start + len(band.class_ids)
            # Final: no later window reaches these rows; as soon as possible: the next one starts right below.
            assert all(later.row >= end for later in windows[i + 1 :])
            assert i + 1 == len(windows) or windows[i + 1].row == end
            assert len(band.class_ids) <= (chip if tall.done else stride)
        # Held rows never exceed one chip, and the buffer is never reallocated.
        assert tall.buffer_nbytes == short.buffer_nbytes
        assert tall._logit_sum.data_ptr() == pointer
    assert tall.done


def test_accepts_cropped_numpy_and_low_precision_logits() -> None:
    height, width, chip = 10, 40, 16
    stitcher = RowBandStitcher(height, width, 3, chip, 8)
    windows = stitcher.windows
    logits = fake_model(windows, 3, chip)
    reference = stitch_in_memory(zip(windows, logits), height, width, 3, chip)
    bands = []
    for i, (window, chip_logits) in enumerate(zip(windows, logits)):
        cropped = chip_logits[:, : window.height, : window.width]
        bands += stitcher.push(window, cropped.numpy() if i % 2 else cropped.to(torch.float64))
    np.testing.assert_array_equal(np.concatenate([b.class_ids for b in bands]), reference[0])


def test_window_weights() -> None:
    np.testing.assert_array_equal(window_weights(4, "uniform"), torch.ones(4, 4))
    for mode in ("gaussian", "cosine"):
        weights = window_weights(64, mode)  # type: ignore[arg-type]
        assert weights.shape == (64, 64) and weights.dtype == torch.float32
        assert float(weights.min()) > 0.0
        assert float(weights.max()) <= 1.0 and float(weights[31:33, 31:33].min()) > 0.99
        assert float(weights[0, 0]) < 0.05  # corners are down-weighted
        torch.testing.assert_close(weights, weights.T)
        torch.testing.assert_close(weights, weights.flip(0))
    assert float(window_weights(1, "cosine")[0, 0]) == 1.0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="weight mode must be one of uniform, gaussian, cosine, got 'hann'"):
        window_weights(8, "hann")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chip_size must be a positive integer"):
        window_weights(0)
    with pytest.raises(ValueError, match="at most 256"):
        RowBandStitcher(10, 10, 300, 8, 4)
    with pytest.raises(ValueError, match="strictly positive"):
        RowBandStitcher(10, 10, 2, 4, 2, weights=torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"weights must have shape \(4, 4\)"):
        RowBandStitcher(10, 10, 2, 4, 2, weights=torch.ones(3, 3))
    with pytest.raises(ValueError, match="stride must not exceed chip_size"):
        RowBandStitcher(10, 10, 2, 4, 5)

    stitcher = RowBandStitcher(10, 10, 2, 4, 2)
    windows = stitcher.windows
    with pytest.raises(ValueError, match=r"expected window 0 \(0, 0, 4, 4\)"):
        stitcher.push(windows[1], torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"must have shape \(2, 4, 4\)"):
        stitcher.push(windows[0], torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="2 windows but logits for 1 chips"):
        stitcher.push_batch(windows[:2], torch.zeros(1, 2, 4, 4))
    stitcher.push_batch(windows, torch.zeros(len(windows), 2, 4, 4))
    with pytest.raises(ValueError, match="have been pushed"):
        stitcher.push(windows[0], torch.zeros(2, 4, 4))

    nan_stitcher = RowBandStitcher(4, 4, 2, 4, 2)
    with pytest.raises(ValueError, match=r"non-finite logits for scene rows 0\.\.3"):
        nan_stitcher.push(nan_stitcher.windows[0], torch.full((2, 4, 4), float("nan")))

    with pytest.raises(ValueError, match="covered by no chip"):
        stitch_in_memory([(ChipWindow(0, 0, 4, 4), torch.zeros(2, 4, 4))], 8, 4, 2, 4)


def window_logits(window: ChipWindow, num_labels: int, chip: int) -> torch.Tensor:
    """Logits that depend on the window alone (so a window pushed in two sections gets the same ones)."""
    generator = torch.Generator().manual_seed(window.row * 100_003 + window.col)
    return torch.randn(num_labels, chip, chip, generator=generator) * 3


@pytest.mark.parametrize(
    ("height", "width", "chip", "stride", "section_width"),
    [
        (70, 200, 32, 16, 64),  # sections at multiples of the stride
        (70, 203, 32, 12, 50),  # not: windows straddle every boundary, last column snapped
        (70, 200, 32, 32, 64),  # stride == chip: no window straddles
        (70, 200, 32, 8, 7),  # sections narrower than a chip
        (40, 20, 32, 8, 16),  # narrower than a chip: one window per row, in both sections
    ],
)
@pytest.mark.parametrize("mode", ["uniform", "gaussian"])
def test_sections_stitch_each_pixel_as_the_whole_width_does(
    height: int, width: int, chip: int, stride: int, section_width: int, mode: str
) -> None:
    from mfpeft.data.geometry import column_sections

    weights = window_weights(chip, mode)  # type: ignore[arg-type]
    whole = RowBandStitcher(height, width, 4, chip, stride, weights=weights, probabilities=True)
    expected = [whole.push(w, window_logits(w, 4, chip)) for w in whole.windows]
    full = [band for bands in expected for band in bands]
    ids = np.concatenate([b.class_ids for b in full])
    conf = np.concatenate([b.confidence for b in full])
    probs = np.concatenate([b.probabilities for b in full], axis=1)
    sections = column_sections(width, section_width)
    assert sections[0][0] == 0 and sections[-1][1] == width and len(sections) > 1
    for start, stop in sections:
        stitcher = RowBandStitcher(
            height, width, 4, chip, stride, weights=weights, probabilities=True, columns=(start, stop)
        )
        assert all(w.col < stop and w.col + w.width > start for w in stitcher.windows)
        assert len(stitcher.windows) == stitcher.per_row * len({w.row for w in stitcher.windows})
        assert stitcher.buffer_shape[2] <= stop - start + 2 * chip
        bands = [b for w in stitcher.windows for b in stitcher.push(w, window_logits(w, 4, chip))]
        assert stitcher.done and {b.col_start for b in bands} == {start}
        assert [b.row_start for b in bands] == [b.row_start for b in full]
        # Bit for bit: every pixel summed from the same windows in the same order.
        np.testing.assert_array_equal(np.concatenate([b.class_ids for b in bands]), ids[:, start:stop])
        np.testing.assert_array_equal(np.concatenate([b.confidence for b in bands]), conf[:, start:stop])
        np.testing.assert_array_equal(np.concatenate([b.probabilities for b in bands], axis=1), probs[:, :, start:stop])


def test_section_outside_the_scene_is_refused() -> None:
    with pytest.raises(ValueError, match=r"columns \(10, 90\) must be a non-empty range inside the 80 scene columns"):
        RowBandStitcher(40, 80, 3, 32, 16, columns=(10, 90))


def test_without_confidence_no_softmax_and_the_same_class_ids() -> None:
    windows = sliding_chip_windows(70, 90, 32, 16)
    logits = [window_logits(w, 5, 32) for w in windows]
    results = {}
    for confidence, probabilities in ((True, True), (False, False), (False, True)):
        stitcher = RowBandStitcher(70, 90, 5, 32, 16, probabilities=probabilities, confidence=confidence)
        results[confidence, probabilities] = [b for w, x in zip(windows, logits) for b in stitcher.push(w, x)]
    full = results[True, True]
    for key in ((False, False), (False, True)):
        bands = results[key]
        assert all(b.confidence is None for b in bands)
        np.testing.assert_array_equal(
            np.concatenate([b.class_ids for b in bands]), np.concatenate([b.class_ids for b in full])
        )
    assert all(b.probabilities is None for b in results[False, False])
    np.testing.assert_array_equal(
        np.concatenate([b.probabilities for b in results[False, True]], axis=1),
        np.concatenate([b.probabilities for b in full], axis=1),
    )
