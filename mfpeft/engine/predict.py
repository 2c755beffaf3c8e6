"""Whole-scene prediction: sliding chips in, one georeferenced class-id GeoTIFF out, in bounded memory.

:func:`predict_scene` is a pipeline of named stages:

1. **options**: :class:`PredictionOptions` checks itself when made;
2. **check the inputs** (:func:`check_scene`): output folders, device, model, rasters, chip and stride, the
   model's input scaling (:func:`mfpeft.data.scaling.model_input_scaling`) and the share of valid pixels;
3. **open the scene and read windows** (data layer, :mod:`mfpeft.data.windows`): every modality aligned onto
   the first modality's grid by a :class:`mfpeft.data.raster.TileReader`, scaled as the model was trained,
   batches of chips read ahead;
4. **run the model on batches** (:func:`chip_logits`);
5. **stitch** the logits of overlapping chips in a :class:`mfpeft.engine.stitching.RowBandStitcher`;
6. **write** every finished band of rows at once (:class:`mfpeft.data.writer.PredictionWriter`).

Memory therefore depends on the chip size, the stride, the batch size and the scene width, never on the scene
height. The output is a tiled, deflate-compressed uint8 GeoTIFF on the first (optical) raster's grid: same
size, CRS and transform, class ids ``0..num_labels-1``, `IGNORE_INDEX` = nodata (where the optical raster is
nodata/NaN in every band, or outside the area covered by every modality), a colour table from the model's
palette and the class names as band tags. It is written at a temporary name in the output folder and renamed
when complete, so an interrupted run never leaves a file at the output path; temporary files of killed runs are
removed by the next run for the same output.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfpeft.common.runtime import prepare_process
from mfpeft.data.checks import check_valid_share
from mfpeft.data.geometry import ChipWindow, column_sections
from mfpeft.data.mosaic import Mosaic, materialise_rasters, vrt_sources
from mfpeft.data.scaling import Scaling, default_scaling, model_input_scaling
from mfpeft.data.tile import Tile, describe_ref, raster_files
from mfpeft.data.windows import Scene, open_scene, read_batches
from mfpeft.data.writer import InsufficientSpaceError, PredictionWriter
from mfpeft.data.writer import colour_table as _colormap  # noqa: F401  (tests/data/test_labels_auto.py)
from mfpeft.engine.devices import resolve_device
from mfpeft.engine.prediction_options import Bf16, PredictionOptions
from mfpeft.engine.stitching import RowBand, RowBandStitcher, window_weights

__all__ = [
    "InsufficientSpaceError",
    "PredictionOptions",
    "PredictionResult",
    "check_scene",
    "load_mfnet",
    "mfnet_of",
    "modality_flags",
    "model_input_scaling",
    "predict_scene",
    "resolve_device",
]

_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))

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
    probabilities: Path | None = None
    pixel_area: float | None = None
    """Area of one output pixel in map units, ``|a e - b d|`` of the transform (None without one)."""
    area_unit: str = "pixel"
    """What :attr:`pixel_area` is measured in: ``"square metre"`` for a CRS in metres, ``"pixel"`` without one."""
    vector: Path | None = None
    """The GeoPackage of class polygons, when asked for (``PredictionOptions.vector``)."""

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


def class_names_of(config: Any) -> list[str]:
    """Class names in id order from a config's ``id2label``."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    return [id2label.get(k, f"class_{k}") for k in range(int(config.num_labels))]


def _use_bf16(bf16: Bf16, device: torch.device) -> bool:
    """``"auto"``: bf16 autocast on CUDA devices that support it; True forces it (CPU autocast works too)."""
    if bf16 == "auto":
        return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(bf16)


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


# -- checking the inputs -----------------------------------------------------------------------------------
def modality_flags(names: Sequence[str]) -> str:
    """The command-line flags that give a raster per modality: ``--optical PATH``, ``--dsm PATH`` for those two
    names (the flags that exist), ``--modality NAME=PATH`` for any other."""
    return " ".join(f"--{name} PATH" if name in ("optical", "dsm") else f"--modality {name}=PATH" for name in names)


