"""Reading a whole scene window by window for prediction: opening it, checking it, and batches read ahead.

:func:`open_scene` opens the modalities of a scene with a :class:`~mfpeft.data.raster.TileReader` (every
modality aligned onto the first one's grid, scaled as the model was trained) under a GDAL block cache sized to
what the sliding window reads again (:func:`block_cache_mb`), checks the band counts and warns about values
outside the trained range (:func:`warn_outside_trained_range`). :func:`read_batches` reads the chips of
batches of windows into reused buffers, the next batch in a background thread while the model runs.
:meth:`Scene.output_rows` turns finished rows of the usable area into full-width output rows, nodata where
the first raster holds none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import NotGeoreferencedWarning

from mfpeft.common.classes import IGNORE_INDEX
from mfpeft.common.scaling import Scaling
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.tile import Tile, describe_ref, raster_files
from mfpeft.data.writer import OUTPUT_BLOCK

__all__ = [
    "OUTSIDE_WARNING_SHARE",
    "Scene",
    "block_cache_mb",
    "open_scene",
    "read_batches",
    "warn_outside_trained_range",
]

OUTSIDE_WARNING_SHARE = 0.5
"""Above this share of a band's sampled values outside the raw range the model was trained on, a warning."""
_SAMPLE_GRID, _SAMPLE_SIZE = 4, 256  # a 4 x 4 grid of 256 x 256 windows spread over the scene


def _sample_windows(height: int, width: int) -> list[ChipWindow]:
    """Up to 16 windows of 256 x 256 (less on a smaller scene) evenly spread over a ``height`` x ``width`` grid."""
    h, w = min(_SAMPLE_SIZE, height), min(_SAMPLE_SIZE, width)
    steps = range(_SAMPLE_GRID)
    rows = sorted({round(i * (height - h) / (_SAMPLE_GRID - 1)) for i in steps})
    cols = sorted({round(i * (width - w) / (_SAMPLE_GRID - 1)) for i in steps})
    return [ChipWindow(r, c, h, w) for r in rows for c in cols]


def _outside_shares(reader: TileReader, modality: str, bounds: Any, windows: Sequence[ChipWindow]) -> Any:
    """(share of the finite sampled values outside ``bounds`` per band, low per band, high per band)."""
    values = np.concatenate(
        [reader.read_raw(modality, w).reshape(len(reader.bands[modality]), -1) for w in windows], axis=1
    )
    low, high = (np.broadcast_to(np.asarray(b, np.float64), (values.shape[0],)) for b in bounds)
    finite = np.isfinite(values)
    outside = finite & ((values < low[:, None]) | (values > high[:, None]))
    return outside.sum(axis=1) / np.maximum(finite.sum(axis=1), 1), low, high


def warn_outside_trained_range(reader: TileReader) -> None:
    """One warning line per modality whose band(s) mostly (over half of the finite values of a sample of
    :func:`_sample_windows`) lie outside the raw range the model's scaling maps to [0, 1]
    (`Scaling.trained_range`): values the model never saw in training (another sensor, band order or unit),
    which a range saturates at 0 or 1 and divide / linear carry outside [0, 1]. Cheap: 16 small windows."""
    windows = _sample_windows(reader.height, reader.width)
    for m, scaling in reader.scaling.items():
        bounds = scaling.trained_range()
        if bounds is None:  # min-max, percentile, zscore follow the scene itself; none is anything
            continue
        shares, low, high = _outside_shares(reader, m, bounds, windows)
        bad = [i for i, share in enumerate(shares) if share > OUTSIDE_WARNING_SHARE]
        if not bad:
            continue
        same = len({(low[i], high[i]) for i in bad}) == 1
        listed = ", ".join(
            f"band {reader.bands[m][i]} ({100 * shares[i]:.1f} %"
            + (")" if same else f", outside {low[i]:g}..{high[i]:g})")
            for i in bad
        )
        where = f" lie outside {low[bad[0]]:g}..{high[bad[0]]:g}" if same else " lie outside"
        effect = "saturate at 0 or 1" if scaling.mode == "range" and scaling.clip else "leave [0, 1]"
        warnings.warn(
            f"{describe_ref(reader.tile.modalities[m])}: modality {m!r} {listed} of the sampled pixels{where}, the "
            f"raw values its scaling {scaling.describe()} maps to [0, 1] (what the model was trained on), so its "
            f"inputs {effect}: another sensor, band order or unit? (--bands {m}=..., --scaling {m}=MODE)",
            UserWarning,
            stacklevel=2,
        )


