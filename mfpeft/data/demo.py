"""A built-in demo data set: a procedurally generated small city, written as georeferenced GeoTIFFs.

The scene is built so that fusion is measurable: most building roofs have the colour and texture of the roads
and squares (impervious surfaces vs building only height separates), and trees have the green of the lawns
(tree vs low vegetation only height separates). Cars are small and bright, clutter is brown ground patches.
Everything is deterministic given the seed; the files are generated on first use and cached.

Layout (the ``demo`` source reads it): ``{train,validation,test}/tile{i}_{rgb,dsm,label,label_noBoundary}.tif``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.common.cache import cached_folder
from mfpeft.data.palette import IGNORE_INDEX, ISPRS_PALETTE, labels_to_rgb

__all__ = ["DEMO_SPLITS", "DEMO_VERSION", "DemoScene", "demo_data_dir", "make_demo_scene"]

DEMO_VERSION = "v2"  # bump whenever the generated content changes: caches are keyed by it
DEMO_SPLITS = {"train": (0, 1, 2, 3), "validation": (4,), "test": (5,)}
_PIXEL_SIZE = 0.5  # metres
_ORIGIN = (500_000.0, 5_400_000.0)  # UTM 32N, metres
_CRS = "EPSG:32632"

IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
_GREY = np.array([118.0, 118.0, 124.0])
_GREEN = np.array([72.0, 118.0, 52.0])
_RED_ROOF = np.array([156.0, 82.0, 64.0])
_BROWN = np.array([128.0, 100.0, 66.0])
_CAR_COLOURS = np.array([[232, 214, 40], [214, 38, 38], [236, 236, 236], [42, 64, 214]], dtype=np.float64)


class DemoScene(dict):  # type: ignore[type-arg]
    """``{"optical": uint8 (3, H, W), "dsm": float32 (1, H, W), "labels": uint8 (H, W),
    "eroded_labels": uint8 (H, W)}`` (class indices, 255 = ignore)."""


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about ``cell`` pixels: (H, W) float64."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.standard_normal((gh, gw))
    y = np.arange(height) / cell
    x = np.arange(width) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _erode_boundaries(labels: np.ndarray, radius: int = 1) -> np.ndarray:
    """Labels with pixels within ``radius`` of a class change set to ignore (ISPRS noBoundary style)."""
    out = labels.copy()
    boundary = np.zeros(labels.shape, dtype=bool)
    padded = np.pad(labels, radius, mode="edge")
    h, w = labels.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                boundary |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w] != labels
    out[boundary] = IGNORE_INDEX
    return out


@dataclasses.dataclass
class _Canvas:
    """The scene being drawn, changed in place by each layer: ``labels`` uint8 (H, W) class indices,
    ``height`` float64 (H, W) metres, ``colour`` float64 (H, W, 3) RGB before rounding."""

    labels: np.ndarray
    height: np.ndarray
    colour: np.ndarray


def make_demo_scene(size: int = 512, seed: int = 0) -> DemoScene:
    """Generate one city scene of ``size`` x ``size`` pixels (0.5 m), deterministic given ``seed``.

    The layers draw from one generator in a fixed order (terrain, shades, streets, textures, blocks, clutter,
    trees, cars, sensor noise): reordering them changes the data, which needs a new `DEMO_VERSION`.
    """
    rng = np.random.default_rng(seed)
    h = w = size
    height = 2.0 * _smooth_noise(rng, h, w, 128)  # gentle terrain, metres above the base level
    colour = np.empty((h, w, 3))
    colour[:] = _GREEN
    colour += 14.0 * _smooth_noise(rng, h, w, 24)[..., None]  # lawns and canopies vary in shade alike
    canvas = _Canvas(np.full((h, w), LOW_VEG, dtype=np.uint8), height, colour)
    rows, cols = _street_lines(rng, h), _street_lines(rng, w)
    road = np.zeros((h, w), dtype=bool)
    for a, b in rows:
        road[a:b, :] = True
    for a, b in cols:
        road[:, a:b] = True
    canvas.labels[road] = IMPERVIOUS
    grey_texture = 9.0 * _smooth_noise(rng, h, w, 12)[..., None]
    canvas.colour[road] = (_GREY + grey_texture)[road]
    for r0, r1 in _gaps(rows, h):
        for c0, c1 in _gaps(cols, w):
            for _ in range(int(rng.integers(1, 4))):
                _add_block_lot(rng, canvas, (r0, r1, c0, c1), grey_texture)
    yy, xx = np.mgrid[0:h, 0:w]
    _add_clutter(rng, canvas, yy, xx)
    _add_trees(rng, canvas, yy, xx)
    _add_cars(rng, canvas, road, rows, cols)
    canvas.colour += 7.0 * rng.standard_normal((h, w, 3))
    canvas.height += 0.2 * rng.standard_normal((h, w)) + 40.0
    optical = np.clip(np.rint(canvas.colour), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return DemoScene(
        optical=np.ascontiguousarray(optical),
        dsm=canvas.height.astype(np.float32)[None],
        labels=canvas.labels,
        eroded_labels=_erode_boundaries(canvas.labels),
    )


def _street_lines(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Streets across one axis of ``n`` pixels, a jittered grid: ``[(start, stop), ...]`` pixel ranges."""
    lines, pos = [], int(rng.integers(20, 60))
    while pos < n:
        width = int(rng.integers(10, 18))
        lines.append((pos, min(pos + width, n)))
        pos += width + int(rng.integers(100, 170))
    return lines


