"""Sliding-window evaluation as the paper does it: logits summed over overlapping chips, argmax, one pooled
confusion matrix over every pixel of every tile, scored against the eroded labels when the source has them.

With several processes (``accelerate launch``, or the training's ``accelerator``) the work is shared out in
row bands: a band is the rows a :class:`RowBandStitcher` finishes at one grid row of windows, and the bands
of all tiles, in order, are cut into one contiguous run per process, where the largest per-process window
count is least (see :func:`_cuts`). Each process scores only its bands and the per-process integer matrices
are summed, so every pixel is counted exactly once. Not whole tiles only: a split with fewer tiles than
processes (the demo's test split is one tile) would leave processes idle. Not windows with the summed logits
all-reduced: a sum of partial sums adds in another order than one process does. Why bands are bit-identical
to one process:

* a band's summed logits need every window that overlaps it, including windows of earlier grid rows that
  belong to the previous process: those are run again (the overlap at each of the N - 1 cuts);
* those windows are run in the *same batches* as on one process (batch boundaries at multiples of the batch
  size from the tile's first window): a kernel's result may depend on the batch it is in (the kernels must
  still give equal results for equal inputs, as they must for one process to repeat itself);
* windows that overlap none of this process's bands are pushed into the stitcher as zeros: they only
  touch rows that are not scored here, and the stitcher then emits exactly the bands it emits on one
  process, each pixel's sum being the same additions in the same order.

No DataLoader is involved, so nothing is padded or repeated (Accelerate's ``even_batches``).
"""

from __future__ import annotations

import bisect
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from tqdm.auto import tqdm

from mfpeft.common.runtime import prepare_process

from ..data.geometry import ChipWindow, axis_starts
from ..data.raster import TileReader
from ..data.scaling import Scaling, model_input_scaling
from ..data.tile import Tile
from ..metrics.confusion import ConfusionMatrix
from .stitching import RowBandStitcher

_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


class PooledConfusionMatrix(ConfusionMatrix):
    """A confusion matrix summed over every process, with how many windows each process ran the model on."""

    def __init__(self, num_labels: int, matrix: npt.ArrayLike, windows_read: Sequence[int]) -> None:
        super().__init__(num_labels, matrix=matrix)
        self.windows_read = tuple(int(n) for n in windows_read)
        """Windows read and run through the model, per process index (overlap at the cuts included)."""


class _BandPlan(NamedTuple):
    """What one process does with one tile, in window indices (row-major) and scene rows."""

    run_from: int  # first window run through the model (a batch start)
    run_until: int  # the windows up to here reach a scored row; the batches holding them are run whole
    rows: range  # scene rows scored here


def _env_int(names: Sequence[str], default: int) -> int:
    """The first of the environment variables `names` that holds a non-negative integer, else `default`."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return default


def launched_processes() -> int:
    """How many processes a launcher (``accelerate launch``, torchrun, mpirun) started; 1 when run plainly.

    Read from the process group if one is set up, else from the launcher's environment variables (the ones
    Accelerate reads), without initialising anything: a plain run must not create Accelerate's singletons.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return max(_env_int(_WORLD_SIZE_VARIABLES, 1), 1)


