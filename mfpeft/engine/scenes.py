"""Many scenes in one run (a scenes CSV file).

:func:`predict_scenes` reads a CSV file with one column per modality of the model plus ``output`` (and optionally
``confidence``, ``probabilities``, ``preview``, ``vector``), one row per scene, and predicts every scene with the
model loaded once, writing each output under an output folder. Before the first scene is predicted the file, the
columns, every cell, every output path and every input (URLs and mosaic tiles opened) are checked, so a bad scenes
file or a bad input of any scene writes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfpeft.data.mosaic import materialise_rasters, vrt_sources
from mfpeft.data.tile import raster_files
from mfpeft.engine.evaluation import is_main_process
from mfpeft.engine.predict import (
    PredictionResult,
    check_output_path,
    check_rasters,
    load_mfnet,
    mfnet_of,
)
from mfpeft.engine.predict_job import SceneJob, is_complete, predict_direct, predict_staged, staged
from mfpeft.engine.prediction_options import PredictionOptions
from mfpeft.engine.prediction_summary import write_summary

__all__ = ["EXTRA_COLUMNS", "SceneRow", "predict_scenes", "read_scenes"]

EXTRA_COLUMNS = ("confidence", "probabilities", "preview", "vector")
"""Optional columns of a scenes file: further outputs of a scene, relative to the output folder."""


@dataclass(frozen=True)
class SceneRow:
    """One scene of a scenes file: its inputs as written (texts) and its output paths."""

    name: str
    line: int
    rasters: dict[str, str]
    outputs: dict[str, Path]
    """``"output"`` and any of :data:`EXTRA_COLUMNS`, under the output folder."""


def _check_header(path: Path, header: Sequence[str], modalities: Sequence[str]) -> None:
    needed = [*modalities, "output"]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ValueError(
            f"{path}: no column {missing[0]!r}; the header needs one column per modality of the model and "
            f"output: {','.join(needed)} (optional: {', '.join(EXTRA_COLUMNS)})"
        )
    unknown = [c for c in header if c not in needed and c not in EXTRA_COLUMNS]
    if unknown:
        raise ValueError(
            f"{path}: column {unknown[0]!r} is neither a modality of the model ({', '.join(modalities)}) nor "
            f"output, {', '.join(EXTRA_COLUMNS)}"
        )
    if len(set(header)) != len(header):
        twice = next(c for c in header if list(header).count(c) > 1)
        raise ValueError(f"{path}: column {twice!r} appears twice in the header")


def _row(path: Path, line: int, cells: Mapping[str, str | None], modalities: Sequence[str], folder: Path) -> SceneRow:
    values = {key: (value or "").strip() for key, value in cells.items() if key is not None}
    if None in cells:
        raise ValueError(f"{path} line {line}: more cells than the header has columns")
    for column in [*modalities, "output"]:
        if not values.get(column):
            raise ValueError(f"{path} line {line}: column {column!r} is empty")
    outputs = {what: folder / values[what] for what in ("output", *EXTRA_COLUMNS) if values.get(what)}
    name = Path(values["output"]).stem
    return SceneRow(name, line, {m: values[m] for m in modalities}, outputs)


def read_scenes(path: str | Path, modalities: Sequence[str], output_dir: str | Path) -> list[SceneRow]:
    """The scenes of a CSV file (header: one column per modality name plus ``output``; one row per scene).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing or unknown column, an empty cell, no scene, two scenes writing one output; each
            naming the file (and line) and the column.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: scenes file not found")
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in reader.fieldnames or []]
        _check_header(file, header, modalities)
        reader.fieldnames = header
        rows = [_row(file, reader.line_num, cells, modalities, Path(output_dir)) for cells in reader]
    if not rows:
        raise ValueError(f"{file}: no scene (a header and no rows)")
    seen: dict[Path, int] = {}
    for row in rows:
        for path_ in row.outputs.values():
            first = seen.setdefault(path_.resolve(), row.line)
            if first != row.line:
                raise ValueError(f"{file} lines {first} and {row.line}: both write {path_}; give each its own")
    return rows