def check_band_counts(reader: TileReader, channels: Mapping[str, int]) -> None:
    """Each modality reads as many bands as the model takes (``channels``), or a ValueError naming the bands."""
    for m in reader.modalities:
        if len(reader.bands[m]) != channels[m]:
            first_bands = ",".join(str(b) for b in range(1, channels[m] + 1))
            raise ValueError(
                f"{describe_ref(reader.tile.modalities[m])}: modality {m!r} reads {len(reader.bands[m])} band(s) "
                f"{list(reader.bands[m])} but "
                f"the model takes {channels[m]}; choose bands, e.g. bands={{{m!r}: "
                f"{tuple(range(1, channels[m] + 1))}}} (--bands {m}={first_bands})"
            )


def block_cache_mb(
    rasters: Iterable[Path], chip_size: int, output_pixel_bytes: int = 1, section_width: int | None = None
) -> int:
    """GDAL block cache (MiB) that holds every block a row of sliding windows reads again, and no more.

    Consecutive window rows share up to ``chip_size`` scene rows; with 256-row blocks the blocks of
    ``chip_size + 2 * 256`` rows of every input (all bands, native dtype) and of the output rasters
    (``output_pixel_bytes`` per pixel: 1 for class ids, 5 with the confidence) suffice, across the columns a
    section's windows read (``section_width`` plus a chip and a block on each side; None: the whole width).
    Clamped to 16..512 MiB.
    """
    need, share, first_width = 0.0, 1.0, None
    for path in rasters:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if first_width is None:  # the output grid's: sections are counted in its columns
                    first_width = src.width
                    if section_width:
                        share = min(1.0, (section_width + 2 * (chip_size + OUTPUT_BLOCK)) / src.width)
                pixel_bytes = sum(np.dtype(dtype).itemsize for dtype in src.dtypes)
                need += (chip_size + 2 * OUTPUT_BLOCK) * src.width * share * pixel_bytes
    need += (chip_size + 2 * OUTPUT_BLOCK) * (first_width or 0) * share * output_pixel_bytes
    return int(min(max(math.ceil(need / 2**20) + 8, 16), 512))


def _may_hold_nodata(files: Sequence[Path]) -> bool:
    """Whether any of these rasters can hold a missing pixel: a nodata value, or float values (NaN)."""
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.nodata is not None or np.dtype(src.dtypes[0]).kind == "f":
                    return True
    return False


