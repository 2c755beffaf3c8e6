"""Whole-scene prediction: sliding chips in, one georeferenced class-id GeoTIFF out, in bounded memory.

:func:`predict_scene` reads the scene chip by chip with :class:`mfpeft.data.raster.TileReader` (every modality
aligned onto the first modality's grid, scaled as the model was trained), runs the chips through the model in
batches, sums the logits of overlapping chips in a :class:`mfpeft.engine.stitching.RowBandStitcher` and writes
every finished band of rows into the output GeoTIFF at once. Memory therefore depends on the chip size, the
stride, the batch size and the scene width, never on the scene height.

The output is a tiled, deflate-compressed uint8 GeoTIFF on the first (optical) raster's grid: same size, CRS
and transform, class ids ``0..num_labels-1``, 255 = nodata (where the optical raster is nodata/NaN in every
band, or outside the area covered by every modality), a colour table from the model's palette and the class
names as band tags. It is written to a temporary name in the output folder and renamed when complete, so an
interrupted run never leaves a file at the output path; temporary files of killed runs are removed by the
next run for the same output.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from mfpeft.data.checks import check_valid_share
from mfpeft.data.geometry import ChipWindow
from mfpeft.data.palette import palette_or_default
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling, default_scaling, model_input_scaling
from mfpeft.data.tile import Tile, describe_ref, raster_files
from mfpeft.engine.devices import resolve_device
from mfpeft.engine.stitching import WEIGHT_MODES, RowBand, RowBandStitcher, WeightMode, window_weights

__all__ = [
    "NODATA",
    "InsufficientSpaceError",
    "PredictionResult",
    "load_mfnet",
    "mfnet_of",
    "modality_flags",
    "predict_scene",
    "resolve_device",
]

NODATA = 255
"""Class-id value written where there is no prediction."""

_BLOCK = 256  # GeoTIFF tile size of the outputs
_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))

Bf16 = bool | Literal["auto"]
ProgressCallback = Callable[[int, int], None]
"""Called after each written row band with ``(rows_written, total_rows)`` of the output raster."""


@dataclass
class PredictionResult:
    """What :func:`predict_scene` wrote and how long it took."""

    output: Path
    confidence: Path | None
    preview: Path | None
    height: int
    width: int
    chips: int
    seconds: float
    class_counts: dict[str, int] = field(default_factory=dict)
    """Predicted pixels per class name (nodata excluded)."""

    @property
    def megapixels_per_second(self) -> float:
        """Scene pixels (``height * width``) per second of the whole call, in millions."""
        return self.height * self.width / 1e6 / max(self.seconds, 1e-9)


# -- the model -----------------------------------------------------------------------------------------------
def mfnet_of(model: Any) -> Any:
    """The `MFNetForSegmentation` inside ``model`` (itself, or the base model of a `peft.PeftModel`).

    Raises:
        ValueError: if ``model`` is not an MFNet.
    """
    from mfpeft.models import MFNetForSegmentation

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, MFNetForSegmentation):
        raise ValueError(f"expected an MFNetForSegmentation (or a peft model around one), got {type(base).__name__}")
    return base


def load_mfnet(model: Any, base_model: str | Path | None = None) -> Any:
    """A ready model from an instance, an MFNet adapter folder, a full MFNet checkpoint folder or a Hub id.

    Raises:
        ValueError: a folder (or file) that is not an MFNet adapter or checkpoint, named with the reason.
    """
    from mfpeft.models import MFNetForSegmentation

    if isinstance(model, torch.nn.Module):
        mfnet_of(model)
        return model
    if not isinstance(model, (str, Path)):
        raise ValueError(f"model must be a model, a folder or a Hub id, got {type(model).__name__}")
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path}: is a file; the model must be an MFNet adapter folder (or a Hub repo id)")
        if not (path / "adapter_config.json").is_file():
            config_file = path / "config.json"
            model_type = None
            if config_file.is_file():
                try:
                    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
                except (OSError, ValueError, AttributeError):
                    model_type = None
            if model_type != "mfnet":
                raise ValueError(
                    f"{path}: not an MFNet adapter folder (no adapter_config.json"
                    + (f"; its config.json has model_type {model_type!r}" if config_file.is_file() else "")
                    + ")"
                )
    from mfpeft.models.sam.loading import _quiet_transformers

    # Quiet: transformers' "Loading weights" progress bar would be a second line on the command's stderr.
    with _quiet_transformers():
        loaded = MFNetForSegmentation.from_pretrained(model, base_model=base_model)
    mfnet_of(loaded)
    return loaded


def _use_bf16(bf16: Bf16, device: torch.device) -> bool:
    """``"auto"``: bf16 autocast on CUDA devices that support it; True forces it (CPU autocast works too)."""
    if bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if not isinstance(bf16, bool):
        raise ValueError(f"bf16 must be True, False or 'auto', got {bf16!r}")
    return bf16


def chip_logits(
    model: Any, pixel_values: dict[str, torch.Tensor], *, tta: bool = False, bf16: bool = False
) -> torch.Tensor:
    """Logits of a batch of chips, ``{name: (B, C_m, S, S)}`` -> ``(B, num_labels, S, S)`` float32.

    With ``tta`` the logits are the mean over the chip and its horizontal, vertical and double flips (each
    flipped back), which makes the prediction symmetric under flips of the input.
    """
    device_type = next(iter(pixel_values.values())).device.type
    autocast: AbstractContextManager[Any] = (
        torch.autocast(device_type=device_type, dtype=torch.bfloat16) if bf16 else nullcontext()
    )
    with torch.inference_mode(), autocast:
        logits = model(pixel_values=pixel_values).logits.float()
        if tta:
            for dims in _FLIPS:
                flipped = {name: x.flip(dims) for name, x in pixel_values.items()}
                logits += model(pixel_values=flipped).logits.float().flip(dims)
            logits /= len(_FLIPS) + 1
    return logits


# -- inputs --------------------------------------------------------------------------------------------------
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


def warn_outside_trained_range(reader: TileReader, rasters: Mapping[str, Any]) -> None:
    """One warning line per modality whose band(s) mostly (over half of the finite values of a sample of
    :func:`_sample_windows`) lie outside the raw range the model's scaling maps to [0, 1]
    (`Scaling.trained_range`): values the model never saw in training (another sensor, band order or unit),
    which a range saturates at 0 or 1 and divide / linear carry outside [0, 1]. Cheap: 16 small windows."""
    windows = _sample_windows(reader.height, reader.width)
    for m, scaling in reader.scaling.items():
        bounds = scaling.trained_range()
        if bounds is None:  # min-max, percentile, zscore follow the scene itself; none is anything
            continue
        values = np.concatenate([reader.read_raw(m, w).reshape(len(reader.bands[m]), -1) for w in windows], axis=1)
        low, high = (np.broadcast_to(np.asarray(b, np.float64), (values.shape[0],)) for b in bounds)
        finite = np.isfinite(values)
        outside = finite & ((values < low[:, None]) | (values > high[:, None]))
        shares = outside.sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
        bad = [i for i, share in enumerate(shares) if share > OUTSIDE_WARNING_SHARE]
        if not bad:
            continue
        same = len({(low[i], high[i]) for i in bad}) == 1
        listed = ", ".join(f"band {reader.bands[m][i]} ({100 * shares[i]:.1f} %" + (")" if same else
                           f", outside {low[i]:g}..{high[i]:g})") for i in bad)  # fmt: skip
        where = f" lie outside {low[bad[0]]:g}..{high[bad[0]]:g}" if same else " lie outside"
        effect = "saturate at 0 or 1" if scaling.mode == "range" and scaling.clip else "leave [0, 1]"
        warnings.warn(
            f"{describe_ref(rasters[m])}: modality {m!r} {listed} of the sampled pixels{where}, the raw values its "
            f"scaling {scaling.describe()} maps to [0, 1] (what the model was trained on), so its inputs {effect}: "
            f"another sensor, band order or unit? (--bands {m}=..., --scaling {m}=MODE)",
            UserWarning,
            stacklevel=2,
        )


def modality_flags(names: Sequence[str]) -> str:
    """The command-line flags that give a raster per modality: ``--optical PATH``, ``--dsm PATH`` for those two
    names (the flags that exist), ``--modality NAME=PATH`` for any other."""
    return " ".join(f"--{name} PATH" if name in ("optical", "dsm") else f"--modality {name}=PATH" for name in names)


RasterPaths = str | Path | Sequence[str | Path]
"""One modality's raster: a file, or single-band files stacked in that order (``a_b4.tif, a_b5.tif, ...``)."""
SceneRef = Path | tuple[Path, ...]


