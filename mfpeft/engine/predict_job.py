"""Prediction shared out over processes and resumable: completed row bands staged next to each output.

A *row band* is what :class:`~mfpeft.engine.stitching.RowBandStitcher` emits once one grid row of windows is in:
band ``k`` of a column section (:attr:`PredictionOptions.section_width`) is the section's scene rows from grid
row ``k``'s start to the next one's. :func:`predict_staged` cuts the bands of every section of every scene of a
job (sections are taken like scenes, left to right) into one contiguous run per process
(``accelerate launch --num_processes N``), the cut chosen as the evaluation does
(:func:`mfpeft.engine.evaluation._cuts`). A process starting inside a
scene runs, whole, the one-process batches of the earlier windows that reach its first band, so each pixel's
logit sum is made of the same chips, in the same batches, added in the same order as in one process: the
class ids, confidence and probabilities equal a one-process run's bit for bit.

Each completed band is saved atomically in the scene's staging folder ``.<output name>.partial/`` beside the
output, with ``options.json``, a fingerprint of everything the bands depend on. Once every process is done,
process 0 writes each output from its bands in order, with the same calls as the one-process writer (so the
files are the same bytes), renames it into place and removes the staging folder. A run killed at any point and
rerun with ``resume`` computes only the missing bands; a rerun with other options is refused, naming the
option that differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mfpeft.common.files import write_atomically, write_json
from mfpeft.data.geometry import ChipWindow, axis_starts, section_windows
from mfpeft.data.mosaic import vrt_sources
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling
from mfpeft.data.tile import raster_files
from mfpeft.data.windows import Scene, open_scene
from mfpeft.data.writer import PredictionWriter
from mfpeft.engine.evaluation import _band_plan, _reach, _shares, is_main_process, launched_processes
from mfpeft.engine.predict import (
    CheckedScene,
    PredictionResult,
    RasterPaths,
    Section,
    _output_pixel_bytes,
    _use_bf16,
    _write_scene,
    check_scene,
    output_band,
    result_of,
    scene_sections,
    scene_stitcher,
    stitched_bands,
    write_vector_output,
)
from mfpeft.engine.prediction_options import PredictionOptions
from mfpeft.engine.stitching import RowBand

__all__ = ["SceneJob", "is_complete", "predict_direct", "predict_one", "predict_staged", "staged", "staging_folder"]

OPTIONS_FILE = "options.json"
BAND_GLOB = "band-*-*.npz"


def staging_folder(output: str | Path) -> Path:
    """Where the completed row bands of ``output`` are kept until it is written: ``.<name>.partial/`` beside it."""
    path = Path(output).expanduser()
    return path.with_name(f".{path.name}.partial")


def _band_file(staging: Path, section: int, band: int) -> Path:
    return staging / f"band-{section:04d}-{band:06d}.npz"


def done_bands(staging: Path, section: int) -> set[int]:
    """The bands of column section ``section`` saved in ``staging`` (complete files only: each is renamed into
    place when written)."""
    if not staging.is_dir():
        return set()
    return {int(p.stem.split("-")[2]) for p in staging.glob(f"band-{section:04d}-*.npz")}


def staged_count(staging: Path) -> int:
    """How many bands (of every section) are saved in ``staging``."""
    return sum(1 for _ in staging.glob(BAND_GLOB)) if staging.is_dir() else 0


@dataclass(frozen=True)
class SceneJob:
    """One scene of a staged job: local rasters per modality, the output, and its options (paths included)."""

    rasters: Mapping[str, RasterPaths]
    output: Path
    options: PredictionOptions


# -- the fingerprint ----------------------------------------------------------------------------------------
def _file_stamp(path: Path) -> list[Any]:
    """Path, size and time of a file; for a VRT (a URL or a mosaic is read through one written at a temporary
    path for each run) its content instead, and the stamps of the local files it reads."""
    if path.suffix.lower() == ".vrt":
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return [digest, *(_file_stamp(source) for source in vrt_sources(path) if source.is_file())]
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _model_stamp(model: Any, given: Any) -> str:
    """The model as given (a folder: its files' sizes and times) or, for an instance, a hash of its weights."""
    if isinstance(given, (str, Path)) and Path(given).expanduser().is_dir():
        folder = Path(given).expanduser()
        return json.dumps([_file_stamp(p) for p in sorted(folder.rglob("*")) if p.is_file()])
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(checked: CheckedScene, options: PredictionOptions, model: Any) -> dict[str, str]:
    """Everything the saved bands depend on, by option name (texts): a resumed run must match it."""
    values: dict[str, Any] = {
        "model": _model_stamp(checked.model, model),
        "inputs": {m: [_file_stamp(f) for f in raster_files(ref)] for m, ref in checked.rasters.items()},
        "chip_size": checked.chip,
        "stride": checked.step,
        "batch_size": options.batch_size,
        "weights": options.weights,
        "tta": options.tta,
        "bf16": _use_bf16(options.bf16, checked.device),
        "device": checked.device.type,
        "bands": {m: list(b) for m, b in checked.tile.bands.items()},
        "scaling": {m: repr(s) for m, s in checked.scaling.items()},
        "confidence": "confidence" in checked.outputs,
        "probabilities": "probabilities" in checked.outputs,
        "section_width": options.section_width,
    }
    return {name: json.dumps(value, sort_keys=True) for name, value in values.items()}


def check_resumable(staging: Path, expected: Mapping[str, str], output: Path) -> None:
    """Raise a one-line ValueError naming the first option that differs from the interrupted run's."""
    file = staging / OPTIONS_FILE
    if not file.is_file():
        return
    try:
        recorded = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    for name, value in expected.items():
        if recorded.get(name) != value:
            then = "" if name in ("model", "inputs") else f" ({recorded.get(name)} then, {value} now)"
            raise ValueError(
                f"--resume {output}: {name} differs from the interrupted run's{then}; rerun with the same options, "
                f"or without --resume to start over (its completed bands are in {staging})"
            )


# -- the plan ---------------------------------------------------------------------------------------------
@dataclass
class PlannedScene:
    """A checked scene of the job, its band grid, its column sections and its staging folder."""

    job: SceneJob
    checked: CheckedScene
    height: int
    width: int
    starts: list[int]
    reach: list[int]
    sections: list[Section]
    """Output columns stitched together, left to right."""
    per_row: list[int]
    """Windows per grid row of each section (0: no input covers it, nothing to compute)."""
    staging: Path
    fingerprint: dict[str, str]

    @property
    def total_bands(self) -> int:
        """Bands to compute over all sections."""
        return len(self.starts) * sum(1 for n in self.per_row if n)


def _plan_scene(model: Any, given: Any, job: SceneJob) -> PlannedScene:
    outputs = {
        "output": job.output,
        "confidence": job.options.confidence,
        "probabilities": job.options.probabilities,
        "preview": job.options.preview,
    }
    checked = check_scene(model, job.rasters, outputs, job.options)
    # Unscaled: the grid does not depend on the scaling, and tile statistics would cost a pass over the tile.
    unscaled = {name: Scaling(mode="none") for name in checked.modalities}
    with TileReader(checked.tile, checked.modalities, scaling=unscaled, labels="none") as reader:
        height, width = reader.height, reader.width
        scene = Scene(reader, None, reader.profile)
        sections = scene_sections(scene, job.options)
        usable = [scene.usable_columns(section) for section in sections]
    starts = axis_starts(height, checked.chip, checked.step)
    reach = _reach(height, checked.chip, checked.step)
    per_row = [
        0 if cols is None else len(section_windows(height, width, checked.chip, checked.step, cols)) // len(starts)
        for cols in usable
    ]
    staging = staging_folder(job.output)
    stamp = fingerprint(checked, job.options, given)
    return PlannedScene(job, checked, height, width, starts, reach, sections, per_row, staging, stamp)


def _runs(bands: range, done: set[int]) -> list[range]:
    """The maximal runs of ``bands`` not in ``done``."""
    runs: list[range] = []
    for band in bands:
        if band in done:
            continue
        if runs and runs[-1].stop == band:
            runs[-1] = range(runs[-1].start, band + 1)
        else:
            runs.append(range(band, band + 1))
    return runs


# -- computing bands -------------------------------------------------------------------------------------
def _save_band(scene: Scene, band: RowBand, section: Section, path: Path) -> None:
    row, class_ids, confidence, probabilities = output_band(scene, band, section)
    arrays = {"row": np.int64(row), "class_ids": class_ids}
    if confidence is not None:
        arrays["confidence"] = confidence
    if probabilities is not None:
        arrays["probabilities"] = probabilities

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, write)