@dataclass
class Scene:
    """An opened scene: the aligned reader, the nodata-mask reader of the first raster (None when it cannot
    hold a missing pixel), and the output grid (the first raster's, :attr:`TileReader.profile`)."""

    reader: TileReader
    mask_reader: TileReader | None
    profile: dict[str, Any]

    @property
    def height(self) -> int:
        return int(self.profile["height"])

    @property
    def width(self) -> int:
        return int(self.profile["width"])

    @property
    def row0(self) -> int:
        """Top row of the reader's usable area (the overlap of all rasters) on the output grid."""
        return self.reader.window.row

    @property
    def col0(self) -> int:
        return self.reader.window.col

    def usable_columns(self, section: tuple[int, int]) -> tuple[int, int] | None:
        """The reader's columns ``[start, stop)`` inside output columns ``section``; None where it has none."""
        start = max(section[0] - self.col0, 0)
        stop = min(section[1] - self.col0, self.reader.width)
        return (start, stop) if start < stop else None

    def output_rows(
        self,
        row: int,
        class_ids: npt.NDArray[np.uint8],
        confidence: npt.NDArray[np.float32] | None,
        col: int = 0,
        section: tuple[int, int] | None = None,
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None]:
        """Rows ``row..`` and columns ``col..`` of the usable area, ``(rows, w)``, as the output rows of the
        output columns ``section`` (default: all), ``(rows, section width)``: nodata (`IGNORE_INDEX`,
        confidence 0) where the first raster is nodata in every band and outside the usable area. A confidence
        of None (not asked for) stays None."""
        reader, (rows, width) = self.reader, class_ids.shape
        if self.mask_reader is not None:
            window = ChipWindow(row, col, rows, width)  # the mask reader reads the reader's window
            missing = np.isnan(self.mask_reader.read_raw(reader.modalities[0], window)).all(axis=0)
            if missing.any():
                class_ids = np.where(missing, np.uint8(IGNORE_INDEX), class_ids)
                if confidence is not None:
                    confidence = np.where(missing, np.float32(0), confidence)
        first, last = (0, self.width) if section is None else section
        offset = self.col0 + col - first
        if offset == 0 and width == last - first:
            return class_ids, confidence
        full_ids = np.full((rows, last - first), IGNORE_INDEX, np.uint8)
        full_ids[:, offset : offset + width] = class_ids
        if confidence is None:
            return full_ids, None
        full_confidence = np.zeros((rows, last - first), np.float32)
        full_confidence[:, offset : offset + width] = confidence
        return full_ids, full_confidence

    def output_probabilities(
        self,
        probabilities: npt.NDArray[np.uint8],
        class_ids: npt.NDArray[np.uint8],
        col: int = 0,
        section: tuple[int, int] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """Quantised probabilities ``(L, rows, w)`` of the usable area from column ``col`` as the output rows
        ``(L, rows, section width)``, 0 where the ``class_ids`` of :meth:`output_rows` are nodata."""
        first, last = (0, self.width) if section is None else section
        offset = self.col0 + col - first
        full = np.zeros((probabilities.shape[0], class_ids.shape[0], last - first), np.uint8)
        full[:, :, offset : offset + probabilities.shape[2]] = probabilities
        full[:, class_ids == IGNORE_INDEX] = 0
        return full


def open_reader(tile: Tile, chip_size: int, scaling: Mapping[str, Scaling], channels: Mapping[str, int]) -> TileReader:
    """The scene's aligned, scaled reader, its band counts checked against ``channels`` (the model's per
    modality), with a warning for each modality outside the trained range; the caller closes it."""
    reader = TileReader(tile, list(channels), chip_size=chip_size, scaling=scaling, labels="none", mask_nodata=False)
    try:
        check_band_counts(reader, channels)
        warn_outside_trained_range(reader)
    except BaseException:
        reader.close()
        raise
    return reader


def open_scene(
    stack: ExitStack,
    tile: Tile,
    *,
    chip_size: int,
    scaling: Mapping[str, Scaling],
    channels: Mapping[str, int],
    cache_mb: int | None = None,
    output_pixel_bytes: int = 1,
    section_width: int | None = None,
) -> Scene:
    """Open every input of ``tile`` (closed by ``stack``) under a GDAL block cache of ``cache_mb`` (default
    :func:`block_cache_mb`), checked as :func:`open_reader` does; ``channels`` lists the modalities in order."""
    if cache_mb is None:
        files = [f for ref in tile.modalities.values() for f in raster_files(ref)]
        cache_mb = block_cache_mb(files, chip_size, output_pixel_bytes, section_width)
    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=int(cache_mb)))
    reader = stack.enter_context(open_reader(tile, chip_size, scaling, channels))
    first = reader.modalities[0]
    mask_reader = None
    # Integer rasters without a nodata value cannot hold a missing pixel: skip the mask reads.
    if _may_hold_nodata(raster_files(tile.modalities[first])):
        # The first raster alone, unscaled, on the reader's window: the same pixels as the reader's reads.
        mask_tile = Tile(
            name=tile.name,
            modalities={first: tile.modalities[first]},
            bands={first: reader.bands[first]},
            window=reader.window,
        )
        mask_reader = stack.enter_context(
            TileReader(mask_tile, [first], scaling={first: Scaling(mode="none")}, labels="none")
        )
    return Scene(reader, mask_reader, reader.profile)


def read_batches(
    reader: TileReader,
    batches: Sequence[Sequence[ChipWindow]],
    channels: Mapping[str, int],
    *,
    batch_size: int,
    prefetch: bool,
) -> Generator[dict[str, npt.NDArray[np.float32]], None, None]:
    """The scaled chips of each batch, ``{modality: (batch_size, C, S, S)}``, read ahead in a thread if asked.

    Two reused host buffers per modality (fresh multi-MB arrays per batch fragment the C heap): with
    ``prefetch`` a background thread reads the next batch into one while the model runs on the other.
    Only that thread touches ``reader``; the nodata mask has its own reader (GDAL handles are not thread-safe).
    A yielded buffer is valid until the next one is asked for; rows past a short last batch are stale.
    """
    size = int(reader.chip_size or 0)
    buffers = [{m: np.zeros((batch_size, c, size, size), np.float32) for m, c in channels.items()} for _ in "ab"]

    def read_batch(index: int) -> dict[str, npt.NDArray[np.float32]]:
        target = buffers[index % 2]
        for i, window in enumerate(batches[index]):
            for m, values in reader.read(window)["pixel_values"].items():
                target[m][i] = values
        return target

    if not prefetch:
        yield from (read_batch(index) for index in range(len(batches)))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfpeft-read") as pool:
        pending = pool.submit(read_batch, 0) if batches else None
        for index in range(len(batches)):
            if pending is None:  # unreachable: submitted for every index < len(batches)
                raise RuntimeError("prefetch lost a batch")
            host = pending.result()
            pending = pool.submit(read_batch, index + 1) if index + 1 < len(batches) else None
            yield host
