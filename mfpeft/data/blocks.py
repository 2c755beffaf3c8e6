"""Splits inside a scene (``--split-blocks``): square blocks of each train tile, drawn into train / validation / test.

Each train tile of a source is cut into ``block_size`` square blocks on its first modality's grid (within the
area every raster covers; :func:`mfpeft.data.geometry.block_windows`). A seeded permutation of all blocks,
pooled over the tiles, gives the first ``validation`` fraction of them to validation, the next ``test``
fraction to test and the rest to train (counts rounded by largest remainder, so they add up). Every block is
a :class:`~mfpeft.data.tile.Tile` with a ``window``; datasets and evaluation read only inside it, so no
training chip overlaps a validation or test block.

The default block size is a fixed 1024 pixels (4 chips of the default 256), not a multiple of the chip size:
``mfpeft evaluate`` takes its chip size from the model, and must cut the same blocks as ``train`` did from the
same flags. The assignment is recorded by :func:`write_block_assignment` (JSON + PNG map).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.data.geometry import ChipWindow, block_windows
from mfpeft.data.tile import Tile, raster_files

__all__ = [
    "BLOCK_SPLITS",
    "DEFAULT_BLOCK_SIZE",
    "RECORD_JSON",
    "RECORD_PNG",
    "block_records",
    "check_block_size",
    "check_train_classes",
    "missing_class_warning",
    "parse_split_fractions",
    "split_into_blocks",
    "write_block_assignment",
]

BLOCK_SPLITS = ("validation", "test")
"""The splits ``--split-blocks`` gives fractions for; train gets the rest."""
DEFAULT_BLOCK_SIZE = 1024
RECORD_JSON = "split_blocks.json"
RECORD_PNG = "split_blocks.png"
_SEPARATOR = "@"  # block tile names: "<tile>@r<row>_c<col>"
_COLOURS = {"train": "#4daf4a", "validation": "#377eb8", "test": "#e41a1c"}


def _describe(fractions: str | Mapping[str, Any]) -> str:
    if isinstance(fractions, str):
        return fractions
    return ",".join(f"{k}={v}" for k, v in fractions.items())


def parse_split_fractions(value: str | Mapping[str, Any]) -> dict[str, float]:
    """``"validation=0.15,test=0.25"`` (or a mapping) -> ``{"validation": 0.15, "test": 0.25}``, checked.

    Raises:
        ValueError: an unknown split name, a fraction that is not a number in [0, 1], or fractions summing
            to more than 1; one line naming ``--split-blocks`` and the value.
    """
    text = _describe(value)
    if isinstance(value, str):
        pairs = [p.split("=", 1) if "=" in p else [p, ""] for p in value.split(",") if p.strip()]
    else:
        pairs = [[str(k), v] for k, v in value.items()]
    fractions: dict[str, float] = {}
    for name, raw in pairs:
        name = str(name).strip()
        if name not in BLOCK_SPLITS:
            raise ValueError(
                f"--split-blocks {text}: unknown split {name!r}; give validation=F and/or test=F (train gets the rest)"
            )
        try:
            fraction = float(raw)
        except (TypeError, ValueError):
            fraction = math.nan
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"--split-blocks {text}: {name}={str(raw).strip()} must be a fraction in [0, 1]")
        fractions[name] = fraction
    if not fractions:
        raise ValueError(f"--split-blocks {text!r}: give validation=F and/or test=F, e.g. validation=0.15,test=0.25")
    if sum(fractions.values()) > 1.0 + 1e-9:
        raise ValueError(f"--split-blocks {text}: the fractions sum to {sum(fractions.values()):g}, more than 1")
    return fractions


def check_block_size(options: Mapping[str, Any], chip_size: int, what: str = "--chip-size") -> None:
    """Refuse a ``block_size`` source option smaller than the chip size (``what`` names where that comes from).

    Raises:
        ValueError: one line naming both values.
    """
    if not options.get("split_blocks"):
        return
    block = options.get("block_size") or DEFAULT_BLOCK_SIZE
    if int(block) < int(chip_size):
        raise ValueError(f"--block-size {block} is smaller than {what} {chip_size}: a block must hold a whole chip")


def block_name(tile: str, window: ChipWindow) -> str:
    """The name of the block tile of ``tile`` at ``window`` (reference-grid pixels)."""
    return f"{tile}{_SEPARATOR}r{window.row}_c{window.col}"


def _usable_window(tile: Tile) -> ChipWindow:
    """The area every raster of ``tile`` (and its labels) covers on its first modality's grid."""
    from mfpeft.data.raster import TileReader
    from mfpeft.data.scaling import Scaling

    unscaled = {m: Scaling(mode="none") for m in tile.modalities}
    with TileReader(tile, scaling=unscaled, labels="full", mask_nodata=False) as reader:
        return reader.window