def _compute_run(plan: PlannedScene, scene: Scene, section: int, run: range, on_band: Callable[[], None]) -> None:
    """Bands ``run`` of a scene's column section ``section``, each saved in its staging folder as soon as it is
    finished."""
    checked, options = plan.checked, plan.job.options
    reader, device, batch_size = scene.reader, checked.device, options.batch_size
    stitcher = scene_stitcher(checked, options, scene, scene.usable_columns(plan.sections[section]))
    windows = stitcher.windows
    band_plan = _band_plan(
        reader.height, reader.width, checked.chip, checked.step, run, batch_size, per_row=stitcher.per_row
    )
    zeros = torch.zeros(stitcher.num_labels, windows[0].height, windows[0].width, device=device)
    for window in windows[: band_plan.run_from]:  # reach no band of the run: zeros keep the stitcher in step
        stitcher.push(window, zeros)
    starts = range(band_plan.run_from, band_plan.run_until, batch_size)
    batches: list[list[ChipWindow]] = [windows[s : s + batch_size] for s in starts]
    band_of = {row: k for k, row in enumerate(plan.starts)}
    with closing(stitched_bands(checked, options, scene, stitcher, batches)) as bands:
        for band in bands:
            k = band_of[band.row_start]
            if k in run:
                _save_band(scene, band, plan.sections[section], _band_file(plan.staging, section, k))
                on_band()
            if k >= run.stop - 1:
                return


