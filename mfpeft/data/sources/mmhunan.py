"""MMHunan in its raw layout: Sentinel-2, elevation and land cover per tile, in train / test folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mfpeft.data.palette import MMHUNAN_CLASSES, MMHUNAN_LC_TO_CLASS, MMHUNAN_PALETTE
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources.paths import find_dir, first_existing, require_dir
from mfpeft.data.sources.registry import register_source
from mfpeft.data.sources.splits import SPLIT_DIRS, Splits, hold_out_validation
from mfpeft.data.tile import LabelEncoding, Tile


@register_source("mmhunan")
def mmhunan(
    data_dir: Path | None,
    *,
    s2_bands: Sequence[int] = (4, 3, 2),
    s2_scaling: Scaling | None = None,
    validation: int | Sequence[str] | None = None,
    code_map: Sequence[int] | Mapping[int, int] = MMHUNAN_LC_TO_CLASS,
) -> Splits:
    """MMHunan raw layout: ``{train,test}/{s2,topo,lc}/{s2,topo,lc}_{id}.tif``.

    ``s2_bands`` are 1-based Sentinel-2 bands (default B4, B3, B2 = R, G, B), stretched between the tile's
    2nd and 98th percentiles unless ``s2_scaling`` says otherwise; land-cover codes map to 7 classes.
    """
    root = require_dir(data_dir, "mmhunan")
    cmap = dict(code_map) if isinstance(code_map, Mapping) else dict(enumerate(code_map))
    encoding = LabelEncoding("codes", MMHUNAN_CLASSES, MMHUNAN_PALETTE, code_map=cmap)
    scaling = {"optical": s2_scaling or Scaling("percentile"), "dsm": Scaling("minmax_tile")}
    splits: Splits = {}
    for split, dirs in SPLIT_DIRS.items():
        folder = find_dir(root, dirs)
        if folder is None:
            continue
        if not (folder / "s2").is_dir():
            raise FileNotFoundError(f"{folder / 's2'} does not exist (MMHunan split {split!r})")
        tiles = []
        for s2 in sorted((folder / "s2").glob("s2_*.tif")):
            tid = s2.stem[len("s2_") :]
            tiles.append(
                Tile(
                    name=tid,
                    modalities={
                        "optical": s2,
                        "dsm": first_existing([folder / "topo" / f"topo_{tid}.tif"], "elevation", tid),
                    },
                    labels=first_existing([folder / "lc" / f"lc_{tid}.tif"], "land cover", tid),
                    label_encoding=encoding,
                    bands={"optical": tuple(int(b) for b in s2_bands)},
                    scaling=dict(scaling),
                )
            )
        if not tiles:
            raise ValueError(f"split {split!r} of source 'mmhunan' is empty: no s2_*.tif in {folder / 's2'}")
        splits[split] = tiles
    if "train" not in splits:
        raise FileNotFoundError(f"{root} has no train/ folder with s2/, topo/, lc/ (source 'mmhunan')")
    hold_out_validation(splits, validation, "", "mmhunan")
    return splits
