"""Sliding-window stitching of chip logits into a scene labelling, streamed in row bands.

The paper predicts a test tile with a sliding ``chip_size`` window (stride 32 or 128), sums the logits of
overlapping windows and takes the argmax. Holding the ``(num_labels, H, W)`` sum of a whole scene is fine for
a 6000 x 6000 tile (about 1 GB for 6 classes) but not for an orthomosaic of 100k rows. Because
:func:`mfpeft.data.geometry.sliding_chip_windows` lists windows row-major, once every window of one grid row
has arrived no later window can reach above the next grid row's start: those scene rows are final. The
:class:`RowBandStitcher` therefore keeps a buffer only ``min(chip_size, H)`` rows tall and emits each finished
band of rows as soon as possible, so its memory depends on the chip size and the width it stitches, never on
the scene height. Given a *section* (a range of columns, :func:`mfpeft.data.geometry.column_sections`) it takes
only the windows that overlap those columns and emits only them: a wide scene is stitched section by section,
each pixel from the same windows, in the same order, as when the whole width is stitched at once.

This module is pure logic: no raster I/O and no model. :func:`stitch_in_memory` is the straightforward
whole-scene accumulator that the streamed result is tested against, pixel for pixel.

Conventions: logits of one window are ``(num_labels, chip_size, chip_size)``; where the scene is smaller
than a chip along an axis the reader pads the chip at the bottom/right, so only the top-left
``(window.height, window.width)`` part is used. Weighted sums use the same weights for the argmax and the
confidence: class = argmax of ``sum_w weight * logits``; confidence = max softmax probability of the
weighted average ``sum_w weight * logits / sum_w weight``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from mfpeft.data.geometry import ChipWindow, section_windows

WeightMode = Literal["uniform", "gaussian", "cosine"]
WEIGHT_MODES: tuple[str, ...] = ("uniform", "gaussian", "cosine")

Logits = torch.Tensor | npt.NDArray[np.floating]
"""Logits of one chip, ``(num_labels, chip_size, chip_size)`` (or already cropped to the window)."""


class RowBand(NamedTuple):
    """A finished band of scene rows ``[row_start, row_start + class_ids.shape[0])`` and columns
    ``[col_start, col_start + class_ids.shape[1])``: the stitcher's section (the full width by default)."""

    row_start: int
    class_ids: npt.NDArray[np.uint8]
    """``(h, W)`` uint8 class ids (argmax of the summed weighted logits)."""
    confidence: npt.NDArray[np.float32] | None
    """``(h, W)`` float32 max softmax probability of the averaged logits, in ``(0, 1]``; None from a stitcher
    made with ``confidence=False``."""
    probabilities: npt.NDArray[np.uint8] | None = None
    """``(num_labels, h, W)`` uint8 softmax probabilities of the averaged logits, ``round(255 p)``; only from a
    stitcher made with ``probabilities=True``."""
    col_start: int = 0
    """Scene column of ``class_ids[:, 0]``."""