def _compute_share(plan: PlannedScene, section: int, bands: range, on_band: Callable[[], None]) -> None:
    """The bands of ``bands`` of column section ``section`` not staged yet, run by run, in one opening of the
    scene."""
    runs = _runs(bands, done_bands(plan.staging, section))
    if not runs:
        return
    checked = plan.checked
    with ExitStack() as stack:
        scene = open_scene(
            stack,
            checked.tile,
            chip_size=checked.chip,
            scaling=checked.scaling,
            channels=checked.channels,
            cache_mb=plan.job.options.gdal_cache_mb,
            output_pixel_bytes=_output_pixel_bytes(checked),
            section_width=plan.job.options.section_width,
        )
        checked.model.eval().to(checked.device)
        for run in runs:
            _compute_run(plan, scene, section, run, on_band)


# -- writing the outputs from the bands ----------------------------------------------------------------------
def _assemble(plan: PlannedScene, start_time: float, threads: int) -> PredictionResult:
    """Write the scene's outputs from its saved bands (same writer calls as one process, compressing on
    ``threads``: the other processes are done), then drop the staging."""
    count = len(plan.starts)
    # Only the grid is needed: unscaled, the scene opens without a pass over the tile for its statistics.
    checked = dataclasses.replace(plan.checked, scaling={m: Scaling(mode="none") for m in plan.checked.modalities})

    def write_rows(checked: CheckedScene, scene: Scene, writer: PredictionWriter) -> int:
        top, bottom = scene.row0, scene.row0 + scene.reader.height
        for index, section in enumerate(plan.sections):
            writer.fill(0, top, section)
            if not plan.per_row[index]:
                writer.fill(top, bottom, section)
            for band in range(count if plan.per_row[index] else 0):
                with np.load(_band_file(plan.staging, index, band)) as data:
                    probabilities = data["probabilities"] if "probabilities" in data.files else None
                    confidence = data["confidence"] if "confidence" in data.files else None
                    row, ids = int(data["row"]), data["class_ids"]
                    writer.write(row, ids, confidence, probabilities, col=section[0])
            writer.fill(bottom, scene.height, section)
        return count * sum(plan.per_row)

    scene, chips, writer = _write_scene(checked, plan.job.options, write_rows, threads)
    write_vector_output(plan.checked, writer, plan.job.options)
    shutil.rmtree(plan.staging, ignore_errors=True)
    return result_of(plan.checked, scene, chips, writer, start_time)


