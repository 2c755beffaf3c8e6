"""Multimodal raster data: sources, grid alignment, chips, scaling, datasets and the demo set.

Light names (geometry, palette, scaling, sources) import without torch; the torch datasets are imported on
first access.
"""

from typing import Any

from mfpeft.data.geometry import ChipWindow, axis_starts, random_chip_window, sliding_chip_windows
from mfpeft.data.palette import (
    IGNORE_INDEX,
    ISPRS_CLASSES,
    ISPRS_PALETTE,
    MMHUNAN_CLASSES,
    MMHUNAN_LC_TO_CLASS,
    labels_to_rgb,
    map_codes,
    rgb_to_labels,
)
from mfpeft.data.scaling import (
    SCALING_MODES,
    Scaling,
    TileStatistics,
    compute_tile_statistics,
    default_scaling,
    model_input_scaling,
    parse_scalings,
    resolve_input_scaling,
)
from mfpeft.data.sources import (
    POTSDAM_SPLITS,
    VAIHINGEN_SPLITS,
    available_sources,
    get_source,
    register_source,
)
from mfpeft.data.tile import LabelEncoding, Tile

_LAZY = {
    "TileReader": "mfpeft.data.raster",
    "RandomChipDataset": "mfpeft.data.datasets",
    "SlidingWindowDataset": "mfpeft.data.datasets",
    "collate_chips": "mfpeft.data.datasets",
    "random_flip_rotate": "mfpeft.data.transforms",
    "demo_data_dir": "mfpeft.data.demo",
    "make_demo_scene": "mfpeft.data.demo",
    "prepare_dataset": "mfpeft.data.prepare",
}

__all__ = [
    "IGNORE_INDEX",
    "ISPRS_CLASSES",
    "ISPRS_PALETTE",
    "MMHUNAN_CLASSES",
    "MMHUNAN_LC_TO_CLASS",
    "POTSDAM_SPLITS",
    "SCALING_MODES",
    "VAIHINGEN_SPLITS",
    "ChipWindow",
    "LabelEncoding",
    "RandomChipDataset",
    "Scaling",
    "SlidingWindowDataset",
    "Tile",
    "TileReader",
    "TileStatistics",
    "available_sources",
    "axis_starts",
    "collate_chips",
    "compute_tile_statistics",
    "default_scaling",
    "demo_data_dir",
    "get_source",
    "labels_to_rgb",
    "make_demo_scene",
    "map_codes",
    "model_input_scaling",
    "parse_scalings",
    "prepare_dataset",
    "random_chip_window",
    "random_flip_rotate",
    "register_source",
    "resolve_input_scaling",
    "rgb_to_labels",
    "sliding_chip_windows",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mfpeft.data' has no attribute {name!r}")
