"""PNG pictures of evaluation results: the confusion matrix and the per-class F1/IoU bars.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, no display needed, safe in worker
threads) and written through `mfpeft.common.files` (a temporary sibling renamed into place), so a crash never
leaves a half-written PNG at the output path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from mfpeft.common.files import save_figure

PathLike = str | os.PathLike[str]


def _compact_count(count: int) -> str:
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= divisor:
            return f"{count / divisor:.3g}{suffix}"
    return str(count)


def plot_confusion_matrix(
    matrix: npt.ArrayLike,
    class_names: Sequence[str],
    path: PathLike,
    title: str = "Confusion matrix (rows: reference, normalised per row)",
    dpi: int = 100,
) -> Path:
    """Draw a ``(K, K)`` confusion matrix (rows = reference) as a row-normalised heat map with counts.

    Each cell shows the share of its reference row (the colour and a percentage) and the raw pixel count.
    Rows without reference pixels stay blank. Returns the written path.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square (K, K), got shape {counts.shape}")
    num_labels = counts.shape[0]
    names = [str(n) for n in class_names]
    if len(names) != num_labels:
        raise ValueError(f"class_names has {len(names)} names but the confusion matrix has {num_labels} classes")
    row_sums = counts.sum(axis=1, keepdims=True).astype(np.float64)
    shares = np.divide(counts.astype(np.float64), row_sums, out=np.full(counts.shape, np.nan), where=row_sums > 0)

    side = max(4.0, 1.0 + 0.9 * num_labels)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(shares), cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of reference row")
    axes.set_xticks(range(num_labels), names, rotation=45, ha="right")
    axes.set_yticks(range(num_labels), names)
    axes.set_xlabel("prediction")
    axes.set_ylabel("reference")
    axes.set_title(title, fontsize=10)
    font_size = 8 if num_labels <= 8 else 6
    for row in range(num_labels):
        for col in range(num_labels):
            share = shares[row, col]
            if math.isnan(share):
                continue
            colour = "white" if share > 0.5 else "black"
            axes.text(
                col,
                row,
                f"{100 * share:.1f}%\n{_compact_count(int(counts[row, col]))}",
                ha="center",
                va="center",
                fontsize=font_size,
                color=colour,
            )
    return save_figure(figure, path, dpi)


def plot_per_class(scores: dict[str, Any], path: PathLike, dpi: int = 100) -> Path:
    """Bar chart of per-class F1 and IoU from :func:`mfpeft.metrics.segmentation_scores` output.

    Classes outside ``score_classes`` are drawn hatched and marked "(not in mean)"; undefined (NaN) scores are
    labelled "n/a". Dashed lines show mF1 and mIoU. Returns the written path.
    """
    try:
        names = list(scores["class_names"])
        f1 = np.asarray(scores["per_class_f1"], dtype=np.float64)
        iou = np.asarray(scores["per_class_iou"], dtype=np.float64)
    except KeyError as error:
        raise ValueError(f"scores lack the key {error}; pass the dict returned by segmentation_scores") from None
    scored = set(scores.get("score_classes", range(len(names))))
    positions = np.arange(len(names))
    width = 0.4

    figure = Figure(figsize=(max(5.0, 1.2 * len(names) + 2.0), 4.0), layout="constrained")
    axes = figure.add_subplot()
    series = ((-width / 2, f1, "F1", "tab:blue"), (width / 2, iou, "IoU", "tab:orange"))
    for offset, values, label, colour in series:
        heights = np.nan_to_num(values, nan=0.0)
        bars = axes.bar(positions + offset, heights, width, label=label, color=colour)
        for index, bar in enumerate(bars):
            if index not in scored:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
            text = "n/a" if math.isnan(values[index]) else f"{100 * values[index]:.1f}"
            axes.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    for key, label, colour in (("mean_f1", "mF1", "tab:blue"), ("mean_iou", "mIoU", "tab:orange")):
        value = scores.get(key)
        if value is not None and not math.isnan(value):
            axes.axhline(value, color=colour, linestyle="--", linewidth=1, label=f"{label} {100 * value:.2f}")
    tick_labels = [name if i in scored else f"{name}\n(not in mean)" for i, name in enumerate(names)]
    axes.set_xticks(positions, tick_labels, rotation=30, ha="right")
    axes.set_ylim(0.0, 1.1)
    axes.set_ylabel("score")
    axes.set_title("Per-class F1 and IoU", fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path, dpi)