def _scene_ref(value: RasterPaths) -> SceneRef:
    if isinstance(value, (str, Path)):
        return Path(value).expanduser()
    return tuple(Path(v).expanduser() for v in value)


def check_rasters(rasters: Mapping[str, RasterPaths], config: Any) -> dict[str, SceneRef]:
    """``{modality: path or band paths}`` in the model's modality order, each an existing file.

    Raises:
        ValueError: a modality of the model without a raster, or a raster for a modality it does not have;
            the message lists the model's modalities and the flags that give them.
        FileNotFoundError: a raster file that does not exist.
    """
    needed = list(config.modality_names)
    given = {str(k): _scene_ref(v) for k, v in rasters.items() if v is not None}
    missing = [m for m in needed if m not in given]
    extra = [m for m in given if m not in needed]
    if missing or extra:
        problems = []
        if missing:
            problems.append("no raster was given for " + ", ".join(missing))
        if extra:
            problems.append(f"a raster was given for {', '.join(extra)}, which it does not use")
        raise ValueError(
            f"the model expects modalities {', '.join(needed)}; {' and '.join(problems)}; give {modality_flags(needed)}"
        )
    for name, ref in given.items():
        files = raster_files(ref)
        for index, path in enumerate(files, start=1):
            if not path.is_file():
                band = f", band file {index} of {describe_ref(ref)}" if len(files) > 1 else ""
                raise FileNotFoundError(f"{path}: file not found (modality {name!r}{band})")
    return {m: given[m] for m in needed}


