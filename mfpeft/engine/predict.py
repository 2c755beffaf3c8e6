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

import json
import math
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling, default_scaling
from mfpeft.data.tile import Tile
from mfpeft.engine.stitching import WEIGHT_MODES, RowBand, RowBandStitcher, WeightMode, window_weights

__all__ = [
    "NODATA",
    "PredictionResult",
    "load_mfnet",
    "mfnet_of",
    "predict_scene",
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
    loaded = MFNetForSegmentation.from_pretrained(model, base_model=base_model)
    mfnet_of(loaded)
    return loaded


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
def model_scalings(config: Any) -> dict[str, Scaling]:
    recorded = getattr(config, "input_scaling", None) or {}
    return {
        name: Scaling.from_dict(recorded[name]) if name in recorded else default_scaling(name)
        for name in config.modality_names
    }


def check_rasters(rasters: Mapping[str, str | Path], config: Any) -> dict[str, Path]:
    needed = list(config.modality_names)
    given = {str(k): Path(v).expanduser() for k, v in rasters.items() if v is not None}
    missing = [m for m in needed if m not in given]
    extra = [m for m in given if m not in needed]
    if missing:
        raise ValueError(
            f"the model needs modalities {needed} but no raster was given for {missing} "
            f"(got {sorted(given)}; on the command line: " + ", ".join(f"--{m}" for m in missing) + ")"
        )
    if extra:
        raise ValueError(f"rasters given for {extra}, which the model does not use (its modalities are {needed})")
    for name, path in given.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found (modality {name!r})")
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


def _colormap(palette: Sequence[Sequence[int]] | None, num_labels: int) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table: the palette's colour per class id, transparent black for nodata (255)."""
    colours: dict[int, tuple[int, int, int, int]] = {}
    for k in range(num_labels):
        if palette is not None:
            r, g, b = (int(v) for v in palette[k])
        else:
            # A fixed, well-spread hue per class when the model has no palette.
            hue = (k * 0.618033988749895) % 1.0
            import colorsys

            r, g, b = (round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.65, 0.95))
        colours[k] = (r, g, b, 255)
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
    rasters: Mapping[str, str | Path],
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
) -> PredictionResult:
    """Label a whole scene with an MFNet and write a georeferenced class-id GeoTIFF.

    Args:
        model: an `MFNetForSegmentation`, a `peft.PeftModel` around one, an adapter folder or a Hub repo id.
            It is put in eval mode and moved to ``device``.
        rasters: ``{modality name: path}``, one per modality of the model (``model.config.modalities``). The
            first modality defines the output grid; the others are aligned onto it (``WarpedVRT``).
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
        ValueError / FileNotFoundError: bad input, with the file and the problem named.
    """
    start_time = time.perf_counter()
    # Output folders first: they are cheap to check, loading the model is not.
    check_output_path(output, [])
    for extra, what in ((confidence, "confidence"), (preview, "preview")):
        if extra is not None:
            check_output_path(extra, [], what)
    loaded = load_mfnet(model, base_model=base_model)
    config = mfnet_of(loaded).config
    rasters_ = check_rasters(rasters, config)
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights={weights!r} must be one of {WEIGHT_MODES}")
    inputs = list(rasters_.values())
    output_path = check_output_path(output, inputs)
    confidence_path = check_output_path(confidence, inputs, "confidence") if confidence is not None else None
    preview_path = check_output_path(preview, inputs, "preview") if preview is not None else None
    if confidence_path is not None and confidence_path.resolve() == output_path.resolve():
        raise ValueError(f"{confidence_path}: the confidence raster needs a path of its own, not the output's")
    torch_device = resolve_device(device)
    use_bf16 = _use_bf16(bf16, torch_device)
    use_prefetch = torch_device.type != "cpu" if prefetch is None else bool(prefetch)
    names = class_names_of(config)
    num_labels = len(names)

    modalities = list(config.modality_names)
    tile = Tile(
        name=output_path.stem,
        modalities=dict(rasters_),
        bands={m: tuple(int(b) for b in v) for m, v in (bands or {}).items()},
    )
    for final in (output_path, confidence_path):
        if final is not None:
            remove_stale_temporaries(final)
    files = _AtomicFiles()
    with ExitStack() as stack:
        cache_mb = (
            gdal_cache_mb if gdal_cache_mb is not None else block_cache_mb(rasters_.values(), chip, confidence_path)
        )
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=int(cache_mb)))
        reader = stack.enter_context(
            TileReader(
                tile, modalities, chip_size=chip, scaling=model_scalings(config), labels="none", mask_nodata=False
            )
        )
        channels = config.modality_channels
        for m in modalities:
            if len(reader.bands[m]) != channels[m]:
                raise ValueError(
                    f"{rasters_[m]}: modality {m!r} reads {len(reader.bands[m])} band(s) {list(reader.bands[m])} but "
                    f"the model takes {channels[m]}; choose bands, e.g. bands={{{m!r}: "
                    f"{tuple(range(1, channels[m] + 1))}}} (--bands {m}="
                    + ",".join(str(b) for b in range(1, channels[m] + 1))
                    + ")"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            reference = stack.enter_context(rasterio.open(rasters_[modalities[0]]))
        height, width = reference.height, reference.width
        row0, col0 = _grid_offset(reader, reference)
        ref_nodata = reference.nodata
        # Integer rasters without a nodata value cannot hold a missing pixel: skip the mask reads.
        check_missing = ref_nodata is not None or np.dtype(reference.dtypes[0]).kind == "f"
        mask_reader = None
        if check_missing:
            # The first raster alone, on its own full grid (hence the row0/col0 offsets), unscaled.
            first = modalities[0]
            mask_tile = Tile(name=tile.name, modalities={first: rasters_[first]}, bands={first: reader.bands[first]})
            mask_reader = stack.enter_context(
                TileReader(mask_tile, [first], scaling={first: Scaling(mode="none")}, labels="none")
            )

        model_ = loaded.eval().to(torch_device)
        profile: dict[str, Any] = {
            "driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
            "tiled": True, "blockxsize": _BLOCK, "blockysize": _BLOCK, "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }  # fmt: skip
        if reference.crs is not None:
            profile.update(crs=reference.crs, transform=reference.transform)
        elif not reference.transform.is_identity:
            profile.update(transform=reference.transform)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                out_temp = files.temp_for(output_path)
                dst = stack.enter_context(_open_class_raster(out_temp, profile, names, config.palette))
                conf_temp = conf_dst = None
                if confidence_path is not None:
                    conf_temp = files.temp_for(confidence_path)
                    conf_dst = stack.enter_context(_open_confidence_raster(conf_temp, profile))

            def write_rows(row: int, class_ids: npt.NDArray[np.uint8], conf: npt.NDArray[np.float32] | None) -> None:
                window = Window(0, row, width, class_ids.shape[0])
                dst.write(class_ids, 1, window=window)
                if conf_dst is not None and conf is not None:
                    conf_dst.write(conf, 1, window=window)

            def fill_rows(start: int, stop: int) -> None:
                # Rows outside the area every modality covers: nodata, written explicitly.
                for row, rows in _row_chunks(start, stop):
                    write_rows(row, np.full((rows, width), NODATA, np.uint8), np.zeros((rows, width), np.float32))

            counts = np.zeros(num_labels, dtype=np.int64)
            fill_rows(0, row0)
            total_rows = height

            def write_band(band: RowBand) -> None:
                rows = band.class_ids.shape[0]
                class_ids = band.class_ids
                conf = band.confidence
                if mask_reader is not None:
                    raw = mask_reader.read_raw(
                        modalities[0], ChipWindow(row0 + band.row_start, col0, rows, reader.width)
                    )
                    missing = np.isnan(raw).all(axis=0)
                    if missing.any():
                        class_ids = class_ids.copy()
                        class_ids[missing] = NODATA
                        conf = np.where(missing, np.float32(0), conf)
                _add_counts(counts, class_ids)
                if col0 or reader.width != width:
                    full_ids = np.full((rows, width), NODATA, np.uint8)
                    full_ids[:, col0 : col0 + reader.width] = class_ids
                    full_conf = np.zeros((rows, width), np.float32)
                    full_conf[:, col0 : col0 + reader.width] = conf
                    class_ids, conf = full_ids, full_conf
                write_rows(row0 + band.row_start, class_ids, conf if conf_dst is not None else None)
                if progress is not None:
                    progress(row0 + band.row_start + rows, total_rows)

            stitcher = RowBandStitcher(
                reader.height, reader.width, num_labels, chip, step,
                weights=window_weights(chip, weights), device=torch_device,
            )  # fmt: skip
            windows = stitcher.windows
            batches = [windows[first : first + batch_size] for first in range(0, len(windows), batch_size)]
            # Two reused host buffers per modality (fresh multi-MB arrays per batch fragment the C heap): a
            # background thread reads the next batch into one while the model runs on the other. Only that
            # thread touches `reader`; the nodata mask has its own reader (GDAL handles are not thread-safe).
            buffers = [
                {m: np.zeros((batch_size, channels[m], chip, chip), np.float32) for m in modalities} for _ in range(2)
            ]

            def read_batch(index: int) -> dict[str, npt.NDArray[np.float32]]:
                target = buffers[index % 2]
                for i, window in enumerate(batches[index]):
                    for m, values in reader.read(window)["pixel_values"].items():
                        target[m][i] = values
                return target

            if use_prefetch:
                pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfpeft-read"))
                pending = pool.submit(read_batch, 0) if batches else None
            for index, batch in enumerate(batches):
                if use_prefetch:
                    assert pending is not None  # submitted for every index < len(batches)
                    host = pending.result()
                    if index + 1 < len(batches):
                        pending = pool.submit(read_batch, index + 1)
                else:
                    host = read_batch(index)
                pixel_values = {m: torch.from_numpy(host[m][: len(batch)]).to(torch_device) for m in modalities}
                logits = chip_logits(model_, pixel_values, tta=tta, bf16=use_bf16)
                for band in stitcher.push_batch(batch, logits):
                    write_band(band)
            fill_rows(row0 + reader.height, height)
            if progress is not None and row0 + reader.height < height:
                progress(height, total_rows)
            stack.close()  # flush and close every raster before renaming

            for final, temp, resampling in (
                (output_path, out_temp, "NEAREST"),
                (confidence_path, conf_temp, "AVERAGE"),
            ):
                if final is None or temp is None:
                    continue
                if cog:
                    cog_temp = files.extra(final)
                    _to_cog(temp, cog_temp, resampling)
                    temp.unlink()
                    temp = cog_temp
                files.commit(final, temp)
        except BaseException:
            stack.close()
            files.discard()
            raise

    written_preview = None
    if preview_path is not None:
        from mfpeft.engine.preview import write_preview

        written_preview = write_preview(
            output_path,
            preview_path,
            class_names=names,
            palette=config.palette,
            optical=rasters_[modalities[0]] if preview_inputs else None,
            dsm=next((rasters_[m] for m in modalities[1:] if _is_elevation(m)), None) if preview_inputs else None,
        )
    return PredictionResult(
        output=output_path,
        confidence=confidence_path,
        preview=written_preview,
        height=height,
        width=width,
        chips=len(windows),
        seconds=time.perf_counter() - start_time,
        class_counts={name: int(c) for name, c in zip(names, counts)},
    )


def _is_elevation(modality: str) -> bool:
    return default_scaling(modality).mode == "minmax_tile"