RasterPaths = str | Path | Sequence[str | Path]
"""One modality's raster: a file, or single-band files stacked in that order (``a_b4.tif, a_b5.tif, ...``)."""
SceneRef = Path | tuple[Path, ...]
SceneInput = RasterPaths | Mosaic
"""What :func:`predict_scene` takes per modality: :data:`RasterPaths` (texts may be URLs, glob patterns or
``@list.txt``, :func:`mfpeft.data.mosaic.raster_input`), or a :class:`~mfpeft.data.mosaic.Mosaic`."""


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


def _check_distinct(paths: Mapping[str, Path]) -> None:
    """Each output has a path of its own (two outputs at one path would overwrite each other)."""
    seen: dict[Path, str] = {}
    for what, path in paths.items():
        other = seen.setdefault(path.resolve(), what)
        if other != what:
            raise ValueError(f"{path}: the {what} needs a path of its own, not the {other}'s")


@dataclass
class CheckedScene:
    """What :func:`check_scene` checked and decided before the scene is read."""

    model: Any
    """The loaded model (an `MFNetForSegmentation` or a peft model around one)."""
    config: Any
    rasters: dict[str, SceneRef]
    """Each modality's raster (or band files), in the model's modality order."""
    outputs: dict[str, Path]
    """The paths to write, by what they are (``"output"``, ``"confidence"``, ``"preview"``, ``"heatmap"``)."""
    tile: Tile
    scaling: dict[str, Scaling]
    """Raw -> input per modality: the model's (:func:`model_input_scaling`)."""
    device: torch.device
    chip: int
    step: int

    @property
    def modalities(self) -> list[str]:
        return list(self.config.modality_names)

    @property
    def channels(self) -> dict[str, int]:
        """Input channels per modality, in the model's modality order."""
        channels = self.config.modality_channels
        return {m: int(channels[m]) for m in self.modalities}


def check_scene(
    model: Any, rasters: Mapping[str, RasterPaths], outputs: Mapping[str, str | Path | None], options: PredictionOptions
) -> CheckedScene:
    """Check everything before reading a scene; the cheap checks first (output folders, device), since loading
    the model is not cheap. Shared by :func:`predict_scene` and :func:`mfpeft.engine.heatmap.heatmap_figure`.

    Args:
        outputs: the paths to write by what they are (named in messages: ``"output"``, ``"confidence"``...); None
            for one not asked for. The first names the tile.

    Raises:
        ValueError / FileNotFoundError: bad input, with the file and the problem named (also a device this
            machine does not have, and a modality whose raster holds no data at all).
    """
    given = {what: path for what, path in outputs.items() if path is not None}
    for what, path in given.items():
        check_output_path(path, [], what)
    device = resolve_device(options.device)
    loaded = load_mfnet(model, base_model=options.base_model)
    config = mfnet_of(loaded).config
    refs = check_rasters(rasters, config)
    scaling = model_input_scaling(config, options.scaling)
    chip, step = _chip_and_stride(config, options.chip_size, options.stride)
    inputs = [f for ref in refs.values() for f in raster_files(ref)]
    inputs += [source for f in inputs for source in vrt_sources(f)]  # the tiles of a mosaic, the files of a VRT
    paths = {what: check_output_path(path, inputs, what) for what, path in given.items()}
    _check_distinct(paths)
    bands = {m: tuple(int(b) for b in v) for m, v in (options.bands or {}).items()}
    for name, ref in refs.items():
        check_valid_share(name, ref, bands.get(name))
    tile = Tile(name=next(iter(paths.values())).stem, modalities=dict(refs), bands=bands)
    return CheckedScene(loaded, config, refs, paths, tile, scaling, device, chip, step)


# -- running the model on the scene --------------------------------------------------------------------------
Section = tuple[int, int]
"""Output columns ``[start, stop)`` stitched together (:func:`mfpeft.data.geometry.column_sections`)."""