def check_output_path(output: str | Path, inputs: Sequence[Path], what: str = "output") -> Path:
    path = Path(output).expanduser()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the {what} folder {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"{path}: the {what} path is a folder; give a file name such as {path / 'labels.tif'}")
    resolved = path.resolve()
    for source in inputs:
        if source.resolve() == resolved:
            raise ValueError(f"{path}: the {what} path is one of the input rasters; choose another name")
    return path


# -- atomic output files -------------------------------------------------------------------------------------
def _temp_prefix(path: Path) -> str:
    return f".{path.name}.mfpeft-"


def _temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path``, recording this process id so later runs can clean it up."""
    return path.with_name(f"{_temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporary files left next to ``path`` by runs whose process no longer exists; returns them."""
    removed = []
    prefix = _temp_prefix(path)
    for candidate in path.parent.glob(f"{prefix}*.tmp"):
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            try:
                candidate.unlink()
                removed.append(candidate)
            except FileNotFoundError:
                pass
    return removed


class _AtomicFiles:
    """Temporary names for final paths; ``commit`` renames them all, ``discard`` deletes what is left."""

    def __init__(self) -> None:
        self.pending: dict[Path, Path] = {}

    def temp_for(self, final: Path) -> Path:
        temp = _temp_path(final)
        self.pending[final] = temp
        return temp

    def extra(self, final: Path) -> Path:
        """Another temporary name for ``final`` (e.g. the COG copy), also deleted on failure."""
        temp = _temp_path(final)
        self.pending[temp] = temp
        return temp

    def commit(self, final: Path, temp: Path) -> None:
        os.replace(temp, final)
        self.pending = {k: v for k, v in self.pending.items() if k != final and v != temp}

    def discard(self) -> None:
        for temp in self.pending.values():
            with suppress(FileNotFoundError):
                temp.unlink()
        self.pending.clear()


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


class _DiskSpace:
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
            if free < (rows + _BLOCK) * self.width * sum(b for _, b in group) + _SPACE_MARGIN:
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
        chained: BaseException | None = error
        enospc = False
        while chained is not None and not enospc:
            enospc = isinstance(chained, OSError) and chained.errno == errno.ENOSPC
            chained = chained.__cause__ or chained.__context__
        for group in self.groups.values():
            free = shutil.disk_usage(group[0][0].parent).free
            if enospc or free < _BLOCK * self.width * sum(b for _, b in group) + _SPACE_MARGIN:
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


