"""Polygons of a class map: a predicted class-id GeoTIFF -> a GeoPackage layer of class polygons, CRS kept.

Through the optional ``vector`` extra (``pip install "mfpeft[vector]"``: pyogrio, which bundles GDAL's vector
drivers, and shapely). The class map is read and polygonised in blocks of ``block`` x ``block`` pixels
(`rasterio.features.shapes`, 4-connected), so memory stays flat for any scene; a region that crosses a block edge
becomes one polygon per block (the areas add up exactly). Pixels at the map's nodata value (255, the ignore
index) give no polygon. ``simplify`` (map units) simplifies each polygon with its topology kept; ``min_area`` (map
units squared, after simplification) drops smaller polygons.

Each feature: ``class_id`` (int), ``class_name`` (str), ``area`` (map units squared). The layer is written to a
temporary sibling and renamed into place, so an interrupted run leaves nothing at the output path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from ..common.classes import IGNORE_INDEX
from ..common.files import atomic_path
from ..common.validation import check_number

LAYER = "labels"


@dataclass(frozen=True)
class VectorOptions:
    """``simplify`` tolerance (map units, 0 = none), ``min_area`` (map units squared, 0 = keep all), ``block``."""

    simplify: float = 0.0
    min_area: float = 0.0
    block: int = 4096

    def __post_init__(self) -> None:
        check_number("vector_simplify", self.simplify, 0)
        check_number("vector_min_area", self.min_area, 0)
        check_number("block", self.block, 16, integer=True)


@dataclass
class VectorSummary:
    """What was written: the path, polygons and polygon area per class name."""

    path: Path
    polygons: int = 0
    class_areas: dict[str, float] = field(default_factory=dict)


def check_vector_libraries() -> None:
    """ValueError (how to install them) unless the vector extra's libraries import."""
    _vector_libraries()


def _vector_libraries() -> tuple[Any, Any]:
    try:
        import pyogrio.raw
        import shapely
        import shapely.geometry
    except ImportError:
        raise ValueError(
            'vector output needs the optional vector libraries: pip install "mfpeft[vector]" (pyogrio, shapely)'
        ) from None
    return pyogrio, shapely


def _blocks(height: int, width: int, block: int) -> Iterator[Window]:
    for row in range(0, height, block):
        for col in range(0, width, block):
            yield Window(col, row, min(block, width - col), min(block, height - row))


def _block_polygons(
    source: Any, window: Window, options: VectorOptions, shapely: Any
) -> tuple[list[bytes], list[int], list[float]]:
    """(WKB polygons, class ids, areas) of one block of the class map."""
    from rasterio.features import shapes

    data = source.read(1, window=window)
    nodata = IGNORE_INDEX if source.nodata is None else int(source.nodata)
    mask = data != nodata
    geometries, ids, areas = [], [], []
    for geometry, value in shapes(data, mask=mask, transform=source.window_transform(window), connectivity=4):
        polygon = shapely.geometry.shape(geometry)
        if options.simplify > 0:
            polygon = polygon.simplify(options.simplify, preserve_topology=True)
        if polygon.is_empty or polygon.area < options.min_area or polygon.area == 0:
            continue
        geometries.append(shapely.to_wkb(polygon))
        ids.append(int(value))
        areas.append(float(polygon.area))
    return geometries, ids, areas


def write_class_polygons(
    class_map: str | Path, output: str | Path, class_names: Sequence[str], options: VectorOptions | None = None
) -> VectorSummary:
    """Polygonise ``class_map`` into a GeoPackage at ``output`` (module docstring); returns what was written.

    Raises:
        ValueError: the vector extra is not installed, or the class map holds an id outside ``class_names``.
    """
    pyogrio, shapely = _vector_libraries()
    options = options or VectorOptions()
    summary = VectorSummary(Path(output))
    with rasterio.open(class_map) as source, atomic_path(output) as staged:
        crs = source.crs.to_wkt() if source.crs else None
        written = False
        for window in _blocks(source.height, source.width, options.block):
            geometries, ids, areas = _block_polygons(source, window, options, shapely)
            bad = sorted({i for i in ids if not 0 <= i < len(class_names)})
            if bad:
                raise ValueError(f"{class_map}: class ids {bad} are not among the model's {len(class_names)} classes")
            if not geometries and written:
                continue
            names = [class_names[i] for i in ids]
            pyogrio.raw.write(
                str(staged),
                np.array(geometries, dtype=object),
                [np.asarray(ids, dtype=np.int32), np.asarray(names, dtype=object), np.asarray(areas)],
                ["class_id", "class_name", "area"],
                layer=LAYER,
                driver="GPKG",
                geometry_type="Polygon",
                crs=crs,
                append=written,
            )
            written = True
            summary.polygons += len(geometries)
            for name, area in zip(names, areas):
                summary.class_areas[name] = summary.class_areas.get(name, 0.0) + area
    return summary
