"""The options of whole-scene prediction (:func:`mfpeft.engine.predict.predict_scene`), checked when made."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mfpeft.data.writer import OUTPUT_BLOCK
from mfpeft.engine.stitching import WEIGHT_MODES, WeightMode

__all__ = ["DEFAULT_SECTION_WIDTH", "Bf16", "PredictionOptions"]

DEFAULT_SECTION_WIDTH = 4096
"""Output columns stitched at a time: a wider scene is predicted in column sections of this width."""

Bf16 = bool | Literal["auto"]


def _positive_integer(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and bool(value >= 1)


@dataclass(frozen=True)
class PredictionOptions:
    """How a scene is predicted and what is written besides the class ids.

    Every field but the paths and ``device`` is checked when the options are made (a ValueError naming the
    field and its value); ``chip_size`` and ``stride`` are checked against the model, ``device`` against this
    machine, the paths against the inputs, when :func:`~mfpeft.engine.predict.predict_scene` starts.

    Attributes:
        chip_size: must equal the model's ``config.image_size`` (the default).
        stride: step of the sliding window, ``1..chip_size``; default ``chip_size // 2``. The paper uses 32
            (Vaihingen, Potsdam) or 128 (MMHunan) with 256 chips.
        batch_size: chips per forward pass.
        weights: how overlapping chip logits are summed: ``"uniform"`` (the paper), ``"gaussian"`` or
            ``"cosine"`` (down-weight chip borders).
        tta: also predict the horizontal, vertical and double flip of every chip and average the logits (4x time).
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...); default CUDA when
            available, else CPU.
        bf16: bf16 autocast: ``"auto"`` on CUDA devices that support it, True forces it (also on CPU).
        confidence: optional path of a float32 GeoTIFF with the per-pixel max softmax probability.
        cog: write Cloud Optimised GeoTIFFs (with overviews) instead of plain tiled GeoTIFFs.
        preview: optional PNG quick-look (:func:`mfpeft.engine.preview.write_preview`).
        preview_inputs: show the optical image and DSM beside the labels in the preview.
        bands: 1-based band selection per modality, e.g. ``{"optical": (1, 2, 3)}`` for an RGBIR raster.
        base_model: the frozen SAM to load an adapter folder onto (default: the one its config names).
        gdal_cache_mb: GDAL's block cache while predicting (default
            :func:`~mfpeft.data.windows.block_cache_mb`: what the sliding window re-reads, so memory does not
            grow with a cache filled by blocks that are never read again).
        prefetch: read the next batch in a background thread while the model runs. Default: on for
            accelerators (reading then overlaps GPU compute), off on CPU (the model already uses every core,
            and the extra thread's malloc arena costs memory).
        scaling: per modality (``--scaling NAME=MODE`` texts or `Scaling`), overrides the raw -> input scaling
            the model recorded, with a warning where it differs.
        probabilities: optional path of a uint8 GeoTIFF with one band per class: the softmax probabilities of
            the overlap-averaged logits, ``round(255 p)``; nodata pixels 0 and masked (an internal mask band).
        summary: optional path of a JSON summary of the run: scenes, pixels, class pixels and areas in map units,
            megapixels per second (:func:`mfpeft.engine.prediction_summary.run_summary`).
        vector: optional path of a GeoPackage of class polygons (``class_id``, ``class_name``, ``area``; the CRS
            of the class map), made from the written class map (:mod:`mfpeft.data.vectorise`; the ``vector``
            extra). ``vector_simplify`` (map units) and ``vector_min_area`` (map units squared) as there.
        section_width: a scene wider than this is stitched in column sections of this many output columns, one
            after another, each top to bottom (a multiple of 256, the outputs' GeoTIFF block; 0: the whole width
            at once). Memory then follows the section width, not the scene's; the windows that straddle a
            section boundary run once per section (with 256 chips at stride 128: 1 in 32 more at 4096). The
            class ids, confidence and probabilities do not depend on it.
    """

    chip_size: int | None = None
    stride: int | None = None
    batch_size: int = 8
    weights: WeightMode = "uniform"
    tta: bool = False
    device: str | torch.device | None = None
    bf16: Bf16 = "auto"
    confidence: str | Path | None = None
    cog: bool = False
    preview: str | Path | None = None
    preview_inputs: bool = True
    bands: Mapping[str, Sequence[int]] | None = None
    base_model: str | Path | None = None
    gdal_cache_mb: int | None = None
    prefetch: bool | None = None
    scaling: Mapping[str, Any] | None = None
    probabilities: str | Path | None = None
    summary: str | Path | None = None
    vector: str | Path | None = None
    vector_simplify: float = 0.0
    vector_min_area: float = 0.0
    section_width: int = DEFAULT_SECTION_WIDTH

    def __post_init__(self) -> None:
        if not _positive_integer(self.batch_size):
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive integer")
        if self.weights not in WEIGHT_MODES:
            raise ValueError(f"weights={self.weights!r} must be one of {WEIGHT_MODES}")
        if self.bf16 != "auto" and not isinstance(self.bf16, bool):
            raise ValueError(f"bf16 must be True, False or 'auto', got {self.bf16!r}")
        if self.vector is not None:
            from mfpeft.data.vectorise import VectorOptions, check_vector_libraries

            check_vector_libraries()
            VectorOptions(simplify=self.vector_simplify, min_area=self.vector_min_area)
        width = self.section_width
        if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0 or width % OUTPUT_BLOCK:
            raise ValueError(
                f"section_width={width!r} must be a multiple of {OUTPUT_BLOCK} (the outputs' GeoTIFF block), or 0 "
                "for the whole width at once"
            )
        if self.gdal_cache_mb is not None and not _positive_integer(self.gdal_cache_mb):
            raise ValueError(f"gdal_cache_mb={self.gdal_cache_mb!r} must be a positive integer (MiB) or None")

    @classmethod
    def of(cls, options: PredictionOptions | None, fields: Mapping[str, Any], caller: str) -> PredictionOptions:
        """``options``, or options made of the keyword ``fields`` given to ``caller`` (not both).

        Raises:
            TypeError: a field that is no option, both ``options`` and fields, or ``options`` of another type.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in fields if name not in names]
        if unknown:
            raise TypeError(
                f"{caller}() got an unexpected keyword argument {unknown[0]!r}; the options are {', '.join(names)}"
            )
        if options is None:
            return cls(**fields)
        if fields:
            given = ", ".join(fields)
            raise TypeError(f"{caller}() takes options or keyword options, not both: got options and {given}")
        if not isinstance(options, cls):
            raise TypeError(f"{caller}() options must be a PredictionOptions, got {type(options).__name__}")
        return options