def _colormap(palette: Sequence[Sequence[int]] | None, num_labels: int) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table: the palette's colour per class id (the default palette when the model has none, or
    an all-black placeholder), transparent black for nodata (255)."""
    colours: dict[int, tuple[int, int, int, int]] = {
        k: (r, g, b, 255) for k, (r, g, b) in enumerate(palette_or_default(palette, num_labels))
    }
    colours[NODATA] = (0, 0, 0, 0)
    return colours


def class_names_of(config: Any) -> list[str]:
    """Class names in id order from a config's ``id2label``."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [id2label.get(k, f"class_{k}") for k in range(int(config.num_labels))]


def _open_class_raster(path: Path, profile: dict[str, Any], names: Sequence[str], palette: Any) -> Any:
    dst = rasterio.open(path, "w", **profile, nodata=NODATA)
    dst.write_colormap(1, _colormap(palette, len(names)))
    dst.set_band_description(1, "class id")
    dst.update_tags(CLASS_NAMES=json.dumps(list(names)), NODATA_MEANING="no prediction (input nodata)")
    dst.update_tags(1, **{f"CLASS_{k}": name for k, name in enumerate(names)})
    return dst


def _open_confidence_raster(path: Path, profile: dict[str, Any]) -> Any:
    dst = rasterio.open(path, "w", **{**profile, "dtype": "float32", "predictor": 3}, nodata=0.0)
    dst.set_band_description(1, "confidence")
    dst.update_tags(1, MEANING="max softmax probability of the overlap-averaged logits; 0 = nodata")
    return dst


def _to_cog(source: Path, target: Path, resampling: str) -> None:
    from rasterio.shutil import copy as raster_copy

    major, minor = (int(v) for v in rasterio.__gdal_version__.split(".")[:2])
    if (major, minor) < (3, 1):
        raise ValueError(
            f"cog=True needs GDAL >= 3.1 for the COG driver; this rasterio has {rasterio.__gdal_version__}"
        )
    raster_copy(
        str(source), str(target), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(_BLOCK),
        OVERVIEW_RESAMPLING=resampling, BIGTIFF="IF_SAFER",
    )  # fmt: skip


# -- the scene -----------------------------------------------------------------------------------------------
def _grid_offset(reader: TileReader, reference: Any) -> tuple[int, int]:
    """(row, col) of the reader's usable area (the overlap of all rasters) on the reference raster's grid."""
    if reader.transform is None:
        return 0, 0
    col, row = ~reference.transform @ (reader.transform.c, reader.transform.f)
    return round(row), round(col)


def block_cache_mb(rasters: Iterable[Path], chip_size: int, confidence: Path | None = None) -> int:
    """GDAL block cache (MiB) that holds every block a row of sliding windows reads again, and no more.

    Consecutive window rows share up to ``chip_size`` scene rows; with 256-row blocks the blocks of
    ``chip_size + 2 * 256`` rows of every input (all bands, native dtype) and of the output rasters suffice.
    Clamped to 16..512 MiB.
    """
    need = 0
    for path in rasters:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                pixel_bytes = sum(np.dtype(dtype).itemsize for dtype in src.dtypes)
                need += (chip_size + 2 * _BLOCK) * src.width * pixel_bytes
                width = src.width
    need += (chip_size + 2 * _BLOCK) * width * (1 + (4 if confidence is not None else 0))
    return int(min(max(math.ceil(need / 2**20) + 8, 16), 512))


def _add_counts(counts: npt.NDArray[np.int64], class_ids: npt.NDArray[np.uint8], rows: int = 16) -> None:
    """``counts[k] += (class_ids == k).sum()``, in row chunks to keep the int64 temporaries small."""
    for row in range(0, class_ids.shape[0], rows):
        counts += np.bincount(class_ids[row : row + rows].ravel(), minlength=256)[: counts.shape[0]]


def _row_chunks(start: int, stop: int, step: int = _BLOCK) -> Iterator[tuple[int, int]]:
    for row in range(start, stop, step):
        yield row, min(step, stop - row)


