"""What a run says about its data before it starts: splits, chips, scaling and the value range the model sees.

A saturated input (uint16 reflectance divided by 255, a DSM whose heights lie outside the recorded range) trains
and scores without any error; these lines make it visible before the first step.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.geometry import axis_starts
from ..data.palette import IGNORE_INDEX
from ..data.raster import TileReader
from ..data.scaling import Scaling
from ..data.tile import Tile

SATURATION_WARNING_SHARE = 0.10
"""Above this share of sampled, labelled pixels at or beyond 0 or 1 after scaling, a band gets a warning. Robust
stretches clip a few % by design (2nd-98th percentiles: about 4 %)."""


def sliding_window_count(sizes: Sequence[tuple[int, int]], chip_size: int, stride: int) -> int:
    """How many sliding windows an evaluation runs over tiles of ``sizes`` ((height, width) each)."""
    return sum(len(axis_starts(h, chip_size, stride)) * len(axis_starts(w, chip_size, stride)) for h, w in sizes)


def tile_sizes(tiles: list[Tile]) -> list[tuple[int, int]]:
    """(height, width) of each tile's grid (its first modality)."""
    sizes = []
    for tile in tiles:
        first = next(iter(tile.modalities))
        with TileReader(tile, [first], scaling={first: Scaling(mode="none")}, labels="none") as reader:
            sizes.append((reader.height, reader.width))
    return sizes


def evaluation_summary(
    tiles: Sequence[Tile], classes: Sequence[str], chip_size: int, stride: int, scalings: Mapping[str, Any]
) -> str:
    """One line before an evaluation: tiles, windows, label pixels per class and the ignored share, scaling."""
    from ..data.checks import count_labels

    sizes = tile_sizes(list(tiles))
    counts = count_labels(tiles, len(classes))
    shares = ", ".join(f"{n} {100 * c / max(counts.total, 1):.1f} %" for n, c in zip(classes, counts.pixels))
    scaling = "; ".join(f"{m} {s.describe()}" for m, s in scalings.items())
    windows = sliding_window_count(sizes, chip_size, stride)
    return (
        f"{split_line('evaluating', tiles, sizes, f'{windows:,} windows at stride {stride}')}; labels "
        f"{counts.total:,} px ({100 * counts.ignored_share:.1f} % ignored): {shares}; scaling {scaling}"
    )


def split_line(name: str, tiles: Sequence[Tile], sizes: Sequence[tuple[int, int]], what: str) -> str:
    pixels = sum(h * w for h, w in sizes)
    return f"{name} {len(tiles)} tile{'s' if len(tiles) != 1 else ''} ({pixels / 1e6:.2f} MP, {what})"


def sample_value_ranges(
    samples: Sequence[dict[str, Any]], modalities: Sequence[str], scalings: dict[str, Any]
) -> list[str]:
    """Per modality, the scaled value range of labelled pixels of ``samples`` (chips as the reader returns them:
    ``pixel_values[m]`` (C, H, W), ``labels`` (H, W) with 255 = ignore); warns about saturated bands.

    Returns one ``"optical divide:255 -> [0.00, 0.98]"`` string per modality.
    """
    lines = []
    for m in modalities:
        values, mask = [], []
        for chip in samples:
            x = np.asarray(chip["pixel_values"][m])
            labels = chip.get("labels")
            keep = np.ones(x.shape[1:], bool) if labels is None else np.asarray(labels) != IGNORE_INDEX
            values.append(x.reshape(x.shape[0], -1))
            mask.append(keep.reshape(-1))
        x, keep = np.concatenate(values, axis=1), np.concatenate(mask)
        x = x[:, keep] if keep.any() else x
        name = scalings[m].describe()
        lines.append(f"{m} {name} -> [{float(x.min()):.2f}, {float(x.max()):.2f}]")
        for band, row in enumerate(x, start=1):
            at_bounds = float(np.mean((row <= 0) | (row >= 1)))
            if at_bounds > SATURATION_WARNING_SHARE:
                warnings.warn(
                    f"{m} band {band}: {100 * at_bounds:.1f} % of the sampled values are at or beyond 0 or 1 after "
                    f"scaling {name} (range {row.min():.3g} .. {row.max():.3g}): the input is saturated; choose a "
                    f"--scaling {m}=MODE that fits these rasters (docs/data.md, scaling modes)",
                    UserWarning,
                    stacklevel=2,
                )
    return lines
