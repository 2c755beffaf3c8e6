"""Sliding-window evaluation as the paper does it: logits summed over overlapping chips, argmax, one pooled
confusion matrix over every pixel of every tile, scored against the eroded labels when the source has them.

Tiles are shared out between processes whole (tile i goes to process i mod world size) and the per-process
matrices are summed, so each pixel is counted exactly once whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.geometry import ChipWindow
from ..data.raster import TileReader
from ..data.scaling import Scaling
from ..data.tile import Tile
from ..metrics.confusion import ConfusionMatrix
from .stitching import RowBandStitcher


def model_scaling(config: Any) -> dict[str, Scaling] | None:
    """The data scaling recorded in an MFNet config (None: the source's or the default scaling)."""
    recorded = getattr(config, "input_scaling", None) or {}
    return {name: Scaling.from_dict(value) for name, value in recorded.items()} or None


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
) -> ConfusionMatrix:
    """Confusion matrix of one tile: stream its sliding windows through `model` and score each finished band."""
    matrix = ConfusionMatrix(num_labels)
    with TileReader(tile, list(modalities), chip_size=chip_size, scaling=scaling, labels=labels) as reader:
        if not reader.has_labels:
            raise ValueError(f"tile {tile.name!r} has no labels to evaluate against")
        stitcher = RowBandStitcher(reader.height, reader.width, num_labels, chip_size, stride, device=device)
        windows = stitcher.windows
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            chips = [reader.read(window)["pixel_values"] for window in batch]
            pixel_values = {
                name: torch.from_numpy(np.stack([chip[name] for chip in chips])).to(device) for name in modalities
            }
            with autocast():
                logits = model(pixel_values=pixel_values).logits
            for band in stitcher.push_batch(batch, logits.float()):
                height = band.class_ids.shape[0]
                reference = reader.read(ChipWindow(band.row_start, 0, height, reader.width))["labels"]
                matrix.update(band.class_ids, reference[:height, : reader.width])
    return matrix


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
) -> ConfusionMatrix:
    """Pooled confusion matrix over `tiles`, shared out over the processes of `accelerator` if given.

    Every process returns the same (summed) matrix.
    """
    if not tiles:
        raise ValueError("no tiles to evaluate: the split is empty")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    if device is None:
        device = accelerator.device if accelerator is not None else "cpu"
    autocast = accelerator.autocast if accelerator is not None else nullcontext
    matrix = ConfusionMatrix(num_labels)
    mine = list(tiles)[rank::world]
    for tile in tqdm(mine, desc="evaluate", leave=False, disable=not progress or rank != 0):
        matrix += tile_confusion(
            model, tile, modalities=modalities, num_labels=num_labels, chip_size=chip_size, stride=stride,
            batch_size=batch_size, scaling=scaling, labels=labels, device=device, autocast=autocast,
        )  # fmt: skip
    if world > 1:
        counts = torch.as_tensor(matrix.matrix, device=accelerator.device)
        matrix = ConfusionMatrix(num_labels, matrix=accelerator.reduce(counts, reduction="sum").cpu().numpy())
    return matrix


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
) -> dict[str, Any]:
    """Score a saved MFNet adapter on a split of a data source; returns the scores and the confusion matrix."""
    from ..data.sources import get_source
    from ..metrics.scores import scores_to_json, segmentation_scores
    from ..models.modeling_mfnet import MFNetForSegmentation

    splits = get_source(dataset, data_dir, **dict(source_options or {}))
    if split not in splits or not splits[split]:
        raise ValueError(f"data set {dataset!r} has no tiles in split {split!r}")
    model = MFNetForSegmentation.from_pretrained(model_name_or_path, base_model=base_model)
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(target).eval()
    config = model.get_base_model().config
    modalities = config.modality_names
    missing = [m for m in modalities if m not in splits[split][0].modalities]
    if missing:
        raise ValueError(f"the model needs modalities {missing} that data set {dataset!r} does not have")
    matrix = evaluate_tiles(
        model, splits[split], modalities=modalities, num_labels=config.num_labels, chip_size=config.image_size,
        stride=stride, batch_size=batch_size, scaling=model_scaling(config), device=target,
    )  # fmt: skip
    scores = segmentation_scores(matrix.matrix, list(config.id2label.values()), config.score_classes)
    result = scores_to_json(scores)
    result["confusion_matrix"] = matrix.matrix.tolist()
    return result
