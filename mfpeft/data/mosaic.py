"""Inputs of a scene beyond one local file: URLs, and tiles read as one mosaic, each written as a small VRT.

A modality of a scene may be given as

- a local file (``rgb.tif``, ``scene.vrt``): read as it is;
- a URL: ``http(s)://...`` (read through GDAL's ``/vsicurl/``), ``s3://bucket/key`` (``/vsis3/``),
  ``gs://bucket/key`` (``/vsigs/``), or any GDAL virtual file system path (``/vsicurl/...``); GDAL's usual
  configuration options (``AWS_*``, ``GDAL_HTTP_*``, ``CPL_VSIL_CURL_*``) are read from the environment;
- a mosaic of tiles (local files or URLs): a :class:`Mosaic`, a glob pattern (``tiles/*.tif``) or ``@list.txt``
  (a text file naming one tile per line).

:func:`materialise_rasters` turns each of those into a local VRT file (GDAL's documented XML format, written
here with the standard library: ``osgeo`` is not needed) in a scratch folder, so the readers downstream see one
local raster per modality. Building the VRT opens every tile (its header only), so an unreachable URL or tiles
that do not fit together fail before anything is read or written: one line naming the scene, the modality and
the tile.
"""

from __future__ import annotations

import glob
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

__all__ = ["Mosaic", "RasterInput", "gdal_path", "is_remote", "materialise_rasters", "raster_input", "vrt_sources"]

_REMOTE_SCHEMES = {"http://": "/vsicurl/", "https://": "/vsicurl/", "s3://": "/vsis3/", "gs://": "/vsigs/"}
_GLOB_CHARACTERS = set("*?[")
_PIXEL_TOLERANCE = 1e-3  # tiles must start this close to a whole pixel of the mosaic grid


@dataclass(frozen=True)
class Mosaic:
    """Tiles (local paths or URLs) read as one raster: they must share CRS, pixel size, band count, data type
    and nodata value, and lie on one pixel grid. Where tiles overlap the later one wins (as in ``gdalbuildvrt``);
    pixels no tile covers read as the nodata value (0 without one)."""

    tiles: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.tiles:
            raise ValueError("Mosaic.tiles=(): a mosaic needs at least one tile")
        for tile in self.tiles:
            if not isinstance(tile, (str, Path)) or not str(tile).strip():
                raise ValueError(f"Mosaic.tiles: {tile!r} is not a path or URL")
        object.__setattr__(self, "tiles", tuple(str(t) for t in self.tiles))


RasterInput = Path | Mosaic | tuple[Path | Mosaic, ...]
"""One modality's input once interpreted: a local file, a mosaic (or a remote file: a one-tile mosaic), or
single-band files stacked in order."""


def is_remote(text: str) -> bool:
    """Whether ``text`` names a URL or a GDAL virtual file system path (not a local file)."""
    return text.startswith("/vsi") or any(text.lower().startswith(scheme) for scheme in _REMOTE_SCHEMES)


def gdal_path(tile: str) -> str:
    """What GDAL opens for a tile: ``/vsicurl/`` + an http(s) URL, ``/vsis3/bucket/key`` for ``s3://bucket/key``,
    ``/vsigs/`` for ``gs://``; a GDAL virtual path or a local path as it is (``~`` expanded)."""
    for scheme, prefix in _REMOTE_SCHEMES.items():
        if tile.lower().startswith(scheme):
            return prefix + (tile if prefix == "/vsicurl/" else tile[len(scheme) :])
    return tile if tile.startswith("/vsi") else str(Path(tile).expanduser())


def _listed_tiles(list_file: Path) -> tuple[str, ...]:
    """The tiles a ``@list.txt`` names, one per line (blank lines and ``#`` comments skipped); relative local
    paths are relative to the list file's folder."""
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file}: tile list not found")
    lines = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines()]
    tiles = [line for line in lines if line and not line.startswith("#")]
    if not tiles:
        raise ValueError(f"{list_file}: the tile list names no tile")
    return tuple(t if is_remote(t) or Path(t).is_absolute() else str(list_file.parent / t) for t in tiles)


def raster_input(value: Any, base: Path | None = None) -> RasterInput:
    """Interpret one modality's input: a `Path` is a local file; a text a URL (a one-tile `Mosaic`),
    ``@list.txt`` or a glob pattern (a `Mosaic` of the matching files, sorted) or a local path; a sequence
    band files. Relative texts are relative to ``base`` (the folder of a scenes file), if given.

    Raises:
        FileNotFoundError: a glob pattern that matches no file, a tile list that does not exist.
    """
    if isinstance(value, (Path, Mosaic)):
        return value
    if isinstance(value, (list, tuple)):
        parts = tuple(raster_input(v, base) for v in value)
        nested = [p for p in parts if isinstance(p, tuple)]
        if nested:
            raise ValueError(f"band files {list(value)}: a band file cannot itself be a list of band files")
        return parts  # type: ignore[return-value]
    text = str(value).strip()
    if is_remote(text):
        return Mosaic((text,))
    if text.startswith("@"):
        return Mosaic(_listed_tiles(_local(text[1:], base)))
    path = _local(text, base)
    if not path.exists() and _GLOB_CHARACTERS & set(text):
        matches = sorted(glob.glob(str(path)))
        if not matches:
            raise FileNotFoundError(f"{path}: the pattern matches no file")
        return Mosaic(tuple(matches))
    return path