def window_weights(chip_size: int, mode: WeightMode = "uniform") -> torch.Tensor:
    """Per-pixel weights of one chip's logits in the overlap sum, ``(chip_size, chip_size)`` float32.

    ``"uniform"``: all ones, the paper's plain sum. ``"gaussian"`` (sigma = chip/4) and ``"cosine"`` (a
    half-sine per axis) down-weight the chip borders, where the model sees the least context; both are
    strictly positive everywhere, so a pixel seen by a single window (the scene border) still gets a label,
    and both peak at 1 in the centre.
    """
    if isinstance(chip_size, bool) or not isinstance(chip_size, (int, np.integer)) or chip_size <= 0:
        raise ValueError(f"chip_size must be a positive integer, got {chip_size!r}")
    if mode not in WEIGHT_MODES:
        raise ValueError(f"weight mode must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
    if mode == "uniform":
        return torch.ones(chip_size, chip_size, dtype=torch.float32)
    # Pixel centres, so the profile is symmetric and never exactly zero at the edges.
    centres = (torch.arange(chip_size, dtype=torch.float64) + 0.5) / chip_size
    if mode == "gaussian":
        profile = torch.exp(-0.5 * ((centres - 0.5) / 0.25) ** 2)
    else:
        profile = torch.sin(math.pi * centres)
    profile = profile / profile.max()
    return torch.outer(profile, profile).to(torch.float32)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _validated_weights(weights: torch.Tensor | npt.ArrayLike | None, chip_size: int) -> torch.Tensor:
    if weights is None:
        return window_weights(chip_size, "uniform")
    tensor = torch.as_tensor(weights).detach().to(device="cpu", dtype=torch.float32)
    if tuple(tensor.shape) != (chip_size, chip_size):
        raise ValueError(f"weights must have shape ({chip_size}, {chip_size}), got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()) or float(tensor.min()) <= 0.0:
        raise ValueError("weights must be finite and strictly positive everywhere (every pixel needs a vote)")
    return tensor


def _chip_logits(
    logits: Logits, window: ChipWindow, num_labels: int, chip_size: int, device: torch.device
) -> torch.Tensor:
    """The ``(num_labels, window.height, window.width)`` float32 part of one chip's logits."""
    tensor = torch.as_tensor(logits)
    shape = tuple(tensor.shape)
    accepted = ((num_labels, chip_size, chip_size), (num_labels, window.height, window.width))
    if shape not in accepted:
        raise ValueError(
            f"logits for window {tuple(window)} must have shape {accepted[0]} (or cropped {accepted[1]}), got {shape}"
        )
    return tensor[:, : window.height, : window.width].to(device=device, dtype=torch.float32)


class RowBandStitcher:
    """Streamed sliding-window stitching: push chip logits in window order, receive finished row bands.

    Example::

        stitcher = RowBandStitcher(H, W, num_labels=6, chip_size=256, stride=32)
        for start in range(0, len(stitcher.windows), batch_size):
            windows = stitcher.windows[start:start + batch_size]
            logits = model(read_chips(windows)).logits          # (B, 6, 256, 256)
            for band in stitcher.push_batch(windows, logits):
                write(band.row_start, band.class_ids, band.confidence)

    Memory: two float32 buffers of ``(num_labels + 1) x min(chip_size, H) x w`` values on ``device``, where
    ``w`` is the width the section's windows span (the section plus up to a chip on each side; ``W`` without
    a section), independent of the scene height.
    """

    def __init__(
        self,
        scene_height: int,
        scene_width: int,
        num_labels: int,
        chip_size: int,
        stride: int,
        weights: torch.Tensor | npt.ArrayLike | None = None,
        device: torch.device | str = "cpu",
        probabilities: bool = False,
        columns: tuple[int, int] | None = None,
        confidence: bool = True,
    ) -> None:
        """Args:
        scene_height, scene_width: scene size ``H, W`` in pixels.
        num_labels: number of classes (at most 256: class ids are written as uint8).
        chip_size, stride: the sliding grid, as in :func:`sliding_chip_windows`.
        weights: ``(chip_size, chip_size)`` strictly positive weights (see :func:`window_weights`); ``None``
            is the paper's plain sum.
        device: where the sums are kept (the model's device avoids a host round trip per chip).
        probabilities: also return every class's quantised probability in each band (:attr:`RowBand.probabilities`).
        columns: the section ``[start, stop)`` of scene columns to stitch and emit (None: all): only the windows
            overlapping it are pushed.
        confidence: also return each pixel's confidence (:attr:`RowBand.confidence`); without it and without
            ``probabilities`` no softmax is computed (class ids only, as evaluation needs).
        """
        _check_positive("scene_height", scene_height)
        _check_positive("scene_width", scene_width)
        _check_positive("num_labels", num_labels)
        if num_labels > 256:
            raise ValueError(f"num_labels must be at most 256 for uint8 class ids, got {num_labels}")
        self.windows: list[ChipWindow] = section_windows(scene_height, scene_width, chip_size, stride, columns)
        self.columns: tuple[int, int] = (0, int(scene_width)) if columns is None else (int(columns[0]), int(columns[1]))
        self.scene_height = int(scene_height)
        self.scene_width = int(scene_width)
        self.num_labels = int(num_labels)
        self.chip_size = int(chip_size)
        self.stride = int(stride)
        self.device = torch.device(device)
        self.probabilities = bool(probabilities)
        self.confidence = bool(confidence)
        self._weights = _validated_weights(weights, self.chip_size).to(self.device)
        rows = min(self.chip_size, self.scene_height)
        # The buffer spans the columns the section's windows cover: the section and a margin on each side.
        self._col0 = min(w.col for w in self.windows)
        span = max(w.col + w.width for w in self.windows) - self._col0
        self._logit_sum = torch.zeros(self.num_labels, rows, span, device=self.device)
        self._weight_sum = torch.zeros(rows, span, device=self.device)
        self._origin = 0  # scene row held in buffer row 0; every scene row above it has been emitted
        self._next = 0  # index into self.windows of the next expected window

    @property
    def done(self) -> bool:
        """Whether every window has been pushed (and so every row emitted)."""
        return self._next == len(self.windows)

    @property
    def rows_emitted(self) -> int:
        """Number of scene rows already returned in bands (the next band starts here)."""
        return self.scene_height if self.done else self._origin

    @property
    def per_row(self) -> int:
        """Windows in each grid row (of the section)."""
        return sum(1 for w in self.windows if w.row == self.windows[0].row)

    @property
    def buffer_shape(self) -> tuple[int, int, int]:
        """``(num_labels, rows, w)`` of the running logit sum; ``rows = min(chip_size, H)``, ``w`` the columns the
        section's windows span."""
        return (self.num_labels, self._logit_sum.shape[1], self._logit_sum.shape[2])

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the running sums (logits and weights)."""
        return int(
            self._logit_sum.numel() * self._logit_sum.element_size()
            + self._weight_sum.numel() * self._weight_sum.element_size()
        )

    def push(self, window: ChipWindow, logits: Logits) -> list[RowBand]:
        """Add the logits of the next window; return the row bands this window finished (often none).

        Args:
            window: must equal ``self.windows[i]`` for the i-th call (row-major order).
            logits: ``(num_labels, chip_size, chip_size)`` (bottom/right padding is cropped) or
                ``(num_labels, window.height, window.width)``; any float dtype and device.
        """
        if self.done:
            raise ValueError(f"all {len(self.windows)} windows have been pushed; got another one {window}")
        expected = self.windows[self._next]
        if tuple(window) != tuple(expected):
            raise ValueError(
                f"windows must arrive in the order of sliding_chip_windows: expected window {self._next} "
                f"{tuple(expected)} (row, col, height, width), got {tuple(window)}"
            )
        chip = _chip_logits(logits, window, self.num_labels, self.chip_size, self.device)
        weights = self._weights[: window.height, : window.width]
        top = window.row - self._origin
        rows = slice(top, top + window.height)
        cols = slice(window.col - self._col0, window.col - self._col0 + window.width)
        _accumulate(self._logit_sum[:, rows, cols], self._weight_sum[rows, cols], chip, weights)
        self._next += 1

        if self.done:
            finished_until = self.scene_height
        elif self.windows[self._next].row != window.row:
            finished_until = self.windows[self._next].row
        else:
            return []
        return [self._emit(finished_until)]

    def push_batch(self, windows: Sequence[ChipWindow], logits: Logits) -> list[RowBand]:
        """:meth:`push` for a batch: ``logits`` is ``(B, num_labels, chip, chip)`` for ``B`` windows."""
        if len(windows) != len(logits):
            raise ValueError(f"got {len(windows)} windows but logits for {len(logits)} chips")
        bands: list[RowBand] = []
        for window, chip in zip(windows, logits):
            bands.extend(self.push(window, chip))
        return bands

    def _emit(self, finished_until: int) -> RowBand:
        height = finished_until - self._origin
        first, last = self.columns[0] - self._col0, self.columns[1] - self._col0
        logit_sum = self._logit_sum[:, :height, first:last]
        if not bool(torch.isfinite(logit_sum).all()):
            raise ValueError(
                f"the model returned non-finite logits for scene rows {self._origin}..{finished_until - 1}"
            )
        decided = _decide_in_blocks(
            logit_sum, self._weight_sum[:height, first:last], self.probabilities, self.confidence
        )
        band = RowBand(self._origin, *decided, col_start=self.columns[0])
        # Slide the buffer up by `height` rows in place (no reallocation: its size must stay constant).
        kept = self._logit_sum.shape[1] - height
        if kept > 0:
            self._logit_sum[:, :kept] = self._logit_sum[:, height:].clone()
            self._weight_sum[:kept] = self._weight_sum[height:].clone()
        self._logit_sum[:, max(kept, 0) :] = 0
        self._weight_sum[max(kept, 0) :] = 0
        self._origin = finished_until
        return band


def _accumulate(logit_sum: torch.Tensor, weight_sum: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor) -> None:
    """``logit_sum += logits * weights`` and ``weight_sum += weights`` in place; ``(L, h, w)`` / ``(h, w)``.

    One function for both stitchers: the streamed result must equal the in-memory one bit for bit, so the
    floating-point operations per pixel must be the same (addcmul_ may fuse the multiply-add).
    """
    logit_sum.addcmul_(logits, weights)
    weight_sum.add_(weights)


def _first_argmax(values: torch.Tensor) -> torch.Tensor:
    """``values.argmax(0)`` as uint8 for ``(L, h, W)`` values: first maximum on ties, like torch.argmax.

    A loop over the few classes: torch's CPU argmax over the leading, strided axis is ~10x slower.
    """
    best = values[0].clone()
    class_ids = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for k in range(1, values.shape[0]):
        better = values[k] > best  # strict: an equal later class does not win
        class_ids.masked_fill_(better, k)
        torch.maximum(best, values[k], out=best)
    return class_ids


def quantise_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities in [0, 1] as uint8 ``round(255 p)`` (0 -> 0, 1 -> 255; an error of at most 1/510)."""
    return (probabilities * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _decide(
    logit_sum: torch.Tensor, weight_sum: torch.Tensor, probabilities: bool = False, confidence: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None, npt.NDArray[np.uint8] | None]:
    """Class ids and, if asked, the confidence and the quantised probabilities from ``(L, h, W)`` weighted logit
    sums and ``(h, W)`` weight sums."""
    if bool((weight_sum <= 0).any()):
        raise RuntimeError("internal error: a finished row has a pixel that no window covered")
    class_ids = _first_argmax(logit_sum)
    if not (confidence or probabilities):
        return class_ids.cpu().numpy(), None, None
    # The softmax in float64: float32 exp differs in its last bit between the vectorised and the scalar (tail)
    # code paths, so it would depend on where a pixel falls in the tensor (the section layout); rounded to
    # float32 from float64 it does not.
    average = (logit_sum / weight_sum).double()
    exp = (average - average.amax(dim=0, keepdim=True)).exp_()
    softmax = exp / exp.sum(dim=0, keepdim=True)
    top = softmax.amax(dim=0).to(torch.float32).cpu().numpy() if confidence else None
    quantised = quantise_probabilities(softmax).cpu().numpy() if probabilities else None
    return class_ids.cpu().numpy(), top, quantised


_DECIDE_COLUMNS = 1024  # columns decided at once: bounds the softmax temporaries, whatever the width


def _decide_in_blocks(
    logit_sum: torch.Tensor, weight_sum: torch.Tensor, probabilities: bool, confidence: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None, npt.NDArray[np.uint8] | None]:
    """:func:`_decide` of ``(L, h, w)`` sums, ``_DECIDE_COLUMNS`` columns at a time (each pixel alone decides)."""
    num_labels, height, width = logit_sum.shape
    class_ids = np.empty((height, width), np.uint8)
    top = np.empty((height, width), np.float32) if confidence else None
    quantised = np.empty((num_labels, height, width), np.uint8) if probabilities else None
    for start in range(0, width, _DECIDE_COLUMNS):
        cols = slice(start, min(start + _DECIDE_COLUMNS, width))
        ids, conf, probs = _decide(logit_sum[:, :, cols], weight_sum[:, cols], probabilities, confidence)
        class_ids[:, cols] = ids
        if top is not None and conf is not None:
            top[:, cols] = conf
        if quantised is not None and probs is not None:
            quantised[:, :, cols] = probs
    return class_ids, top, quantised


def stitch_in_memory(
    chips: Iterable[tuple[ChipWindow, Logits]],
    scene_height: int,
    scene_width: int,
    num_labels: int,
    chip_size: int,
    weights: torch.Tensor | npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Whole-scene sliding-window stitching with a full ``(num_labels, H, W)`` sum: the reference.

    Args:
        chips: ``(window, logits)`` pairs in any order, logits as in :meth:`RowBandStitcher.push`.
        scene_height, scene_width, num_labels, chip_size, weights: as in :class:`RowBandStitcher`.

    Returns:
        ``(class_ids (H, W) uint8, confidence (H, W) float32)``.

    Raises:
        ValueError: if some scene pixel is covered by no chip.
    """
    _check_positive("scene_height", scene_height)
    _check_positive("scene_width", scene_width)
    _check_positive("num_labels", num_labels)
    _check_positive("chip_size", chip_size)
    chip_weights = _validated_weights(weights, chip_size)
    logit_sum = torch.zeros(num_labels, scene_height, scene_width)
    weight_sum = torch.zeros(scene_height, scene_width)
    for window, logits in chips:
        if window.row + window.height > scene_height or window.col + window.width > scene_width:
            raise ValueError(f"window {tuple(window)} leaves the {scene_height} x {scene_width} scene")
        part = _chip_logits(logits, window, num_labels, chip_size, torch.device("cpu"))
        w = chip_weights[: window.height, : window.width]
        rows, cols = window.slices
        _accumulate(logit_sum[:, rows, cols], weight_sum[rows, cols], part, w)
    uncovered = int((weight_sum == 0).sum())
    if uncovered:
        raise ValueError(f"{uncovered} scene pixels are covered by no chip")
    class_ids = logit_sum.argmax(dim=0).to(torch.uint8)
    average = logit_sum / weight_sum
    # max_k softmax_k(a) = 1 / sum_k exp(a_k - max_j a_j), written apart from the streamed softmax on purpose.
    confidence = 1.0 / torch.exp(average - average.amax(dim=0, keepdim=True)).sum(dim=0)
    return class_ids.numpy(), confidence.to(torch.float32).numpy()