def predict_scene(
    model: Any,
    rasters: Mapping[str, RasterPaths],
    output: str | Path,
    *,
    chip_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    weights: WeightMode = "uniform",
    tta: bool = False,
    device: str | torch.device | None = None,
    bf16: Bf16 = "auto",
    confidence: str | Path | None = None,
    cog: bool = False,
    preview: str | Path | None = None,
    preview_inputs: bool = True,
    bands: Mapping[str, Sequence[int]] | None = None,
    base_model: str | Path | None = None,
    progress: ProgressCallback | None = None,
    gdal_cache_mb: int | None = None,
    prefetch: bool | None = None,
    scaling: Mapping[str, Any] | None = None,
) -> PredictionResult:
    """Label a whole scene with an MFNet and write a georeferenced class-id GeoTIFF.

    Args:
        model: an `MFNetForSegmentation`, a `peft.PeftModel` around one, an adapter folder or a Hub repo id.
            It is put in eval mode and moved to ``device``.
        rasters: ``{modality name: path}``, one per modality of the model (``model.config.modalities``); a
            sequence of paths stacks single-band files in that order (aligned onto the first one like any
            other raster). The first modality (its first file) defines the output grid; the others are aligned
            onto it (``WarpedVRT``).
        output: the class-id GeoTIFF to write; its folder must exist; an existing file is replaced.
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
        progress: called with ``(rows_written, total_rows)`` after each written band.
        gdal_cache_mb: GDAL's block cache while predicting (default :func:`block_cache_mb`: what the sliding
            window re-reads, so memory does not grow with a cache filled by blocks that are never read again).
        prefetch: read the next batch in a background thread while the model runs. Default: on for
            accelerators (reading then overlaps GPU compute), off on CPU (the model already uses every core,
            and the extra thread's malloc arena costs memory).

    Returns:
        A :class:`PredictionResult`.

    Raises:
        ValueError / FileNotFoundError: bad input, with the file and the problem named (also a device this
            machine does not have, and a modality whose raster holds no data at all).
        InsufficientSpaceError: the disk filled up; nothing is left at the output paths.

    Rasters are read with the raw -> input scaling the model recorded (:func:`model_input_scaling`, the one
    fallback for a model that recorded none); ``scaling`` (``--scaling NAME=MODE`` texts or `Scaling`) overrides
    it per modality, with a warning where it differs.

    Warns:
        UserWarning: a modality with more than 5 % of its pixels without data
            (:func:`mfpeft.data.checks.check_valid_share`); a band whose values mostly lie outside the raw range
            the model was trained on (:func:`warn_outside_trained_range`); a scaling other than the model's.
    """
    start_time = time.perf_counter()
    # Cheap checks first (output folders, device, options): loading the model is not cheap.
    check_output_path(output, [])
    for extra, what in ((confidence, "confidence"), (preview, "preview")):
        if extra is not None:
            check_output_path(extra, [], what)
    torch_device = resolve_device(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights={weights!r} must be one of {WEIGHT_MODES}")
    loaded = load_mfnet(model, base_model=base_model)
    config = mfnet_of(loaded).config
    rasters_ = check_rasters(rasters, config)
    input_scaling = model_input_scaling(config, scaling)
    chip, step = _chip_and_stride(config, chip_size, stride)
    inputs = [f for ref in rasters_.values() for f in raster_files(ref)]
    output_path = check_output_path(output, inputs)
    confidence_path = check_output_path(confidence, inputs, "confidence") if confidence is not None else None
    preview_path = check_output_path(preview, inputs, "preview") if preview is not None else None
    if confidence_path is not None and confidence_path.resolve() == output_path.resolve():
        raise ValueError(f"{confidence_path}: the confidence raster needs a path of its own, not the output's")
    band_choice = {m: tuple(int(b) for b in v) for m, v in (bands or {}).items()}
    for name, path in rasters_.items():
        check_valid_share(name, path, band_choice.get(name))
    job = _Job(
        model=loaded, config=config, rasters=rasters_, chip=chip, step=step, batch_size=int(batch_size),
        weights=weights, tta=tta, device=torch_device, bf16=_use_bf16(bf16, torch_device),
        prefetch=torch_device.type != "cpu" if prefetch is None else bool(prefetch),
        tile=Tile(name=output_path.stem, modalities=dict(rasters_), bands=band_choice),
        output=output_path, confidence=confidence_path, preview=preview_path, preview_inputs=preview_inputs,
        cog=cog, progress=progress, gdal_cache_mb=gdal_cache_mb, scaling=input_scaling,
    )  # fmt: skip
    height, width, chips, counts = _run(job)
    names = class_names_of(config)
    return PredictionResult(
        output=output_path,
        confidence=confidence_path,
        preview=preview_path,
        height=height,
        width=width,
        chips=chips,
        seconds=time.perf_counter() - start_time,
        class_counts={name: int(c) for name, c in zip(names, counts)},
    )


def _chip_and_stride(config: Any, chip_size: Any, stride: Any) -> tuple[int, int]:
    """The chip size (the model's) and the stride (``1..chip``, default half a chip), checked."""
    size = int(config.image_size)
    chip = size if chip_size is None else chip_size
    if isinstance(chip, bool) or not isinstance(chip, (int, np.integer)) or chip != size:
        raise ValueError(
            f"chip_size={chip_size!r}: this model takes {size} x {size} chips only (config.image_size); "
            "larger scenes are covered by sliding windows"
        )
    step = max(chip // 2, 1) if stride is None else stride
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step <= chip:
        raise ValueError(f"stride={stride!r} must be an integer in 1..chip_size={chip}")
    return int(chip), int(step)


@dataclass
class _Job:
    """What :func:`predict_scene` checked and decided before reading the scene."""

    model: Any
    config: Any
    rasters: dict[str, SceneRef]
    tile: Tile
    chip: int
    step: int
    batch_size: int
    weights: WeightMode
    tta: bool
    device: torch.device
    bf16: bool
    prefetch: bool
    output: Path
    confidence: Path | None
    preview: Path | None
    preview_inputs: bool
    cog: bool
    progress: ProgressCallback | None
    gdal_cache_mb: int | None
    scaling: dict[str, Scaling]  # raw -> input per modality: the model's (model_input_scaling)

    @property
    def modalities(self) -> list[str]:
        return list(self.config.modality_names)


@dataclass
class _Scene:
    """The opened inputs: the aligned reader, the first raster (the output grid) and its nodata mask reader."""

    reader: TileReader
    reference: Any
    mask_reader: TileReader | None
    row0: int
    col0: int

    @property
    def height(self) -> int:
        return int(self.reference.height)

    @property
    def width(self) -> int:
        return int(self.reference.width)


def _open_scene(stack: ExitStack, job: _Job) -> _Scene:
    """Open every input (closed by ``stack``) and check each modality's band count against the model."""
    cache_mb = job.gdal_cache_mb
    if cache_mb is None:
        cache_mb = block_cache_mb([f for ref in job.rasters.values() for f in raster_files(ref)], job.chip,
                                  job.confidence)  # fmt: skip
    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=int(cache_mb)))
    modalities = job.modalities
    reader = stack.enter_context(
        TileReader(
            job.tile, modalities, chip_size=job.chip, scaling=job.scaling, labels="none", mask_nodata=False,
        )
    )  # fmt: skip
    channels = job.config.modality_channels
    for m in modalities:
        if len(reader.bands[m]) != channels[m]:
            first_bands = ",".join(str(b) for b in range(1, channels[m] + 1))
            raise ValueError(
                f"{describe_ref(job.rasters[m])}: modality {m!r} reads {len(reader.bands[m])} band(s) "
                f"{list(reader.bands[m])} but "
                f"the model takes {channels[m]}; choose bands, e.g. bands={{{m!r}: "
                f"{tuple(range(1, channels[m] + 1))}}} (--bands {m}={first_bands})"
            )
    warn_outside_trained_range(reader, job.rasters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        # The first raster (its first band file) is the output grid.
        reference = stack.enter_context(rasterio.open(raster_files(job.rasters[modalities[0]])[0]))
    row0, col0 = _grid_offset(reader, reference)
    mask_reader = None
    # Integer rasters without a nodata value cannot hold a missing pixel: skip the mask reads.
    first = modalities[0]
    if _may_hold_nodata(raster_files(job.rasters[first])):
        # The first raster alone, unscaled, on the reader's window: the same pixels as the reader's reads.
        mask_tile = Tile(name=job.tile.name, modalities={first: job.rasters[first]}, bands={first: reader.bands[first]},
                         window=reader.window)  # fmt: skip
        mask_reader = stack.enter_context(
            TileReader(mask_tile, [first], scaling={first: Scaling(mode="none")}, labels="none")
        )
    return _Scene(reader, reference, mask_reader, row0, col0)


def _may_hold_nodata(files: Sequence[Path]) -> bool:
    """Whether any of these rasters can hold a missing pixel: a nodata value, or float values (NaN)."""
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.nodata is not None or np.dtype(src.dtypes[0]).kind == "f":
                    return True
    return False


def _output_profile(reference: Any) -> dict[str, Any]:
    """The outputs' GeoTIFF profile: tiled, deflate, on the first raster's grid and georeferencing."""
    profile: dict[str, Any] = {
        "driver": "GTiff", "height": reference.height, "width": reference.width, "count": 1, "dtype": "uint8",
        "tiled": True, "blockxsize": _BLOCK, "blockysize": _BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    if reference.crs is not None:
        profile.update(crs=reference.crs, transform=reference.transform)
    elif not reference.transform.is_identity:
        profile.update(transform=reference.transform)
    return profile


class _Writer:
    """The output rasters, open at temporary names: writes rows of class ids (and confidence), space checked."""

    def __init__(self, stack: ExitStack, files: _AtomicFiles, job: _Job, scene: _Scene, space: _DiskSpace) -> None:
        self.width = scene.width
        self.space = space
        self.counts = np.zeros(int(job.config.num_labels), dtype=np.int64)
        profile = _output_profile(scene.reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.temp = files.temp_for(job.output)
            names = class_names_of(job.config)
            self.dst = stack.enter_context(_open_class_raster(self.temp, profile, names, job.config.palette))
            self.conf_temp: Path | None = None
            self.conf_dst: Any = None
            if job.confidence is not None:
                self.conf_temp = files.temp_for(job.confidence)
                self.conf_dst = stack.enter_context(_open_confidence_raster(self.conf_temp, profile))

    def write(self, row: int, class_ids: npt.NDArray[np.uint8], conf: npt.NDArray[np.float32] | None) -> None:
        """Rows ``row..`` at full width; counted in :attr:`counts` unless they are nodata fill."""
        self.space.before_rows(class_ids.shape[0])
        window = Window(0, row, self.width, class_ids.shape[0])
        self.dst.write(class_ids, 1, window=window)
        if self.conf_dst is not None and conf is not None:
            self.conf_dst.write(conf, 1, window=window)

    def fill(self, start: int, stop: int) -> None:
        """Rows outside the area every modality covers: nodata, written explicitly."""
        for row, rows in _row_chunks(start, stop):
            self.write(row, np.full((rows, self.width), NODATA, np.uint8), np.zeros((rows, self.width), np.float32))


def _run(job: _Job) -> tuple[int, int, int, npt.NDArray[np.int64]]:
    """Predict and write the scene at temporary names, then rename; returns (height, width, chips, counts).

    On any failure or interrupt the temporary files are deleted, so the output paths are untouched; a full
    disk becomes one `InsufficientSpaceError` naming the outputs, the bytes needed and the bytes free.
    """
    for final in (job.output, job.confidence):
        if final is not None:
            remove_stale_temporaries(final)
    files = _AtomicFiles()
    with ExitStack() as stack:
        scene = _open_scene(stack, job)
        model = job.model.eval().to(job.device)
        outputs = [(job.output, 1)] + ([(job.confidence, 4)] if job.confidence is not None else [])
        space = _DiskSpace(outputs, scene.height, scene.width, cog=job.cog)
        try:
            writer = _Writer(stack, files, job, scene, space)
            chips = _stream(job, model, scene, writer)
            stack.close()  # flush and close every raster before converting and renaming
            _finish(job, files, space, writer)
        except BaseException as error:
            full = space.full_error(error)
            # A failure while closing must not hide the first one; on a full disk libtiff prints every
            # block it cannot flush to stderr itself: the one line below says it all.
            with _silenced_stderr() if full is not None else nullcontext(), suppress(Exception):
                stack.close()
            files.discard()
            if full is not None and full is not error:
                raise full from error
            raise
    return scene.height, scene.width, chips, writer.counts


def _stream(job: _Job, model: Any, scene: _Scene, writer: _Writer) -> int:
    """Run every sliding window through the model and write each finished band of rows; returns the chip count."""
    reader, modalities = scene.reader, job.modalities
    height, row0, col0 = scene.height, scene.row0, scene.col0
    writer.fill(0, row0)

    def write_band(band: RowBand) -> None:
        rows, class_ids, conf = band.class_ids.shape[0], band.class_ids, band.confidence
        if scene.mask_reader is not None:
            window = ChipWindow(band.row_start, 0, rows, reader.width)  # the mask reader reads the reader's window
            missing = np.isnan(scene.mask_reader.read_raw(modalities[0], window)).all(axis=0)
            if missing.any():
                class_ids = np.where(missing, np.uint8(NODATA), class_ids)
                conf = np.where(missing, np.float32(0), conf)
        _add_counts(writer.counts, class_ids)
        if col0 or reader.width != writer.width:
            full_ids = np.full((rows, writer.width), NODATA, np.uint8)
            full_ids[:, col0 : col0 + reader.width] = class_ids
            full_conf = np.zeros((rows, writer.width), np.float32)
            full_conf[:, col0 : col0 + reader.width] = conf
            class_ids, conf = full_ids, full_conf
        writer.write(row0 + band.row_start, class_ids, conf)
        if job.progress is not None:
            job.progress(row0 + band.row_start + rows, height)

    stitcher = RowBandStitcher(
        reader.height, reader.width, int(job.config.num_labels), job.chip, job.step,
        weights=window_weights(job.chip, job.weights), device=job.device,
    )  # fmt: skip
    windows = stitcher.windows
    batches = [windows[first : first + job.batch_size] for first in range(0, len(windows), job.batch_size)]
    # closing: on a failure the read-ahead thread is joined here, before the stack closes the reader it uses.
    with closing(_read_batches(job, reader, batches)) as hosts:
        for batch, host in zip(batches, hosts):
            pixel_values = {m: torch.from_numpy(host[m][: len(batch)]).to(job.device) for m in modalities}
            logits = chip_logits(model, pixel_values, tta=job.tta, bf16=job.bf16)
            for band in stitcher.push_batch(batch, logits):
                write_band(band)
    writer.fill(row0 + reader.height, height)
    if job.progress is not None and row0 + reader.height < height:
        job.progress(height, height)
    return len(windows)


def _read_batches(
    job: _Job, reader: TileReader, batches: Sequence[Sequence[ChipWindow]]
) -> Generator[dict[str, npt.NDArray[np.float32]], None, None]:
    """The scaled chips of each batch, ``{modality: (batch_size, C, S, S)}``, read ahead in a thread if asked.

    Two reused host buffers per modality (fresh multi-MB arrays per batch fragment the C heap): with
    ``job.prefetch`` a background thread reads the next batch into one while the model runs on the other.
    Only that thread touches ``reader``; the nodata mask has its own reader (GDAL handles are not thread-safe).
    A yielded buffer is valid until the next one is asked for.
    """
    channels = job.config.modality_channels
    shape = (job.batch_size, job.chip, job.chip)
    buffers = [{m: np.zeros((shape[0], channels[m], *shape[1:]), np.float32) for m in job.modalities} for _ in "ab"]

    def read_batch(index: int) -> dict[str, npt.NDArray[np.float32]]:
        target = buffers[index % 2]
        for i, window in enumerate(batches[index]):
            for m, values in reader.read(window)["pixel_values"].items():
                target[m][i] = values
        return target

    if not job.prefetch:
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


def _finish(job: _Job, files: _AtomicFiles, space: _DiskSpace, writer: _Writer) -> None:
    """COG conversion and preview from the closed temporary rasters, then every rename at once.

    The preview is drawn before any rename so that an interrupt while drawing leaves no output at all.
    """
    temps: dict[Path, Path] = {job.output: writer.temp}
    if job.confidence is not None and writer.conf_temp is not None:
        temps[job.confidence] = writer.conf_temp
    if job.cog:
        space.before_copy(temps)
        for final, resampling in ((job.output, "NEAREST"), (job.confidence, "AVERAGE")):
            if final is None:
                continue
            cog_temp = files.extra(final)
            _to_cog(temps[final], cog_temp, resampling)
            temps[final].unlink()
            temps[final] = cog_temp
    if job.preview is not None:
        from mfpeft.engine.preview import write_preview

        modalities = job.modalities
        dsm = next((raster_files(job.rasters[m])[0] for m in modalities[1:] if _is_elevation(m)), None)
        temps[job.preview] = write_preview(
            temps[job.output], files.temp_for(job.preview), class_names=class_names_of(job.config),
            palette=job.config.palette, optical=job.rasters[modalities[0]] if job.preview_inputs else None,
            dsm=dsm if job.preview_inputs else None,
        )  # fmt: skip
    for final, temp in temps.items():
        files.commit(final, temp)


def _is_elevation(modality: str) -> bool:
    return default_scaling(modality).mode == "minmax_tile"
