"""The raster writer of predictions: a class-id GeoTIFF (and its confidence) that appears whole, or not at all.

:class:`PredictionWriter` owns everything about the files a prediction leaves: the GeoTIFF profile (the first
raster's grid, :attr:`mfpeft.data.raster.TileReader.profile`, tiled and deflate-compressed), the colour table
(:func:`colour_table`), the class names as tags, the optional float32 confidence raster, the conversion to a
Cloud Optimised GeoTIFF, the free-space checks and the rename into place. Every file is written at a temporary
sibling (`mfpeft.common.files.atomic_path`) and renamed when all of them are complete; on any failure or
interrupt every temporary is removed, so the output paths are untouched, and temporaries of killed runs are
removed by the next run for the same output.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from mfpeft.common.classes import IGNORE_INDEX, palette_or_default
from mfpeft.common.files import atomic_path, stale_temporaries, temporary_sibling

__all__ = ["OUTPUT_BLOCK", "InsufficientSpaceError", "PredictionWriter", "colour_table", "output_profile"]

OUTPUT_BLOCK = 256
"""GeoTIFF tile size (pixels) of the outputs, and the rows GDAL may hold unflushed."""


# -- disk space ----------------------------------------------------------------------------------------------
class InsufficientSpaceError(OSError):
    """The disk of an output folder is (about to be) full: one line naming the outputs, bytes needed and free.

    An `OSError` without ``errno``, so that :func:`mfpeft.errors.run_command` prints this message itself.
    """


_SPACE_MARGIN = 64 * 1024  # GeoTIFF header, tile offsets and the last partly filled tiles


def _bytes(count: int, detail: str = "") -> str:
    """``5,242,880 bytes (5.0 MiB)``, or ``... (5.0 MiB; detail)``."""
    size, unit = float(count), "bytes"
    for name in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, name
    notes = ([f"{size:.1f} {unit}"] if unit != "bytes" else []) + ([detail] if detail else [])
    return f"{count:,} bytes" + (f" ({'; '.join(notes)})" if notes else "")


def _is_enospc(error: BaseException) -> bool:
    """Whether ``error`` or an exception it was raised from is an ENOSPC `OSError`."""
    chained: BaseException | None = error
    while chained is not None:
        if isinstance(chained, OSError) and chained.errno == errno.ENOSPC:
            return True
        chained = chained.__cause__ or chained.__context__
    return False


class DiskSpace:
    """Free-space checks before each write, so a full disk ends in one line and not in GDAL's write errors.

    The estimate is the uncompressed size, height x width x bytes per pixel of the outputs on one file system
    (1 for class ids, 4 for confidence; with ``cog`` x 7/3: the plain file and its COG copy with overviews
    exist at once). Deflate usually writes much less, so a band is refused only when the free space is below
    what that band could take uncompressed, plus the row of tiles GDAL may not have flushed yet.
    """

    def __init__(self, outputs: Sequence[tuple[Path, int]], height: int, width: int, cog: bool = False) -> None:
        self.height, self.width, self.cog = height, width, cog
        self.groups: dict[int, list[tuple[Path, int]]] = {}  # st_dev of the folder -> (output, bytes per pixel)
        for path, pixel_bytes in outputs:
            self.groups.setdefault(os.stat(path.parent).st_dev, []).append((path, pixel_bytes))

    def before_rows(self, rows: int) -> None:
        """Raise `InsufficientSpaceError` if writing ``rows`` full-width rows might fill a disk."""
        for group in self.groups.values():
            free = shutil.disk_usage(group[0][0].parent).free
            if free < (rows + OUTPUT_BLOCK) * self.width * sum(b for _, b in group) + _SPACE_MARGIN:
                raise self._error(group, free)

    def before_copy(self, temps: Mapping[Path, Path]) -> None:
        """Before the COG copies of the written ``{final: temporary}`` files: each copy takes about 4/3 of it."""
        for group in self.groups.values():
            free = shutil.disk_usage(group[0][0].parent).free
            need = sum(temps[path].stat().st_size for path, _ in group if path in temps) * 4 // 3 + _SPACE_MARGIN
            if free < need:
                raise self._error(group, free)

    def full_error(self, error: BaseException) -> InsufficientSpaceError | None:
        """The error to raise for a failed write: ``error`` itself if it is one, a new one when a disk is
        full (ENOSPC, or GDAL's "Write failed" with almost no space left), else None."""
        if isinstance(error, InsufficientSpaceError):
            return error
        if not isinstance(error, OSError):
            return None
        enospc = _is_enospc(error)
        for group in self.groups.values():
            free = shutil.disk_usage(group[0][0].parent).free
            if enospc or free < OUTPUT_BLOCK * self.width * sum(b for _, b in group) + _SPACE_MARGIN:
                return self._error(group, free)
        return None

    def _error(self, group: Sequence[tuple[Path, int]], free: int) -> InsufficientSpaceError:
        pixel_bytes = sum(b for _, b in group)
        need = self.height * self.width * pixel_bytes * (7 if self.cog else 3) // 3
        names = " and ".join(str(path) for path, _ in group)
        how = f"{self.height} x {self.width} pixels x {pixel_bytes} byte(s), uncompressed" + (
            ", x 7/3 for the COG copy" if self.cog else ""
        )
        return InsufficientSpaceError(
            f"{names}: not enough disk space: writing needs up to {_bytes(need, how)} but "
            f"{_bytes(free)} are free in {group[0][0].parent}; nothing was written; free some space or "
            "choose an output folder on another disk"
        )


@contextmanager
def _silenced_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: libtiff prints a line per block it cannot flush there
    itself, bypassing Python (used only while discarding the files of a write that already failed)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# -- the rasters ---------------------------------------------------------------------------------------------
def colour_table(palette: Sequence[Sequence[int]] | None, num_labels: int) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table: the palette's colour per class id (the default palette when the model has none, or
    an all-black placeholder: `mfpeft.common.classes.palette_or_default`), transparent black for nodata
    (`IGNORE_INDEX`)."""
    colours: dict[int, tuple[int, int, int, int]] = {
        k: (r, g, b, 255) for k, (r, g, b) in enumerate(palette_or_default(palette, num_labels))
    }
    colours[IGNORE_INDEX] = (0, 0, 0, 0)
    return colours


def output_profile(grid: Mapping[str, Any]) -> dict[str, Any]:
    """The outputs' GeoTIFF profile: ``grid`` (a single-band uint8 profile on the first raster's grid,
    :attr:`~mfpeft.data.raster.TileReader.profile`), tiled and deflate-compressed."""
    return {
        **grid,
        "driver": "GTiff",
        "count": 1,
        "dtype": "uint8",
        "tiled": True,
        "blockxsize": OUTPUT_BLOCK,
        "blockysize": OUTPUT_BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }


def _open_class_raster(path: Path, profile: Mapping[str, Any], names: Sequence[str], palette: Any) -> Any:
    dst = rasterio.open(path, "w", **profile, nodata=IGNORE_INDEX)
    dst.write_colormap(1, colour_table(palette, len(names)))
    dst.set_band_description(1, "class id")
    dst.update_tags(CLASS_NAMES=json.dumps(list(names)), NODATA_MEANING="no prediction (input nodata)")
    dst.update_tags(1, **{f"CLASS_{k}": name for k, name in enumerate(names)})
    return dst


def _open_confidence_raster(path: Path, profile: Mapping[str, Any]) -> Any:
    dst = rasterio.open(path, "w", **{**profile, "dtype": "float32", "predictor": 3}, nodata=0.0)
    dst.set_band_description(1, "confidence")
    dst.update_tags(1, MEANING="max softmax probability of the overlap-averaged logits; 0 = nodata")
    return dst


def _open_probability_raster(path: Path, profile: Mapping[str, Any], names: Sequence[str]) -> Any:
    """One uint8 band per class, ``round(255 p)``; nodata pixels are 0 and masked (an internal mask band: every
    value 0..255 is a probability, so no value is left to mean nodata)."""
    dst = rasterio.open(path, "w", **{**profile, "count": len(names)})
    for band, name in enumerate(names, start=1):
        dst.set_band_description(band, name)
    dst.update_tags(
        CLASS_NAMES=json.dumps(list(names)),
        MEANING="softmax probability of the overlap-averaged logits per class, round(255 p); nodata: the mask",
    )
    return dst


def _to_cog(source: Path, target: Path, resampling: str) -> None:
    from rasterio.shutil import copy as raster_copy

    major, minor = (int(v) for v in rasterio.__gdal_version__.split(".")[:2])
    if (major, minor) < (3, 1):
        raise ValueError(
            f"cog=True needs GDAL >= 3.1 for the COG driver; this rasterio has {rasterio.__gdal_version__}"
        )
    raster_copy(
        str(source),
        str(target),
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=str(OUTPUT_BLOCK),
        OVERVIEW_RESAMPLING=resampling,
        BIGTIFF="IF_SAFER",
    )


def _row_chunks(start: int, stop: int, step: int = OUTPUT_BLOCK) -> Iterator[tuple[int, int]]:
    for row in range(start, stop, step):
        yield row, min(step, stop - row)


def _add_counts(counts: npt.NDArray[np.int64], class_ids: npt.NDArray[np.uint8], rows: int = 16) -> None:
    """``counts[k] += (class_ids == k).sum()``, in row chunks to keep the int64 temporaries small."""
    for row in range(0, class_ids.shape[0], rows):
        counts += np.bincount(class_ids[row : row + rows].ravel(), minlength=256)[: counts.shape[0]]


class PredictionWriter:
    """The output rasters of one prediction, written at temporary names and renamed into place together.

    A context manager: on leaving it without an error every file is renamed into place; on an error or an
    interrupt every temporary is removed (a full disk becomes one `InsufficientSpaceError` naming the outputs,
    the bytes needed and the bytes free)::

        with PredictionWriter(output, class_names=names, palette=palette, confidence=conf) as writer:
            writer.open(reader.profile)               # the first raster's grid
            writer.write(row, class_ids, confidence)  # full-width rows, top to bottom
            writer.close()                            # flushed; converted to COG with ``cog``
            writer.add(preview, draw)                 # another file, drawn from ``writer.temporary_output``

    Args:
        output: the class-id GeoTIFF (uint8, `IGNORE_INDEX` = nodata, colour table, class names as tags).
        class_names: one per class id; palette: one RGB colour per class (default: the default palette).
        confidence: optionally a float32 GeoTIFF of the per-pixel confidence (0 = nodata).
        probabilities: optionally a uint8 GeoTIFF, one band per class, of the quantised probabilities (nodata:
            0 and masked).
        cog: Cloud Optimised GeoTIFFs (with overviews) instead of plain tiled GeoTIFFs.
        threads: compress blocks on this many threads (GDAL's ``NUM_THREADS``): for a writer that has the
            cores to itself, such as the one assembling the bands several processes computed.
    """

    def __init__(
        self,
        output: Path,
        *,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]] | None = None,
        confidence: Path | None = None,
        cog: bool = False,
        probabilities: Path | None = None,
        threads: int = 1,
    ) -> None:
        self.output, self.confidence, self.cog = output, confidence, cog
        self.threads = int(threads)
        self.probabilities = probabilities
        self.class_names, self.palette = list(class_names), palette
        self.counts = np.zeros(len(self.class_names), dtype=np.int64)
        """Written pixels per class id (nodata excluded)."""
        self.width = 0
        self.space: DiskSpace | None = None
        self._files = ExitStack()  # the atomic_path of every output: renamed on close, removed on error
        self._rasters = ExitStack()  # the open datasets, class ids first
        self._datasets: list[Any] = []
        self._temps: dict[Path, Path] = {}  # final -> its atomic temporary
        self._written: dict[Path, Path] = {}  # final -> where its raster is written (the temporary, or for a COG
        self._closed = False  # a plain sibling that the COG copy into the temporary replaces)

    @property
    def finals(self) -> list[Path]:
        """The output rasters: the class ids, then the confidence and the probabilities if asked for."""
        extra = [p for p in (self.confidence, self.probabilities) if p is not None]
        return [self.output, *extra]

    def _pixel_bytes(self, final: Path) -> int:
        return 1 if final == self.output else 4 if final == self.confidence else len(self.class_names)

    @property
    def temporary_output(self) -> Path:
        """The class-id raster at its temporary name (complete once :meth:`close` returned)."""
        return self._temps[self.output]

    def __enter__(self) -> PredictionWriter:
        for final in self.finals:
            for stale in stale_temporaries(final):
                with suppress(FileNotFoundError):
                    stale.unlink()
        return self

    def open(self, grid: Mapping[str, Any]) -> None:
        """Create the rasters on ``grid`` (:attr:`~mfpeft.data.raster.TileReader.profile`) at temporary names."""
        profile = output_profile(grid)
        if self.threads > 1:
            profile["num_threads"] = str(self.threads)
        self.width = int(profile["width"])
        pixel_bytes = {final: self._pixel_bytes(final) for final in self.finals}
        self.space = DiskSpace(list(pixel_bytes.items()), int(profile["height"]), self.width, cog=self.cog)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for final in self.finals:
                self._temps[final] = self._files.enter_context(atomic_path(final))
                self._written[final] = self._temps[final]
                if self.cog:
                    self._written[final] = temporary_sibling(final)
                    self._files.callback(self._written[final].unlink, missing_ok=True)
                if final == self.output:
                    dst = _open_class_raster(self._written[final], profile, self.class_names, self.palette)
                elif final == self.confidence:
                    dst = _open_confidence_raster(self._written[final], profile)
                else:
                    dst = _open_probability_raster(self._written[final], profile, self.class_names)
                self._datasets.append(self._rasters.enter_context(dst))

    def write(
        self,
        row: int,
        class_ids: npt.NDArray[np.uint8],
        confidence: npt.NDArray[np.float32] | None,
        probabilities: npt.NDArray[np.uint8] | None = None,
        col: int = 0,
    ) -> None:
        """Rows ``row..`` and columns ``col..`` of class ids ``(rows, w)`` (and confidence, and probabilities
        ``(num_classes, rows, w)``), counted in :attr:`counts`; ``w`` is the full width by default."""
        _add_counts(self.counts, class_ids)
        self._write(row, class_ids, confidence, probabilities, col)

    def _write(
        self,
        row: int,
        class_ids: npt.NDArray[np.uint8],
        confidence: npt.NDArray[np.float32] | None,
        probabilities: npt.NDArray[np.uint8] | None = None,
        col: int = 0,
    ) -> None:
        if self.space is None:
            raise RuntimeError("PredictionWriter.open was not called")
        self.space.before_rows(class_ids.shape[0])
        window = Window(col, row, class_ids.shape[1], class_ids.shape[0])
        datasets = dict(zip(self.finals, self._datasets))
        datasets[self.output].write(class_ids, 1, window=window)
        if self.confidence is not None and confidence is not None:
            datasets[self.confidence].write(confidence, 1, window=window)
        if self.probabilities is not None:
            if probabilities is None:
                probabilities = np.zeros((len(self.class_names), *class_ids.shape), np.uint8)
            dst = datasets[self.probabilities]
            dst.write(probabilities, window=window)
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # in the file, not a .msk sidecar
                dst.write_mask(np.where(class_ids == IGNORE_INDEX, np.uint8(0), np.uint8(255)), window=window)

    def fill(self, start: int, stop: int, columns: tuple[int, int] | None = None) -> None:
        """Rows ``start..stop`` of ``columns`` (default: all) outside the area every input covers: nodata,
        written explicitly."""
        first, last = (0, self.width) if columns is None else columns
        for row, rows in _row_chunks(start, stop):
            ids = np.full((rows, last - first), IGNORE_INDEX, np.uint8)
            self._write(row, ids, np.zeros((rows, last - first), np.float32), col=first)

    def flush(self) -> None:
        """Flush and close the rasters (no more rows can be written)."""
        self._rasters.close()

    def close(self) -> None:
        """:meth:`flush`; with ``cog`` copy each raster into a COG with overviews. Then :meth:`add` may follow."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        if not self.cog or self.space is None:
            return
        self.space.before_copy(self._written)
        for final in self.finals:
            _to_cog(self._written[final], self._temps[final], "NEAREST" if final == self.output else "AVERAGE")
            self._written[final].unlink()

    def add(self, final: Path, write: Callable[[Path], object]) -> Path:
        """Another output (a preview): ``write(temporary)`` fills it now; it is renamed with the rasters."""
        write(self._files.enter_context(atomic_path(final)))
        return final

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is None:
            try:
                self.close()
            except BaseException as failed:
                self._discard(failed)
                raise
            self._files.close()  # every rename
            return
        self._discard(error)

    def _discard(self, error: BaseException) -> None:
        """Close and remove every temporary after ``error``; raise `InsufficientSpaceError` for a full disk."""
        full = self.space.full_error(error) if self.space is not None else None
        # A failure while closing must not hide the first one; on a full disk libtiff prints every block it
        # cannot flush to stderr itself: the one line of the error says it all.
        with _silenced_stderr() if full is not None else nullcontext(), suppress(Exception):
            self._rasters.close()
        with suppress(Exception):
            self._files.__exit__(type(error), error, error.__traceback__)
        if full is not None and full is not error:
            raise full from error