def _check_batch_options(options: PredictionOptions, output_dir: Path) -> None:
    given = [what for what in EXTRA_COLUMNS if getattr(options, what) is not None]
    if given:
        raise ValueError(
            f"{given[0]}={getattr(options, given[0])!r}: with a scenes file each scene's {given[0]} is a column of "
            f"the file (a path under the output folder), not one option for every scene"
        )
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir}: the output folder does not exist")


def _check_summary_apart(summary: Path, rows: Sequence[SceneRow]) -> None:
    for row in rows:
        for what, path in row.outputs.items():
            if path.resolve() == summary.resolve():
                raise ValueError(f"{summary}: the summary needs a path of its own, not scene {row.name!r}'s {what}")


def _checked_inputs(rows: Sequence[SceneRow], config: Any, folder: Path, base: Path) -> list[dict[str, Any]]:
    """Every scene's inputs as local rasters (URLs and mosaics as VRTs in ``folder``), each checked."""
    checked = []
    for row in rows:
        local = check_rasters(materialise_rasters(row.rasters, folder, row.name, base=base), config)
        inputs = [f for ref in local.values() for f in raster_files(ref)]
        inputs += [source for f in inputs for source in vrt_sources(f)]
        for what, path in row.outputs.items():
            check_output_path(path, inputs, what)
        checked.append(dict(local))
    return checked


def _scene_options(options: PredictionOptions, row: SceneRow) -> PredictionOptions:
    return dataclasses.replace(
        options,
        summary=None,
        confidence=row.outputs.get("confidence"),
        probabilities=row.outputs.get("probabilities"),
        preview=row.outputs.get("preview"),
        vector=row.outputs.get("vector"),
    )


def predict_scenes(
    model: Any,
    scenes: str | Path,
    output_dir: str | Path,
    options: PredictionOptions | None = None,
    *,
    resume: bool = False,
    **fields: Any,
) -> list[PredictionResult]:
    """Predict every scene of a scenes CSV file with one model; returns a `PredictionResult` per scene.

    Args:
        model: as for :func:`~mfpeft.engine.predict.predict_scene` (loaded once).
        scenes: a CSV file: a header with one column per modality of the model plus ``output`` (optionally
            ``confidence``, ``probabilities``, ``preview``, ``vector``), one row per scene; inputs as
            ``predict_scene`` takes them (paths, URLs, glob patterns, ``@list.txt``; relative ones relative to the
            file's folder), outputs relative to ``output_dir``.
        output_dir: an existing folder.
        options, **fields: as for ``predict_scene``; ``summary`` is written once for the whole run.
        resume: continue a killed or interrupted run: scenes complete are skipped, the others continue from
            their staged row bands (:mod:`mfpeft.engine.predict_job`; also how several launched processes
            share the scenes out). Returns only the scenes written (none on processes other than 0).

    Raises:
        ValueError / FileNotFoundError: a bad scenes file or input of any scene, before anything is written.
    """
    start = time.perf_counter()
    options = PredictionOptions.of(options, fields, "predict_scenes")
    file, folder_out = Path(scenes).expanduser(), Path(output_dir).expanduser()
    _check_batch_options(options, folder_out)
    if options.summary is not None:
        check_output_path(options.summary, [], "summary")
    loaded = load_mfnet(model, base_model=options.base_model)
    config = mfnet_of(loaded).config
    rows = read_scenes(file, list(config.modality_names), folder_out)
    if options.summary is not None:
        _check_summary_apart(Path(options.summary).expanduser(), rows)
    with tempfile.TemporaryDirectory(prefix="mfpeft-inputs-") as scratch:
        inputs = _checked_inputs(rows, config, Path(scratch), file.parent)
        jobs = [
            SceneJob(local, row.outputs["output"], _scene_options(options, row)) for row, local in zip(rows, inputs)
        ]
        skipped = [job.output for job in jobs if resume and is_complete(job)]
        if staged(resume):
            results = predict_staged(loaded, model, jobs, resume, start_time=start)
        else:
            results = predict_direct(loaded, jobs)
    if options.summary is not None and is_main_process():
        write_summary(options.summary, results, seconds=time.perf_counter() - start, skipped=skipped)
    return results
