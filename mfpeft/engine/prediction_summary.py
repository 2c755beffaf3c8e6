"""The JSON summary of a prediction run (``--summary run.json``): scenes, pixels, class areas, throughput.

Built from the `mfpeft.engine.predict.PredictionResult` of each scene (duck-typed here, so that this module
imports nothing of prediction) and written by the one atomic writer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfpeft.common.files import write_json

__all__ = ["run_summary", "write_summary"]


def _areas(counts: Mapping[str, int], pixel_area: float | None) -> dict[str, float]:
    return {name: float(count) * (pixel_area if pixel_area is not None else 1.0) for name, count in counts.items()}


def _scene_summary(result: Any) -> dict[str, Any]:
    pixels = result.height * result.width
    return {
        "name": Path(result.output).stem,
        "output": str(result.output),
        "probabilities": None if result.probabilities is None else str(result.probabilities),
        "height": result.height,
        "width": result.width,
        "pixels": pixels,
        "predicted_pixels": int(sum(result.class_counts.values())),
        "chips": result.chips,
        "seconds": round(result.seconds, 3),
        "megapixels_per_second": round(result.megapixels_per_second, 4),
        "pixel_area": result.pixel_area,
        "area_unit": result.area_unit,
        "class_pixels": dict(result.class_counts),
        "class_areas": _areas(result.class_counts, result.pixel_area),
    }


def run_summary(
    results: Sequence[Any], seconds: float | None = None, skipped: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """What a run did: per scene (name, output, size, pixels, predicted pixels, chips, seconds, megapixels per
    second, class pixels and class areas: pixel count x |pixel area| in map units) and totals. ``seconds``: the
    run's wall time (default the sum of the scenes'); total areas only when every scene has the same area unit.
    ``skipped``: the outputs of scenes a resumed run found complete (listed, not counted in the totals).
    """
    scenes = [_scene_summary(r) for r in results]
    total_seconds = sum(r.seconds for r in results) if seconds is None else seconds
    pixels = sum(s["pixels"] for s in scenes)
    units = {s["area_unit"] for s in scenes}
    class_pixels: dict[str, int] = {}
    class_areas: dict[str, float] = {}
    for scene in scenes:
        for name, count in scene["class_pixels"].items():
            class_pixels[name] = class_pixels.get(name, 0) + count
            class_areas[name] = class_areas.get(name, 0.0) + scene["class_areas"][name]
    totals = {
        "scenes": len(scenes),
        "pixels": pixels,
        "predicted_pixels": sum(s["predicted_pixels"] for s in scenes),
        "seconds": round(total_seconds, 3),
        "megapixels_per_second": round(pixels / 1e6 / max(total_seconds, 1e-9), 4),
        "area_unit": units.pop() if len(units) == 1 else None,
        "class_pixels": class_pixels,
        "class_areas": class_areas if len({s["area_unit"] for s in scenes}) == 1 else None,
    }
    totals["skipped_scenes"] = len(skipped)
    return {"scenes": scenes, "skipped": [str(path) for path in skipped], "totals": totals}


def write_summary(
    path: str | Path, results: Sequence[Any], seconds: float | None = None, skipped: Sequence[str | Path] = ()
) -> Path:
    """:func:`run_summary` as indented JSON at ``path``, written atomically."""
    return write_json(Path(path).expanduser(), run_summary(results, seconds, skipped))