def _gaps(lines: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The ranges between the streets ``lines`` (and the edges of ``n`` pixels) wider than 30 pixels."""
    edges = [0] + [v for line in lines for v in line] + [n]
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] - edges[i] > 30]


def _add_block_lot(
    rng: np.random.Generator, canvas: _Canvas, block: tuple[int, int, int, int], grey_texture: np.ndarray
) -> None:
    """One lot in the city block ``(r0, r1, c0, c1)`` between streets: a building (mostly road-grey flat
    roofs) or a square at ground level (also grey); nothing when the lot does not fit."""
    r0, r1, c0, c1 = block
    bh = int(rng.integers(24, max(25, min(80, r1 - r0 - 8))))
    bw = int(rng.integers(24, max(25, min(80, c1 - c0 - 8))))
    if r1 - r0 - bh - 8 <= 4 or c1 - c0 - bw - 8 <= 4:
        return
    y = r0 + 4 + int(rng.integers(0, r1 - r0 - bh - 8))
    x = c0 + 4 + int(rng.integers(0, c1 - c0 - bw - 8))
    area = (slice(y, y + bh), slice(x, x + bw))
    kind = rng.random()
    if kind < 0.25:  # a square or car park: grey, at ground level
        canvas.labels[area] = IMPERVIOUS
        canvas.colour[area] = _GREY + grey_texture[area]
        return
    canvas.labels[area] = BUILDING
    roof = _GREY if kind < 0.8 else _RED_ROOF
    canvas.colour[area] = roof + grey_texture[area]
    canvas.height[area] += float(rng.uniform(6.0, 18.0)) + 0.15 * rng.standard_normal((bh, bw))


def _add_clutter(rng: np.random.Generator, canvas: _Canvas, yy: np.ndarray, xx: np.ndarray) -> None:
    """Clutter: brown irregular patches on the lawns (``yy``, ``xx``: (H, W) pixel coordinates)."""
    h, w = canvas.labels.shape
    for _ in range(int(rng.integers(4, 8))):
        cy, cx, r = int(rng.integers(0, h)), int(rng.integers(0, w)), float(rng.uniform(6, 14))
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & (canvas.labels == LOW_VEG)
        blob &= _smooth_noise(rng, h, w, 6) > -0.3
        canvas.labels[blob] = CLUTTER
        canvas.colour[blob] = _BROWN + 8.0 * rng.standard_normal((int(blob.sum()), 3))
        canvas.height[blob] += 0.5


def _add_trees(rng: np.random.Generator, canvas: _Canvas, yy: np.ndarray, xx: np.ndarray) -> None:
    """Trees: domes on the lawns, keeping the lawns' green (only height tells them apart)."""
    h, w = canvas.labels.shape
    for _ in range(int(rng.integers(45, 75))):
        cy, cx, r = int(rng.integers(0, h)), int(rng.integers(0, w)), float(rng.uniform(5, 13))
        y0, y1, x0, x1 = max(cy - 14, 0), min(cy + 15, h), max(cx - 14, 0), min(cx + 15, w)
        d2 = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
        crown = (d2 < r**2) & (canvas.labels[y0:y1, x0:x1] == LOW_VEG)
        sub_h = canvas.height[y0:y1, x0:x1]
        top = float(rng.uniform(5.0, 12.0))
        sub_h[crown] += top * np.sqrt(np.clip(1 - d2[crown] / r**2, 0, 1)) + 1.0
        canvas.labels[y0:y1, x0:x1][crown] = TREE


def _add_cars(
    rng: np.random.Generator,
    canvas: _Canvas,
    road: np.ndarray,
    rows: list[tuple[int, int]],
    cols: list[tuple[int, int]],
) -> None:
    """Cars: small bright rectangles wholly on the streets (``road``: (H, W) bool; ``rows``, ``cols``: the
    streets' pixel ranges)."""
    h, w = canvas.labels.shape
    for _ in range(int(rng.integers(15, 30))):
        # rng.random() is drawn first even without rows: the draw order is part of the data.
        if rng.random() < 0.5 and rows:
            a, b = rows[int(rng.integers(len(rows)))]
            y, x, ch, cw = int(rng.integers(a, max(a + 1, b - 6))), int(rng.integers(0, w - 13)), 6, 12
        elif cols:
            a, b = cols[int(rng.integers(len(cols)))]
            y, x, ch, cw = int(rng.integers(0, h - 13)), int(rng.integers(a, max(a + 1, b - 6))), 12, 6
        else:
            continue
        area = (slice(y, y + ch), slice(x, x + cw))
        if not (canvas.labels[area] == IMPERVIOUS).all() or not road[area].all():
            continue
        canvas.labels[area] = CAR
        canvas.colour[area] = _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))]
        canvas.height[area] += 1.5


