"""Multimodal raster data: sources, grid alignment, chips, scaling, datasets and the demo set."""

from mfpeft.data.geometry import ChipWindow, random_chip_window, sliding_chip_windows

__all__ = ["ChipWindow", "random_chip_window", "sliding_chip_windows"]