def output_band(
    scene: Scene, band: RowBand, section: Section
) -> tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A finished band of the usable area as output rows of ``section``: ``(output row, class ids (h, w),
    confidence (h, w) or None, probabilities (L, h, w) or None)``, nodata where the first raster has none and outside
    the usable area."""
    class_ids, confidence = scene.output_rows(band.row_start, band.class_ids, band.confidence, band.col_start, section)
    probabilities = None
    if band.probabilities is not None:
        probabilities = scene.output_probabilities(band.probabilities, class_ids, band.col_start, section)
    return scene.row0 + band.row_start, class_ids, confidence, probabilities


def scene_sections(scene: Scene, options: PredictionOptions) -> list[Section]:
    """The output column sections a scene is stitched in, left to right."""
    return column_sections(scene.width, options.section_width)


def scene_stitcher(
    checked: CheckedScene, options: PredictionOptions, scene: Scene, columns: Section | None = None
) -> RowBandStitcher:
    """The stitcher of a scene's sliding windows over the reader's ``columns`` (default: all), as the options
    ask (weights, probabilities)."""
    return RowBandStitcher(
        scene.reader.height,
        scene.reader.width,
        int(checked.config.num_labels),
        checked.chip,
        checked.step,
        weights=window_weights(checked.chip, options.weights),
        device=checked.device,
        probabilities="probabilities" in checked.outputs,
        columns=columns,
        confidence="confidence" in checked.outputs,
    )


def stitched_bands(
    checked: CheckedScene,
    options: PredictionOptions,
    scene: Scene,
    stitcher: RowBandStitcher,
    batches: Sequence[Sequence[ChipWindow]],
) -> Generator[RowBand, None, None]:
    """Read ``batches`` of windows, run them through the model and yield each row band the stitcher finishes.

    Close the generator (``contextlib.closing``) when stopping early: the read-ahead thread is joined then,
    before the reader it uses is closed.
    """
    device = checked.device
    bf16 = _use_bf16(options.bf16, device)
    prefetch = device.type != "cpu" if options.prefetch is None else bool(options.prefetch)
    chips = read_batches(scene.reader, batches, checked.channels, batch_size=options.batch_size, prefetch=prefetch)
    with closing(chips) as hosts:
        for batch, host in zip(batches, hosts):
            pixel_values = {m: torch.from_numpy(host[m][: len(batch)]).to(device) for m in checked.modalities}
            logits = chip_logits(checked.model, pixel_values, tta=options.tta, bf16=bf16)
            yield from stitcher.push_batch(batch, logits)


def _predict_rows(
    checked: CheckedScene,
    options: PredictionOptions,
    scene: Scene,
    writer: PredictionWriter,
    progress: ProgressCallback | None,
) -> int:
    """Every column section of the scene in turn (:func:`_predict_section`); returns the chip count."""
    chips = 0
    for section in scene_sections(scene, options):
        chips += _predict_section(checked, options, scene, writer, section, _section_progress(progress, scene, section))
    return chips


def _section_progress(progress: ProgressCallback | None, scene: Scene, section: Section) -> ProgressCallback | None:
    """``progress`` for the rows of one section, reported as the scene rows' equivalent in pixels done."""
    if progress is None:
        return None
    done_before, width = section[0] * scene.height, section[1] - section[0]

    def report(rows: int, total: int) -> None:
        progress((done_before + rows * width) // scene.width, scene.height)

    return report


def _predict_section(
    checked: CheckedScene,
    options: PredictionOptions,
    scene: Scene,
    writer: PredictionWriter,
    section: Section,
    progress: ProgressCallback | None,
) -> int:
    """Run the sliding windows of output columns ``section`` through the model in batches, stitch the logits
    and write each finished band of rows (and the nodata rows above and below the usable area); returns the
    chip count."""
    top, bottom, batch_size = scene.row0, scene.row0 + scene.reader.height, options.batch_size
    writer.fill(0, top, section)
    columns = scene.usable_columns(section)
    windows: list[ChipWindow] = []
    if columns is None:  # no input covers these columns
        writer.fill(top, bottom, section)
    else:
        stitcher = scene_stitcher(checked, options, scene, columns)
        windows = stitcher.windows
        batches = [windows[first : first + batch_size] for first in range(0, len(windows), batch_size)]
        with closing(stitched_bands(checked, options, scene, stitcher, batches)) as bands:
            for band in bands:
                row, class_ids, confidence, probabilities = output_band(scene, band, section)
                writer.write(row, class_ids, confidence, probabilities, col=section[0])
                if progress is not None:
                    progress(row + class_ids.shape[0], scene.height)
    writer.fill(bottom, scene.height, section)
    if progress is not None:
        progress(scene.height, scene.height)
    return len(windows)


def _is_elevation(modality: str) -> bool:
    return default_scaling(modality).mode == "minmax_tile"


def _draw_preview(checked: CheckedScene, options: PredictionOptions, labels: Path) -> Callable[[Path], Path]:
    """What writes the preview PNG of the class-id raster ``labels`` (with the inputs beside it if asked)."""
    from mfpeft.engine.preview import write_preview

    modalities = checked.modalities
    dsm = next((raster_files(checked.rasters[m])[0] for m in modalities[1:] if _is_elevation(m)), None)
    optical = checked.rasters[modalities[0]]

    def draw(temporary: Path) -> Path:
        return write_preview(
            labels,
            temporary,
            class_names=class_names_of(checked.config),
            palette=checked.config.palette,
            optical=optical if options.preview_inputs else None,
            dsm=dsm if options.preview_inputs else None,
        )

    return draw


def _output_pixel_bytes(checked: CheckedScene) -> int:
    """Bytes per pixel of the output rasters: 1 for class ids, 4 for confidence, 1 per class for probabilities."""
    extra = {"confidence": 4, "probabilities": int(checked.config.num_labels)}
    return 1 + sum(size for what, size in extra.items() if what in checked.outputs)


RowsWriter = Callable[[CheckedScene, Scene, PredictionWriter], int]
"""Writes every row of an opened scene into the open writer; returns the chip count."""


def predicted_rows(options: PredictionOptions, progress: ProgressCallback | None) -> RowsWriter:
    """The :data:`RowsWriter` that runs the model over the scene (:func:`_predict_rows`)."""

    def write_rows(checked: CheckedScene, scene: Scene, writer: PredictionWriter) -> int:
        return _predict_rows(checked, options, scene, writer, progress)

    return write_rows


def _write_scene(
    checked: CheckedScene, options: PredictionOptions, write_rows: RowsWriter, threads: int = 1
) -> tuple[Scene, int, PredictionWriter]:
    """Open the scene, write its rows (``write_rows``) at temporary names, draw the preview, then rename all;
    ``threads``: compression threads of the writer.

    On any failure or interrupt the temporary files are deleted, so the output paths are untouched; a full
    disk becomes one `InsufficientSpaceError` naming the outputs, the bytes needed and the bytes free.
    """
    confidence = checked.outputs.get("confidence")
    writer = PredictionWriter(
        checked.outputs["output"],
        class_names=class_names_of(checked.config),
        palette=checked.config.palette,
        confidence=confidence,
        cog=options.cog,
        probabilities=checked.outputs.get("probabilities"),
        threads=threads,
    )
    with writer:
        with ExitStack() as stack:
            scene = open_scene(
                stack,
                checked.tile,
                chip_size=checked.chip,
                scaling=checked.scaling,
                channels=checked.channels,
                cache_mb=options.gdal_cache_mb,
                output_pixel_bytes=_output_pixel_bytes(checked),
                section_width=options.section_width,
            )
            checked.model.eval().to(checked.device)
            writer.open(scene.profile)
            chips = write_rows(checked, scene, writer)
            writer.flush()  # every raster closed before the inputs and GDAL's block cache setting
        writer.close()  # the COG copies
        # Drawn before any rename, so that an interrupt while drawing leaves no output at all.
        if "preview" in checked.outputs:
            writer.add(checked.outputs["preview"], _draw_preview(checked, options, writer.temporary_output))
    return scene, chips, writer


def predict_scene(
    model: Any,
    rasters: Mapping[str, SceneInput],
    output: str | Path,
    options: PredictionOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    **fields: Any,
) -> PredictionResult:
    """Label a whole scene with an MFNet and write a georeferenced class-id GeoTIFF.

    Args:
        model: an `MFNetForSegmentation`, a `peft.PeftModel` around one, an adapter folder or a Hub repo id
            (put in eval mode and moved to the device).
        rasters: ``{modality name: input}``, one per modality of the model: a local file, a URL (``http(s)://``,
            ``s3://``, ``gs://``, ``/vsi...``), a mosaic of tiles (a :class:`mfpeft.data.mosaic.Mosaic`, a glob
            pattern or ``@list.txt``; :func:`mfpeft.data.mosaic.raster_input`), or a sequence stacking
            single-band files in order. The first modality defines the output grid; the others are aligned onto
            it (``WarpedVRT``).
        output: the class-id GeoTIFF to write; its folder must exist; an existing file is replaced.
        options: a :class:`PredictionOptions`, or **fields: its fields as keywords (``stride=32``), not both.
        progress: called with ``(rows_written, total_rows)`` after each written band.

    Raises:
        TypeError: a keyword that is no option, or both ``options`` and keywords.
        ValueError / FileNotFoundError: bad input, with the file and the problem named (also a device this
            machine does not have, a modality whose raster holds no data, an unreachable URL, mosaic tiles that
            do not fit together).
        InsufficientSpaceError: the disk filled up; nothing is left at the output paths.

    Rasters are read with the raw -> input scaling the model recorded (:func:`model_input_scaling`); ``scaling``
    overrides it per modality, with a warning where it differs.

    Warns:
        UserWarning: a modality with more than 5 % of its pixels without data; a band whose values mostly lie
            outside the raw range the model was trained on; a scaling other than the model's.
    """
    prepare_process()  # first: torch's worker threads inherit the flush (common/runtime.py)
    start_time = time.perf_counter()
    options = PredictionOptions.of(options, fields, "predict_scene")
    with tempfile.TemporaryDirectory(prefix="mfpeft-inputs-") as folder:
        local = materialise_rasters(rasters, Path(folder), Path(output).stem)
        result = _predict_local(model, local, output, options, progress, start_time)
    if options.summary is not None:
        from mfpeft.engine.prediction_summary import write_summary

        write_summary(options.summary, [result])
    return result


def _predict_local(
    model: Any,
    rasters: Mapping[str, RasterPaths],
    output: str | Path,
    options: PredictionOptions,
    progress: ProgressCallback | None,
    start_time: float,
) -> PredictionResult:
    """:func:`predict_scene` once every input is a local raster (URLs and mosaics written as VRTs)."""
    outputs = {
        "output": output,
        "confidence": options.confidence,
        "probabilities": options.probabilities,
        "preview": options.preview,
        "summary": options.summary,
        "vector": options.vector,
    }
    checked = check_scene(model, rasters, outputs, options)
    scene, chips, writer = _write_scene(checked, options, predicted_rows(options, progress))
    write_vector_output(checked, writer, options)
    return result_of(checked, scene, chips, writer, start_time)


def write_vector_output(checked: CheckedScene, writer: PredictionWriter, options: PredictionOptions) -> None:
    """The class polygons of the written class map, when ``options.vector`` asks for them."""
    vector = checked.outputs.get("vector")
    if vector is None:
        return
    from mfpeft.data.vectorise import VectorOptions, write_class_polygons

    vector_options = VectorOptions(simplify=options.vector_simplify, min_area=options.vector_min_area)
    write_class_polygons(checked.outputs["output"], vector, writer.class_names, vector_options)


def result_of(
    checked: CheckedScene, scene: Scene, chips: int, writer: PredictionWriter, start_time: float
) -> PredictionResult:
    """What was written for a scene, timed from ``start_time`` (a `time.perf_counter` reading)."""
    pixel_area, area_unit = pixel_area_of(scene.profile)
    return PredictionResult(
        output=checked.outputs["output"],
        confidence=checked.outputs.get("confidence"),
        preview=checked.outputs.get("preview"),
        height=scene.height,
        width=scene.width,
        chips=chips,
        seconds=time.perf_counter() - start_time,
        class_counts={name: int(c) for name, c in zip(writer.class_names, writer.counts)},
        probabilities=checked.outputs.get("probabilities"),
        pixel_area=pixel_area,
        area_unit=area_unit,
        vector=checked.outputs.get("vector"),
    )


def pixel_area_of(profile: Mapping[str, Any]) -> tuple[float | None, str]:
    """``(area of one pixel, unit)`` of a raster profile: ``|a e - b d|`` of its transform in the CRS's squared
    linear unit (``"square metre"``), ``"square map unit"`` without a CRS; ``(None, "pixel")`` without a
    transform."""
    transform, crs = profile.get("transform"), profile.get("crs")
    if transform is None or transform.is_identity:
        return None, "pixel"
    area = abs(transform.a * transform.e - transform.b * transform.d)
    units = (crs.linear_units if crs is not None else "") or ""
    return float(area), f"square {units}" if units and units != "unknown" else "square map unit"