def _counts(total: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Blocks per split (train = the rest), rounded by largest remainder so that they sum to ``total``."""
    shares = {"train": max(0.0, 1.0 - sum(fractions.values())), **{s: fractions.get(s, 0.0) for s in BLOCK_SPLITS}}
    exact = {s: f * total for s, f in shares.items()}
    counts = {s: math.floor(v + 1e-9) for s, v in exact.items()}
    order = sorted(shares, key=lambda s: (-(exact[s] - counts[s]), list(shares).index(s)))
    for s in order[: total - sum(counts.values())]:
        counts[s] += 1
    return counts


def split_into_blocks(
    splits: Mapping[str, list[Tile]],
    fractions: str | Mapping[str, Any],
    block_size: int | None = None,
    seed: int = 0,
) -> dict[str, list[Tile]]:
    """Cut every train tile into blocks and draw them into train / validation / test (module docstring).

    Tiles already in validation or test stay there whole. Returns new splits; blocks are listed in tile order,
    row-major within a tile.

    Warns:
        UserWarning: a split with a fraction above 0 that gets no block (too few blocks for its fraction).
    """
    parsed = parse_split_fractions(fractions)
    size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"--block-size {size!r} must be a positive integer (pixels)")
    blocks: list[Tile] = []
    for tile in splits.get("train", []):
        area = _usable_window(tile)
        for w in block_windows(area.height, area.width, int(size), min_size=max(1, int(size) // 4)):
            window = ChipWindow(area.row + w.row, area.col + w.col, w.height, w.width)
            blocks.append(dataclasses.replace(tile, name=block_name(tile.name, window), window=window))
    counts = _counts(len(blocks), parsed)
    order = np.random.default_rng(seed).permutation(len(blocks)).tolist()
    drawn: dict[str, set[int]] = {}
    start = 0
    for split in (*BLOCK_SPLITS, "train"):
        drawn[split] = set(order[start : start + counts[split]])
        start += counts[split]
    wanted = {"train": 1.0 - sum(parsed.values()), **parsed}
    for split, fraction in wanted.items():
        if fraction > 1e-9 and not drawn[split]:
            warnings.warn(
                f"--split-blocks {_describe(fractions)}: {split} gets none of the {len(blocks)} blocks of "
                f"{size} px; use a smaller --block-size or a larger fraction",
                UserWarning,
                stacklevel=2,
            )
    out = {split: list(tiles) for split, tiles in splits.items() if split != "train"}
    out["train"] = [b for i, b in enumerate(blocks) if i in drawn["train"]]
    for split in BLOCK_SPLITS:
        out[split] = out.get(split, []) + [b for i, b in enumerate(blocks) if i in drawn[split]]
    return out


def block_records(splits: Mapping[str, Sequence[Tile]]) -> list[dict[str, Any]]:
    """``{"tile", "block", "window": [row, col, height, width], "split"}`` for every block tile of ``splits``."""
    records = []
    for split in ("train", *BLOCK_SPLITS):
        for tile in splits.get(split, []):
            if tile.window is not None:
                scene = tile.name.rsplit(_SEPARATOR, 1)[0]
                records.append({"tile": scene, "block": tile.name, "window": list(tile.window), "split": split})
    return records


def missing_class_warning(pixels: Sequence[int], classes: Sequence[str]) -> None:
    """Warn (one line) about classes without a pixel in the train blocks (``pixels[k]``: class ``k``'s count)."""
    absent = [name for name, n in zip(classes, pixels) if n == 0]
    if absent:
        warnings.warn(
            f"--split-blocks: no train block holds a pixel of class(es) {', '.join(map(repr, absent))}; the model "
            "cannot learn them (try another --data-seed, a smaller --block-size or smaller fractions)",
            UserWarning,
            stacklevel=2,
        )


def write_block_assignment(
    splits: Mapping[str, Sequence[Tile]], folder: str | Path, options: Mapping[str, Any]
) -> tuple[Path, Path] | None:
    """Record which block went to which split: ``split_blocks.json`` and a ``split_blocks.png`` map in
    ``folder`` (each written atomically); None (nothing written) when ``splits`` holds no block.

    The JSON holds the options (fractions, block size, seed), the block count per split and one record per
    block (:func:`block_records`); windows are ``[row, col, height, width]`` in pixels of the tile's first
    modality's raster (its first band file).
    """
    from mfpeft.common.files import write_json

    records = block_records(splits)
    if not records:
        return None
    target = Path(folder)
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", *BLOCK_SPLITS)}
    write_json(
        target / RECORD_JSON,
        {
            "split_blocks": parse_split_fractions(options["split_blocks"]),
            "block_size": int(options.get("block_size") or DEFAULT_BLOCK_SIZE),
            "split_seed": int(options.get("split_seed", 0)),
            "window": "row, col, height, width in pixels of the first modality's raster (its first band file)",
            "blocks_per_split": counts,
            "blocks": records,
        },
    )
    return target / RECORD_JSON, _draw_blocks(splits, records, counts, target / RECORD_PNG)


def _draw_blocks(
    splits: Mapping[str, Sequence[Tile]], records: list[dict[str, Any]], counts: Mapping[str, int], path: Path
) -> Path:
    """One panel per tile (up to 12): its blocks coloured by split over a grey decimated quick-look of the first
    modality (none for in-memory rasters)."""
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from mfpeft.common.files import save_figure
    from mfpeft.data.quicklook import read_quicklook

    scenes = list(dict.fromkeys(r["tile"] for r in records))
    shown = scenes[:12]
    firsts = {t.name.rsplit(_SEPARATOR, 1)[0]: t for s in splits.values() for t in s if t.window is not None}
    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(4.0 * columns, 4.0 * rows + 0.8))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, scene in zip(axes.ravel(), shown):
        ref = next(iter(firsts[scene].modalities.values()))
        files = raster_files(ref)
        if files:
            import rasterio

            with rasterio.open(files[0]) as src:
                extent = (0, src.width, src.height, 0)
            image = read_quicklook(files if len(files) > 1 else files[0], 512)
            # Grey, so that the image's own colours are not mistaken for the splits' colours.
            ax.imshow(image.mean(axis=0), cmap="gray", vmin=0, vmax=1, extent=extent)
        for r in (r for r in records if r["tile"] == scene):
            row, col, height, width = r["window"]
            colour = _COLOURS[r["split"]]
            ax.add_patch(Rectangle((col, row), width, height, facecolor=to_rgba(colour, 0.35), edgecolor=colour, lw=1))
        ax.autoscale_view()
        if not files:
            ax.invert_yaxis()
        ax.set_title(scene, fontsize=9)
    handles = [Patch(facecolor=_COLOURS[s], label=f"{s}: {counts[s]} blocks") for s in ("train", *BLOCK_SPLITS)]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    more = f" (first {len(shown)} of {len(scenes)} tiles)" if len(scenes) > len(shown) else ""
    figure.suptitle(f"--split-blocks: {len(records)} blocks{more}")
    figure.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.12, wspace=0.05, hspace=0.15)
    return save_figure(figure, path, dpi=80)


def check_train_classes(splits: Mapping[str, Sequence[Tile]]) -> None:
    """:func:`missing_class_warning` for the train blocks of ``splits`` (every label pixel read once); nothing
    when train holds no labelled block."""
    from mfpeft.data.checks import count_labels

    train = [t for t in splits.get("train", []) if t.window is not None and t.labels is not None]
    if train:
        classes = train[0].label_encoding.classes
        missing_class_warning(count_labels(train, len(classes)).pixels, classes)