# -- the job ------------------------------------------------------------------------------------------------
class _Group:
    """This process's place among the launched ones (one process: no Accelerate at all)."""

    def __init__(self, device: Any) -> None:
        self.accelerator: Any = None
        self.rank, self.world = 0, 1
        if launched_processes() > 1:
            from accelerate import Accelerator

            cpu = device is not None and torch.device(device).type == "cpu"
            self.accelerator = Accelerator(cpu=cpu, mixed_precision="no")
            self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes

    @property
    def device(self) -> Any:
        return None if self.accelerator is None else self.accelerator.device

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def _say(group: _Group, text: str) -> None:
    if group.rank == 0:
        print(text, file=sys.stdout, flush=True)


def _prepare_staging(plans: Sequence[PlannedScene], group: _Group, resume: bool) -> None:
    """Check every resumed scene's options (each process: all refuse alike), then set up the staging folders."""
    if resume:
        for plan in plans:
            check_resumable(plan.staging, plan.fingerprint, plan.job.output)
    group.barrier()
    if group.rank == 0:
        for plan in plans:
            if not resume and plan.staging.exists():
                shutil.rmtree(plan.staging)
            plan.staging.mkdir(exist_ok=True)
            write_json(plan.staging / OPTIONS_FILE, plan.fingerprint)
            done = staged_count(plan.staging)
            if resume and done:
                _say(group, f"resuming {plan.job.output}: {done} of {plan.total_bands} row bands already done")
    group.barrier()


def is_complete(job: SceneJob) -> bool:
    """Whether an earlier run finished ``job``: every output it asks for exists, and no staging folder."""
    extra = (job.options.confidence, job.options.probabilities, job.options.preview, job.options.vector)
    written = [job.output, *(Path(path).expanduser() for path in extra if path is not None)]
    return all(path.is_file() for path in written) and not staging_folder(job.output).exists()


def _unfinished(jobs: Sequence[SceneJob], group: _Group, resume: bool) -> list[SceneJob]:
    """With ``resume``: the jobs left to do; one line per scene skipped (:func:`is_complete`)."""
    left = []
    for job in jobs:
        if resume and is_complete(job):
            _say(group, f"skipped {job.output}: complete from an earlier run")
        else:
            left.append(job)
    return left


def _progress_bar(plans: Sequence[PlannedScene], group: _Group) -> tuple[Any, Callable[[], None]]:
    """One bar for the job (every scene's bands, all processes: counted from the staging folders)."""
    total = sum(p.total_bands for p in plans)
    done = sum(staged_count(p.staging) for p in plans)
    bar = tqdm(total=total, initial=done, desc="predict", unit="band", disable=None if group.rank == 0 else True)
    last = [0.0]

    def update() -> None:
        now = time.monotonic()
        if bar.disable or now - last[0] < 0.5:
            return
        last[0] = now
        bar.n = sum(staged_count(p.staging) for p in plans)
        bar.refresh()

    return bar, update