def is_main_process() -> bool:
    """Whether this process writes reports: always when run plainly, only rank 0 of a launched group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return _env_int(_RANK_VARIABLES, 0) == 0


def _reach(height: int, chip_size: int, stride: int) -> list[int]:
    """Per band ``k`` of a tile `height` rows tall: the first grid row whose windows reach down into band ``k``.

    Band ``k`` is the scene rows from grid row ``k``'s start to the next one's (the last one: to the bottom):
    what the stitcher emits once grid row ``k``'s windows are all in.
    """
    starts = axis_starts(height, chip_size, stride)
    window = min(chip_size, height)
    # Grid row j reaches row `top` when starts[j] + window > top, i.e. starts[j] > top - window.
    return [bisect.bisect_right(starts, top - window) for top in starts]


def _band_plan(
    height: int, width: int, chip_size: int, stride: int, bands: range, batch_size: int, per_row: int | None = None
) -> _BandPlan:
    """Windows to run and scene rows to score for the grid-row `bands` of a `height` x `width` tile
    (``per_row``: windows per grid row when the stitcher takes a column section only)."""
    starts = axis_starts(height, chip_size, stride)
    if per_row is None:
        per_row = len(axis_starts(width, chip_size, stride))
    if not bands:
        return _BandPlan(0, 0, range(0))
    top = starts[bands.start]
    bottom = starts[bands.stop] if bands.stop < len(starts) else height
    first = _reach(height, chip_size, stride)[bands.start]  # earlier grid rows touch no scored pixel
    run_from = first * per_row // batch_size * batch_size  # back to the start of the one-process batch
    return _BandPlan(run_from, bands.stop * per_row, range(top, bottom))


@torch.no_grad()
def tile_confusion(
    model: Callable[..., Any],
    tile: Tile,
    *,
    modalities: Sequence[str],
    num_labels: int,
    chip_size: int,
    stride: int,
    batch_size: int = 8,
    scaling: Mapping[str, Scaling] | None = None,
    labels: str = "eroded",
    device: torch.device | str = "cpu",
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    bands: range | None = None,
) -> tuple[ConfusionMatrix, int]:
    """Confusion matrix of one tile: stream its sliding windows through `model` and score each finished band.

    `bands`: the grid-row bands to score (see :func:`_band_plan`; None: all, the whole tile). Returns the
    ``(num_labels, num_labels)`` matrix and the number of windows run through the model.
    """
    matrix, windows_read = ConfusionMatrix(num_labels), 0
    with TileReader(tile, list(modalities), chip_size=chip_size, scaling=scaling, labels=labels) as reader:
        if not reader.has_labels:
            raise ValueError(f"tile {tile.name!r} has no labels to evaluate against")
        # Class ids only: the confusion matrix needs no softmax.
        stitcher = RowBandStitcher(
            reader.height, reader.width, num_labels, chip_size, stride, device=device, confidence=False
        )
        windows = stitcher.windows
        grid_rows = len(axis_starts(reader.height, chip_size, stride))
        bands = range(grid_rows) if bands is None else bands
        if bands.step != 1 or bands.start < 0 or bands.stop > grid_rows:
            raise ValueError(f"bands must be a contiguous part of range({grid_rows}) for tile {tile.name!r}: {bands}")
        plan = _band_plan(reader.height, reader.width, chip_size, stride, bands, batch_size)
        zeros = torch.zeros(num_labels, windows[0].height, windows[0].width, device=device)
        for window in windows[: plan.run_from]:  # reach no scored row: zeros keep the stitcher in step
            stitcher.push(window, zeros)
        for start in range(plan.run_from, plan.run_until, batch_size):
            batch = windows[start : start + batch_size]  # whole one-process batches, past run_until too
            chips = [reader.read(window)["pixel_values"] for window in batch]
            pixel_values = {
                name: torch.from_numpy(np.stack([chip[name] for chip in chips])).to(device) for name in modalities
            }
            with autocast():
                logits = model(pixel_values=pixel_values).logits
            windows_read += len(batch)
            for band in stitcher.push_batch(batch, logits.float()):
                if band.row_start not in plan.rows:
                    continue
                height = band.class_ids.shape[0]
                reference = reader.read(ChipWindow(band.row_start, 0, height, reader.width))["labels"]
                matrix.update(band.class_ids, reference[:height, : reader.width])
    return matrix, windows_read


def _grid(tile: Tile, modalities: Sequence[str], chip_size: int, stride: int, labels: str) -> tuple[list[int], int]:
    """``(reach per band (see _reach), windows per grid row)`` of a tile's sliding grid, from raster headers."""
    # Unscaled: the grid does not depend on the scaling, and tile statistics would cost a pass over the tile.
    unscaled = {name: Scaling(mode="none") for name in modalities}
    with TileReader(tile, list(modalities), scaling=unscaled, labels=labels) as reader:
        if not reader.has_labels:
            raise ValueError(f"tile {tile.name!r} has no labels to evaluate against")
        height, width = reader.height, reader.width
    return _reach(height, chip_size, stride), len(axis_starts(width, chip_size, stride))


def _cuts(grids: Sequence[tuple[list[int], int]], world: int) -> list[int]:
    """Where the bands of all tiles, in order, are cut into `world` contiguous runs: ``world + 1`` positions.

    A run's cost is the windows it reads: its own bands' plus, when it starts inside a tile, the windows of
    earlier grid rows that reach its first band (run again). The cut minimises the largest cost, so it falls
    on a tile boundary (no overlap) unless cutting a tile balances better. Every process computes the same.
    """
    own = [0]  # windows of all bands before position i
    overlap = []  # windows run again by a run starting at position i
    for reach, per_row in grids:
        for k, first in enumerate(reach):
            own.append(own[-1] + per_row)
            overlap.append((k - first) * per_row)

    def greedy(budget: int) -> list[int] | None:
        cuts = [0]
        while cuts[-1] < len(overlap) and len(cuts) <= world:
            start = cuts[-1]
            end = bisect.bisect_right(own, own[start] - overlap[start] + budget) - 1
            if end <= start:
                return None  # one band alone costs more than the budget
            cuts.append(end)
        return cuts if cuts[-1] == len(overlap) else None

    low, high = 1, own[-1]  # high: one run takes everything
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if greedy(middle) is not None else (middle + 1, high)
    cuts = greedy(low) or [0, len(overlap)]
    return cuts + [len(overlap)] * (world + 1 - len(cuts))  # the last processes may get nothing