def _write(path: Path, data: np.ndarray, transform: Any, nodata: float | None = None) -> None:
    import rasterio

    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": _CRS,
        "transform": transform,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def demo_data_dir(cache_dir: str | Path | None = None, seed: int = 0, size: int = 512) -> Path:
    """The demo data set's folder, generated on first use (a few seconds) and cached.

    Default location: ``cache_root() / f"demo-{DEMO_VERSION}-seed{seed}"``. Written to a temporary folder and
    renamed, so an interrupted run leaves nothing half-written.
    """
    from rasterio.transform import from_origin

    suffix = "" if size == 512 else f"-size{size}"

    def build(folder: Path) -> None:
        for split, indices in DEMO_SPLITS.items():
            (folder / split).mkdir()
            for i in indices:
                scene = make_demo_scene(size=size, seed=seed * 1000 + i)
                # Tiles sit side by side on one UTM grid, 3 per row.
                x0 = _ORIGIN[0] + (i % 3) * size * _PIXEL_SIZE
                y0 = _ORIGIN[1] - (i // 3) * size * _PIXEL_SIZE
                transform = from_origin(x0, y0, _PIXEL_SIZE, _PIXEL_SIZE)
                stem = folder / split / f"tile{i}"
                _write(Path(f"{stem}_rgb.tif"), scene["optical"], transform)
                _write(Path(f"{stem}_dsm.tif"), scene["dsm"], transform)
                for key, suffix_ in (("labels", "label"), ("eroded_labels", "label_noBoundary")):
                    rgb = labels_to_rgb(scene[key], ISPRS_PALETTE).transpose(2, 0, 1)
                    _write(Path(f"{stem}_{suffix_}.tif"), np.ascontiguousarray(rgb), transform)

    name = f"demo-{DEMO_VERSION}-seed{seed}{suffix}"
    return cached_folder(name, build, f"mfpeft demo {DEMO_VERSION} seed {seed} size {size}", cache_dir)