def predict_staged(
    model: Any, given: Any, jobs: Sequence[SceneJob], resume: bool, *, start_time: float | None = None
) -> list[PredictionResult]:
    """Predict ``jobs`` with the loaded ``model`` (``given``: as the caller named it, for the fingerprint),
    shared out over the launched processes, each band staged. Process 0 returns the results of the scenes it
    wrote, the others an empty list; times run from ``start_time`` (a `time.perf_counter` reading; default now).
    """
    start_time = time.perf_counter() if start_time is None else start_time
    group = _Group(jobs[0].options.device if jobs else None)
    if group.device is not None:
        jobs = [dataclasses.replace(j, options=dataclasses.replace(j.options, device=group.device)) for j in jobs]
    jobs = _unfinished(jobs, group, resume)
    plans = [_plan_scene(model, given, job) for job in jobs]
    _prepare_staging(plans, group, resume)
    bar, update = _progress_bar(plans, group)
    # The units shared out: every section with windows of every scene, in order.
    units = [(plan, index) for plan in plans for index, per_row in enumerate(plan.per_row) if per_row]
    grids = [(plan.reach, plan.per_row[index]) for plan, index in units]
    with bar:
        for unit, bands in _shares(grids, group.rank, group.world):
            plan, section = units[unit]
            bar.set_postfix_str(plan.job.output.name, refresh=False)
            _compute_share(plan, section, bands, update)
        group.barrier()
        results = [_assemble(plan, start_time, group.world) for plan in plans] if group.rank == 0 else []
        bar.n = bar.total
        bar.refresh()
    group.barrier()
    return results


def staged(resume: bool) -> bool:
    """Whether a run stages its bands: when resuming, and always with several processes."""
    return resume or launched_processes() > 1


def _output_height(rasters: Mapping[str, Any]) -> int:
    """Rows of the output grid (the first raster's), 0 if it cannot be opened (check_scene will say why)."""
    import rasterio

    first = next(iter(rasters.values()), None)
    try:
        with rasterio.open(raster_files(first)[0]) as src:
            return int(src.height)
    except Exception:
        return 0


def predict_direct(model: Any, jobs: Sequence[SceneJob]) -> list[PredictionResult]:
    """Each scene of ``jobs`` in turn in this one process, unstaged, under one progress bar of output rows."""
    from mfpeft.engine.predict import predict_scene

    heights = [_output_height(job.rasters) for job in jobs]
    results = []
    with tqdm(total=sum(heights), desc="predict", unit="row", disable=None) as bar:
        for job, height in zip(jobs, heights):
            before = bar.n
            bar.set_postfix_str(job.output.name, refresh=False)

            def advance(rows: int, total: int, before: int = before) -> None:
                bar.update(before + rows - bar.n)

            results.append(predict_scene(model, job.rasters, job.output, job.options, progress=advance))
            shutil.rmtree(staging_folder(job.output), ignore_errors=True)  # bands of an older run: outdated now
            bar.update(before + height - bar.n)
    return results


def predict_one(
    model: Any, rasters: Mapping[str, Any], output: str | Path, options: PredictionOptions, *, resume: bool = False
) -> list[PredictionResult]:
    """:func:`~mfpeft.engine.predict.predict_scene` under a progress bar, shared out over the launched
    processes and resumable (``resume``: continue from the bands a killed or interrupted run staged). Returns
    the written scene's result (none when skipped as complete, and on processes other than 0)."""
    import tempfile

    from mfpeft.data.mosaic import materialise_rasters
    from mfpeft.engine.predict import load_mfnet
    from mfpeft.engine.prediction_summary import write_summary

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfpeft-inputs-") as folder:
        local = materialise_rasters(rasters, Path(folder), Path(output).stem)
        job = SceneJob(local, Path(output).expanduser(), dataclasses.replace(options, summary=None))
        skipped = [job.output] if resume and is_complete(job) else []
        if staged(resume):
            loaded = load_mfnet(model, base_model=options.base_model)
            results = predict_staged(loaded, model, [job], resume, start_time=start)
        else:
            results = predict_direct(model, [job])
    if options.summary is not None and is_main_process():
        write_summary(options.summary, results, seconds=time.perf_counter() - start, skipped=skipped)
    return results
