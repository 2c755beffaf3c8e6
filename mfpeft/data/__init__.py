"""Multimodal raster data: sources, grid alignment, chips, scaling, datasets and the demo set.

Light names (geometry, palette, scaling, sources) import without torch; the torch datasets are imported on
first access.
"""

from typing import TYPE_CHECKING

from ..common.lazy import lazy_facade

# Light names (geometry, palette, scaling, sources) import without torch; every name is imported on first use.
_EXPORTS = {
    "RandomChipDataset": ".datasets",
    "SlidingWindowDataset": ".datasets",
    "collate_chips": ".datasets",
    "demo_data_dir": ".demo",
    "make_demo_scene": ".demo",
    "ChipWindow": ".geometry",
    "axis_starts": ".geometry",
    "random_chip_window": ".geometry",
    "sliding_chip_windows": ".geometry",
    "Mosaic": ".mosaic",
    "IGNORE_INDEX": ".palette",
    "ISPRS_CLASSES": ".palette",
    "ISPRS_PALETTE": ".palette",
    "MMHUNAN_CLASSES": ".palette",
    "MMHUNAN_LC_TO_CLASS": ".palette",
    "labels_to_rgb": ".palette",
    "map_codes": ".palette",
    "rgb_to_labels": ".palette",
    "prepare_dataset": ".prepare",
    "TileReader": ".raster",
    "SCALING_MODES": ".scaling",
    "Scaling": ".scaling",
    "TileStatistics": ".scaling",
    "compute_tile_statistics": ".scaling",
    "default_scaling": ".scaling",
    "model_input_scaling": ".scaling",
    "parse_scalings": ".scaling",
    "resolve_input_scaling": ".scaling",
    "POTSDAM_SPLITS": ".sources",
    "VAIHINGEN_SPLITS": ".sources",
    "available_sources": ".sources",
    "get_source": ".sources",
    "register_source": ".sources",
    "LabelEncoding": ".tile",
    "Tile": ".tile",
    "random_flip_rotate": ".transforms",
}
__getattr__, __dir__, __all__ = lazy_facade(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .datasets import RandomChipDataset, SlidingWindowDataset, collate_chips  # noqa: F401
    from .demo import demo_data_dir, make_demo_scene  # noqa: F401
    from .geometry import ChipWindow, axis_starts, random_chip_window, sliding_chip_windows  # noqa: F401
    from .mosaic import Mosaic  # noqa: F401
    from .palette import (  # noqa: F401
        IGNORE_INDEX,
        ISPRS_CLASSES,
        ISPRS_PALETTE,
        MMHUNAN_CLASSES,
        MMHUNAN_LC_TO_CLASS,
        labels_to_rgb,
        map_codes,
        rgb_to_labels,
    )
    from .prepare import prepare_dataset  # noqa: F401
    from .raster import TileReader  # noqa: F401
    from .scaling import (  # noqa: F401
        SCALING_MODES,
        Scaling,
        TileStatistics,
        compute_tile_statistics,
        default_scaling,
        model_input_scaling,
        parse_scalings,
        resolve_input_scaling,
    )
    from .sources import POTSDAM_SPLITS, VAIHINGEN_SPLITS, available_sources, get_source, register_source  # noqa: F401
    from .tile import LabelEncoding, Tile  # noqa: F401
    from .transforms import random_flip_rotate  # noqa: F401