def _local(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return path if base is None or path.is_absolute() else base / path


# -- the tiles of a mosaic -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TileInfo:
    """What the VRT needs to know of one tile (read from its header)."""

    name: str
    source: str
    width: int
    height: int
    count: int
    dtype: str
    crs: Any
    transform: Any
    nodata: float | None
    block: tuple[int, int]


def _open_tile(tile: str, where: str) -> _TileInfo:
    source = gdal_path(tile)
    if not is_remote(tile) and not Path(source).is_file():
        raise FileNotFoundError(f"{where}: tile {tile}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(source) as src:
                dtypes = set(src.dtypes)
                if len(dtypes) > 1:
                    raise ValueError(f"{where}: tile {tile} has bands of several data types {sorted(dtypes)}")
                rows, cols = src.block_shapes[0]
                info = _TileInfo(
                    tile, source, src.width, src.height, src.count, src.dtypes[0], src.crs, src.transform,
                    src.nodata, (int(cols), int(rows)),
                )  # fmt: skip
    except RasterioError as error:
        via = f" (read as {source})" if source != tile else ""
        raise ValueError(f"{where}: cannot open tile {tile}{via}: {' '.join(str(error).split())}") from error
    if not source.startswith("/vsi"):
        object.__setattr__(info, "source", str(Path(source).resolve()))
    return info


def _same(values: Sequence[Any]) -> bool:
    return all(v == values[0] or (v != v and values[0] != values[0]) for v in values)  # NaN == NaN here


def _check_tiles(tiles: Sequence[_TileInfo], where: str) -> None:
    """Tiles of one mosaic must share CRS, band count, data type, nodata and pixel size, without rotation."""
    first = tiles[0]
    properties: list[tuple[str, Any]] = [
        ("CRS", lambda t: t.crs),
        ("band count", lambda t: t.count),
        ("data type", lambda t: t.dtype),
        ("nodata value", lambda t: t.nodata),
        ("pixel size", lambda t: (t.transform.a, t.transform.e)),
    ]
    for what, get in properties:
        for tile in tiles[1:]:
            if not _same([get(first), get(tile)]):
                raise ValueError(
                    f"{where}: tile {tile.name} has {what} {get(tile)} but tile {first.name} has {get(first)}; the "
                    "tiles of a mosaic must share CRS, band count, data type, nodata value and pixel size"
                )
    for tile in tiles:
        if tile.transform.b or tile.transform.d:
            raise ValueError(f"{where}: tile {tile.name} is rotated; mosaics of rotated tiles are not supported")
        if len(tiles) > 1 and (tile.crs is None or tile.transform.is_identity):
            raise ValueError(f"{where}: tile {tile.name} has no georeferencing; mosaic tiles need it to be placed")


def _grid(tiles: Sequence[_TileInfo], where: str) -> tuple[Any, int, int, list[tuple[int, int]]]:
    """The mosaic's transform, width, height and each tile's (col, row) offset on it."""
    first = tiles[0].transform
    if len(tiles) == 1:
        return first, tiles[0].width, tiles[0].height, [(0, 0)]
    a, e = first.a, first.e
    lefts = [t.transform.c for t in tiles]
    tops = [t.transform.f for t in tiles]
    x0 = min(lefts) if a > 0 else max(lefts)
    y0 = max(tops) if e < 0 else min(tops)
    transform = rasterio.Affine(a, 0.0, x0, 0.0, e, y0)
    offsets = []
    for tile in tiles:
        col_f, row_f = (tile.transform.c - x0) / a + 0.0, (tile.transform.f - y0) / e + 0.0  # + 0.0: no "-0.000"
        if abs(col_f - round(col_f)) > _PIXEL_TOLERANCE or abs(row_f - round(row_f)) > _PIXEL_TOLERANCE:
            raise ValueError(
                f"{where}: tile {tile.name} starts at pixel ({col_f:.3f}, {row_f:.3f}) of the mosaic grid of tile "
                f"{tiles[0].name}, not a whole pixel; the tiles of a mosaic must lie on one pixel grid"
            )
        offsets.append((round(col_f), round(row_f)))
    width = max(o[0] + t.width for o, t in zip(offsets, tiles))
    height = max(o[1] + t.height for o, t in zip(offsets, tiles))
    return transform, width, height, offsets


def _gdal_type(dtype: str) -> str:
    from rasterio.dtypes import _gdal_typename

    return str(_gdal_typename(dtype))


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _vrt_document(tiles: Sequence[_TileInfo], transform: Any, width: int, height: int, offsets: Any) -> ET.Element:
    """The VRT XML of ``tiles`` placed at ``offsets`` on a ``width`` x ``height`` grid (what gdalbuildvrt
    writes: one source per tile and band; with a nodata value a ComplexSource that skips the tile's nodata)."""
    first = tiles[0]
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if first.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = first.crs.to_wkt()
    if first.crs is not None or not transform.is_identity:
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in transform.to_gdal())
    kind = "SimpleSource" if first.nodata is None else "ComplexSource"
    for band in range(1, first.count + 1):
        element = ET.SubElement(root, "VRTRasterBand", dataType=_gdal_type(first.dtype), band=str(band))
        if first.nodata is not None:
            ET.SubElement(element, "NoDataValue").text = _number(first.nodata)
        for tile, (col, row) in zip(tiles, offsets):
            source = ET.SubElement(element, kind)
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = tile.source
            ET.SubElement(source, "SourceBand").text = str(band)
            properties = {"RasterXSize": str(tile.width), "RasterYSize": str(tile.height)}
            properties.update(DataType=_gdal_type(tile.dtype))
            properties.update(BlockXSize=str(tile.block[0]), BlockYSize=str(tile.block[1]))
            ET.SubElement(source, "SourceProperties", properties)
            extent = {"xSize": str(tile.width), "ySize": str(tile.height)}
            ET.SubElement(source, "SrcRect", {"xOff": "0", "yOff": "0", **extent})
            ET.SubElement(source, "DstRect", {"xOff": str(col), "yOff": str(row), **extent})
            if first.nodata is not None:
                ET.SubElement(source, "NODATA").text = _number(first.nodata)
    return root


def write_mosaic_vrt(mosaic: Mosaic, path: Path, where: str) -> Path:
    """Open every tile of ``mosaic``, check that they fit together and write their VRT at ``path``.

    Args:
        where: what the messages name, e.g. ``"scene 'a' modality 'optical'"``.

    Raises:
        ValueError: a tile that cannot be opened (an unreachable URL, not a raster) or that does not fit the
            first one (CRS, band count, data type, nodata, pixel size, grid), naming ``where`` and the tile.
        FileNotFoundError: a local tile that does not exist.
    """
    tiles = [_open_tile(tile, where) for tile in mosaic.tiles]
    _check_tiles(tiles, where)
    transform, width, height, offsets = _grid(tiles, where)
    document = ET.ElementTree(_vrt_document(tiles, transform, width, height, offsets))
    document.write(path, encoding="utf-8")
    return path


def _materialise(value: RasterInput, folder: Path, stem: str, where: str) -> Path | tuple[Path, ...]:
    if isinstance(value, Path):
        return value
    if isinstance(value, Mosaic):
        return write_mosaic_vrt(value, folder / f"{stem}.vrt", where)
    return tuple(
        _materialise(part, folder, f"{stem}-band{index}", f"{where} band file {index}")  # type: ignore[misc]
        for index, part in enumerate(value, start=1)
    )


def materialise_rasters(
    rasters: Mapping[str, Any], folder: Path, scene: str, base: Path | None = None
) -> dict[str, Path | tuple[Path, ...]]:
    """``{modality: input}`` with every URL and mosaic written as a VRT in ``folder`` (local files as they are).

    ``scene`` names the scene in messages and the VRT files; ``base`` is the folder relative texts are in.
    A None input is left out (the model's check names a missing modality).
    """
    local: dict[str, Path | tuple[Path, ...]] = {}
    for index, (modality, value) in enumerate(rasters.items()):
        if value is None:
            continue
        where = f"scene {scene!r} modality {modality!r}"
        stem = f"{len(list(folder.iterdir()))}-{index}-{_safe(scene)}-{_safe(modality)}"
        try:
            parsed = raster_input(value, base)
        except (FileNotFoundError, ValueError) as error:
            raise type(error)(f"{where}: {error}") from error
        local[str(modality)] = _materialise(parsed, folder, stem, where)
    return local


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


def vrt_sources(path: Path) -> list[Path]:
    """The local files a VRT reads (its ``SourceFilename`` elements, relative ones resolved against the VRT's
    folder); none for another raster, a VRT that cannot be parsed, or remote (``/vsi...``) sources."""
    if path.suffix.lower() != ".vrt" or not path.is_file():
        return []
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    found = []
    for element in root.iter("SourceFilename"):
        text = (element.text or "").strip()
        if not text or text.startswith("/vsi"):
            continue
        relative = element.get("relativeToVRT", "0") == "1"
        found.append(path.parent / text if relative else Path(text))
    return found