def _shares(grids: Sequence[tuple[list[int], int]], rank: int, world: int) -> list[tuple[int, range]]:
    """Process `rank`'s ``(tile index, grid-row bands)``, from :func:`_cuts`."""
    cuts = _cuts(grids, world)
    start, stop = cuts[rank], cuts[rank + 1]
    shares: list[tuple[int, range]] = []
    before = 0  # bands of all earlier tiles
    for index, (reach, _) in enumerate(grids):
        bands = range(max(start - before, 0), min(stop - before, len(reach)))
        if bands:
            shares.append((index, bands))
        before += len(reach)
    return shares


def evaluate_tiles(
    model: Callable[..., Any],
    tiles: Sequence[Tile],
    *,
    modalities: Sequence[str],
    num_labels: int,
    chip_size: int,
    stride: int,
    batch_size: int = 8,
    scaling: Mapping[str, Scaling] | None = None,
    labels: str = "eroded",
    accelerator: Any = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> PooledConfusionMatrix:
    """Pooled ``(num_labels, num_labels)`` confusion matrix over `tiles`, shared out in row bands over the
    processes of `accelerator` if given (see the module docstring). Every process returns the same matrix.
    """
    if not tiles:
        raise ValueError("no tiles to evaluate: the split is empty")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    if device is None:
        device = accelerator.device if accelerator is not None else "cpu"
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    shares: list[tuple[int, range | None]] = [(index, None) for index in range(len(tiles))]
    if world > 1:
        grids = [_grid(tile, modalities, chip_size, stride, labels) for tile in tiles]
        shares = list(_shares(grids, rank, world))
    matrix, windows_read = ConfusionMatrix(num_labels), 0
    for index, bands in tqdm(shares, desc="evaluate", leave=False, disable=not progress or rank != 0):
        part, read = tile_confusion(
            model,
            tiles[index],
            modalities=modalities,
            num_labels=num_labels,
            chip_size=chip_size,
            stride=stride,
            batch_size=batch_size,
            scaling=scaling,
            labels=labels,
            device=device,
            autocast=autocast,
            bands=bands,
        )
        matrix += part
        windows_read += read
    if world == 1:
        return PooledConfusionMatrix(num_labels, matrix.matrix, [windows_read])
    # One integer all-reduce: the counts, then a one-hot slot per process for its window count. Integers sum
    # exactly in any order, and each pixel was counted by one process only.
    counts = torch.zeros(num_labels * num_labels + world, dtype=torch.int64)
    counts[: num_labels * num_labels] = torch.from_numpy(matrix.matrix.reshape(-1))
    counts[num_labels * num_labels + rank] = windows_read
    total = accelerator.reduce(counts.to(accelerator.device), reduction="sum").cpu()
    pooled = total[: num_labels * num_labels].reshape(num_labels, num_labels).numpy()
    return PooledConfusionMatrix(num_labels, pooled, total[num_labels * num_labels :].tolist())


def model_source_options(
    dataset: str, source_options: Mapping[str, Any] | None, config: Any, model_name_or_path: str
) -> dict[str, Any]:
    """Data source options for scoring a model: for the folder source, its recorded label encoding (if any)."""
    from ..data.labels import use_recorded_encoding
    from ..data.tile import LabelEncoding

    options = dict(source_options or {})
    recorded = getattr(config, "label_encoding", None)
    if dataset != "folder" or recorded is None:
        return options
    origin = f"the label encoding recorded with the model ({model_name_or_path}, config.json)"
    return use_recorded_encoding(options, LabelEncoding.from_dict(recorded), origin)


def check_model_classes(tiles: Sequence[Tile], config: Any, dataset: str) -> None:
    """The tiles' classes are the model's, in order: else class ``k`` of one is scored as class ``k`` of the other."""
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    names = [id2label.get(k, f"LABEL_{k}") for k in range(int(config.num_labels))]
    found = list(tiles[0].label_encoding.classes)
    if found != names:
        raise ValueError(
            f"data set {dataset!r} has the classes {found} but the model predicts {names}; give the labels' "
            "--classes / --code-map as the model was trained (or omit them for the folder source)"
        )


def evaluate_model(
    model_name_or_path: str,
    dataset: str,
    *,
    data_dir: str | None = None,
    split: str = "test",
    stride: int = 32,
    batch_size: int = 8,
    base_model: str | None = None,
    source_options: Mapping[str, Any] | None = None,
    device: str | None = None,
    scaling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a saved MFNet adapter on a split of a data source; returns the scores and the confusion matrix.

    Rasters are read with the raw -> input scaling the model recorded (`model_input_scaling`; ``scaling``,
    ``--scaling``, overrides it, a ``stats`` computed over the source's train split); a prepared (hf) data set
    is used as stored, and one prepared with another scaling than the model's is an error, never scaled twice.

    Under ``accelerate launch`` with N processes each process scores about 1/N of the windows and every
    process returns the same (pooled) result; report it from :func:`is_main_process` only. Each process
    then uses its own device (`device` = ``"cpu"`` still forces the CPU).

    The folder source reads the labels with the label encoding the model recorded (code map, classes), so
    ``source_options`` need not repeat it; label options given anyway must agree with it.

    Raises:
        ValueError: a label option disagrees with the model's recorded encoding, or the data set's classes are
            not the model's (naming both).
    """
    prepare_process()  # first: torch's worker threads inherit the flush (common/runtime.py)
    from ..models.modeling_mfnet import MFNetForSegmentation
    from .predict import mfnet_of

    model = MFNetForSegmentation.from_pretrained(model_name_or_path, base_model=base_model)
    config = mfnet_of(model).config  # an adapter's base model, or a full checkpoint itself
    splits = _model_splits(dataset, data_dir, split, source_options, config, model_name_or_path)
    accelerator, target = _evaluation_device(device)
    model.to(target).eval()
    _check_tiles_fit_model(splits[split], config, dataset, source_options)
    expected = model_input_scaling(config, scaling, splits["train"])
    if is_main_process():  # stderr: stdout carries the report
        from .summary import evaluation_summary

        classes = list(config.id2label.values())
        print(evaluation_summary(splits[split], classes, config.image_size, stride, expected), file=sys.stderr)
    matrix = evaluate_tiles(
        model,
        splits[split],
        modalities=config.modality_names,
        num_labels=config.num_labels,
        chip_size=config.image_size,
        stride=stride,
        batch_size=batch_size,
        scaling=expected,
        accelerator=accelerator,
        device=target,
    )
    return _scores_report(matrix, config)


def _model_splits(
    dataset: str,
    data_dir: str | None,
    split: str,
    source_options: Mapping[str, Any] | None,
    config: Any,
    model_name_or_path: str,
) -> dict[str, list[Tile]]:
    """The data source's splits, read with the model's recorded label encoding; ``split`` has tiles with the
    model's classes."""
    from ..data.sources import get_source

    splits = get_source(dataset, data_dir, **model_source_options(dataset, source_options, config, model_name_or_path))
    if split not in splits or not splits[split]:
        raise ValueError(f"data set {dataset!r} has no tiles in split {split!r}")
    check_model_classes(splits[split], config, dataset)
    return splits


def _evaluation_device(device: str | None) -> tuple[Any, torch.device]:
    """``(accelerator, device)``: under a launcher with several processes an `Accelerator` and its device, else
    None and `device` resolved (None: the best one available)."""
    if launched_processes() > 1:
        from accelerate import Accelerator

        # No mixed precision whatever the launch config says: one process runs in float32, and N processes
        # must give its scores exactly.
        accelerator = Accelerator(cpu=device is not None and torch.device(device).type == "cpu", mixed_precision="no")
        return accelerator, accelerator.device
    from .devices import resolve_device

    return None, resolve_device(device)


def _check_tiles_fit_model(
    tiles: Sequence[Tile], config: Any, dataset: str, source_options: Mapping[str, Any] | None
) -> None:
    """The split's blocks hold whole chips of the model, and its tiles have every modality the model reads."""
    from ..data.blocks import check_block_size

    check_block_size(dict(source_options or {}), config.image_size, "the model's chip size")
    missing = [m for m in config.modality_names if m not in tiles[0].modalities]
    if missing:
        raise ValueError(f"the model needs modalities {missing} that data set {dataset!r} does not have")


def _scores_report(matrix: ConfusionMatrix, config: Any) -> dict[str, Any]:
    """The paper's scores of the pooled matrix over the model's classes, JSON-ready, with the matrix itself."""
    from ..metrics.scores import scores_to_json, segmentation_scores

    scores = segmentation_scores(matrix.matrix, list(config.id2label.values()), config.score_classes)
    result = scores_to_json(scores)
    result["confusion_matrix"] = matrix.matrix.tolist()
    return result
