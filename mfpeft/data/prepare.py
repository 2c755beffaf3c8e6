"""Turn any source into a ``datasets.DatasetDict`` of chips (``mfpeft prepare``).

Each row is one chip of the sliding grid over a tile: one float32 (C, chip, chip) column per modality, already
scaled (the exact model input), ``labels`` (uint8 class indices, 255 = ignore, full labels) and, where the
source has them, ``labels_eroded`` (the noBoundary labels used for evaluation), plus the chip's ``tile`` and
window. The description of every split records the modalities, classes, scaling and per-tile statistics
(JSON under the key ``"mfpeft"``), so the ``hf`` source reads the data set back without options.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.common.files import atomic_path, temporary_sibling
from mfpeft.data.blocks import check_block_size, check_train_classes, write_block_assignment
from mfpeft.data.geometry import sliding_chip_windows
from mfpeft.data.raster import TileReader
from mfpeft.data.scaling import Scaling, requested_scalings, resolve_stats
from mfpeft.data.sources import METADATA_KEY, SPLITS, get_source
from mfpeft.data.tile import Tile

__all__ = ["prepare_dataset"]


def _chips(
    tiles: Sequence[Tile],
    modalities: Sequence[str],
    chip_size: int,
    stride: int,
    scaling: Mapping[str, Scaling],
) -> Iterator[dict[str, Any]]:
    """The rows of ``tiles`` (see the module docstring), chip by chip on the sliding grid."""
    for tile in tiles:
        with TileReader(tile, modalities, chip_size=chip_size, scaling=scaling, labels="full") as reader:
            eroded = None
            if tile.eroded_labels is not None:
                eroded = TileReader(
                    tile,
                    modalities,
                    chip_size=chip_size,
                    scaling=scaling,
                    labels="eroded",
                    statistics=reader.statistics,
                )
            try:
                for window in sliding_chip_windows(reader.height, reader.width, chip_size, stride):
                    sample = reader.read(window)
                    row: dict[str, Any] = dict(sample["pixel_values"])
                    if sample["labels"] is not None:
                        row["labels"] = sample["labels"].astype(np.uint8)
                    if eroded is not None:
                        labels = eroded.read(window)["labels"]
                        assert labels is not None  # the tile has eroded labels
                        row["labels_eroded"] = labels.astype(np.uint8)
                    row.update(tile=tile.name, row=window.row, col=window.col, height=window.height, width=window.width)
                    yield row
            finally:
                if eroded is not None:
                    eroded.close()


@dataclasses.dataclass(frozen=True)
class _ChipPlan:
    """What every split is written with: the source's name, the modalities, the chip grid and the one resolved
    raw -> input scaling (per modality)."""

    source: str
    modalities: list[str]
    chip_size: int
    stride: int
    scaling: dict[str, Scaling]


@dataclasses.dataclass
class _SplitSurvey:
    """What the tiles of one split hold, read before any chip is written (every tile must agree)."""

    statistics: dict[str, dict[str, Any]]  # tile name -> modality -> statistics (to_dict)
    scaling: dict[str, dict[str, Any]]  # modality -> resolved scaling (to_dict), from the first tile
    channels: dict[str, int]  # modality -> bands
    has_labels: bool
    has_eroded: bool


def _check_chip_grid(output: Path, overwrite: bool, chip_size: int, stride: int) -> None:
    """Refuse an existing ``output`` (without ``overwrite``) and a bad chip size or stride, before any reading."""
    if output.exists() and not overwrite:
        raise FileExistsError(f"output folder {output} already exists (pass overwrite=True / --overwrite)")
    if isinstance(chip_size, bool) or chip_size <= 0:
        raise ValueError(f"chip_size must be a positive integer, got {chip_size!r}")
    if isinstance(stride, bool) or not 0 < stride <= chip_size:
        raise ValueError(f"stride must be between 1 and chip_size={chip_size}, got {stride!r}")


def _nonempty_splits(
    source: str, data_dir: str | Path | None, chip_size: int, options: Mapping[str, Any]
) -> tuple[dict[str, list[Tile]], dict[str, list[Tile]]]:
    """The splits of ``source`` (all, and those with tiles, in `SPLITS` order), checked.

    Raises:
        ValueError: a block smaller than a chip, or no tile in any split.
    """
    check_block_size(options, chip_size)
    splits = get_source(source, data_dir, **dict(options))
    check_train_classes(splits)
    nonempty = {s: splits[s] for s in SPLITS if splits.get(s)}
    if not nonempty:
        raise ValueError(f"source {source!r} yielded no tiles in any split")
    return splits, nonempty


def _say_inputs(say: Callable[[str], None], plan: _ChipPlan, nonempty: Mapping[str, list[Tile]]) -> None:
    """Tell ``say`` the input scaling, how the labels are read and the pixels per label code."""
    from mfpeft.data.labels import code_table, describe_labels

    say("Input scaling: " + ", ".join(f"{m} {s.describe()}" for m, s in plan.scaling.items()))
    # The training tiles (or the first split there is): what a model trained on the data set learns from.
    shown = next(iter(nonempty.values()))
    for line in [describe_labels(shown), *code_table(shown)]:
        say(line)


def _survey_split(split: str, tiles: Sequence[Tile], plan: _ChipPlan) -> _SplitSurvey:
    """Statistics, resolved scaling and bands of every tile of ``split``, and whether they have labels.

    Raises:
        ValueError: a tile whose bands, labels or eroded labels differ from the earlier tiles', naming it.
    """
    survey = _SplitSurvey({}, {}, {}, tiles[0].labels is not None, tiles[0].eroded_labels is not None)
    for tile in tiles:
        with TileReader(tile, plan.modalities, chip_size=plan.chip_size, scaling=plan.scaling, labels="none") as reader:
            survey.statistics[tile.name] = {m: s.to_dict() for m, s in reader.statistics.items()}
            for m in plan.modalities:
                # Channels and the resolved scaling come from the first tile; every tile must agree.
                survey.scaling.setdefault(m, reader.scaling[m].to_dict())
                c = len(reader.bands[m])
                if survey.channels.setdefault(m, c) != c:
                    raise ValueError(
                        f"tile {tile.name!r}: modality {m!r} has {c} bands, earlier tiles have {survey.channels[m]}"
                    )
        if (survey.has_labels, survey.has_eroded) != (tile.labels is not None, tile.eroded_labels is not None):
            raise ValueError(
                f"tile {tile.name!r} of split {split!r}: labels / eroded labels present in some tiles but not in others"
            )
    return survey


def _features(survey: _SplitSurvey, plan: _ChipPlan) -> Any:
    """The ``datasets.Features`` of a split's rows: float32 (C, chip, chip) per modality, uint8 (chip, chip)
    labels where the tiles have them, the window (int32) and the tile's name."""
    import datasets

    size = plan.chip_size
    features: dict[str, Any] = {
        m: datasets.Array3D(shape=(survey.channels[m], size, size), dtype="float32") for m in plan.modalities
    }
    if survey.has_labels:
        features["labels"] = datasets.Array2D(shape=(size, size), dtype="uint8")
    if survey.has_eroded:
        features["labels_eroded"] = datasets.Array2D(shape=(size, size), dtype="uint8")
    for key in ("row", "col", "height", "width"):
        features[key] = datasets.Value("int32")
    features["tile"] = datasets.Value("string")
    return datasets.Features(features)


def _write_split(split: str, tiles: list[Tile], plan: _ChipPlan, cache_dir: Path) -> Any:
    """The ``datasets.Dataset`` of the chips of ``split`` (Arrow files under ``cache_dir``), its metadata in
    ``info.description``.

    Raises:
        ValueError, OSError: from the readers (naming the file), unwrapped from datasets' generation error.
    """
    import datasets

    survey = _survey_split(split, tiles, plan)
    try:
        dataset = datasets.Dataset.from_generator(
            _chips,
            features=_features(survey, plan),
            # Tuples everywhere but "tiles": datasets shards over the lists in gen_kwargs.
            gen_kwargs={
                "tiles": list(tiles),
                "modalities": tuple(plan.modalities),
                "chip_size": plan.chip_size,
                "stride": plan.stride,
                "scaling": dict(plan.scaling),
            },
            cache_dir=str(cache_dir),
        )
    except datasets.exceptions.DatasetGenerationError as err:
        # Surface our own error (naming the file) rather than datasets' generic wrapper.
        cause = err.__cause__
        if isinstance(cause, (ValueError, OSError)):
            raise cause from None
        raise
    dataset.info.description = json.dumps(_split_metadata(tiles, plan, survey))
    return dataset


def _split_metadata(tiles: Sequence[Tile], plan: _ChipPlan, survey: _SplitSurvey) -> dict[str, Any]:
    """The metadata recorded in a split's description (under `METADATA_KEY`), read back by the ``hf`` source."""
    encoding = tiles[0].recorded_encoding  # a prepared source's: its original rasters' encoding
    return {
        METADATA_KEY: {
            "source": plan.source,
            "modalities": plan.modalities,
            "classes": list(encoding.classes),
            "label_encoding": encoding.to_dict(),
            "scaled": True,
            "scaling": survey.scaling,
            "statistics": survey.statistics,
            "chip_size": plan.chip_size,
            "stride": plan.stride,
        }
    }


@contextmanager
def _scratch_folder(beside: Path) -> Iterator[Path]:
    """A fresh hidden folder beside ``beside`` for datasets' Arrow cache, removed afterwards (also on error)."""
    folder = temporary_sibling(beside)
    folder.mkdir()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _save_dataset(
    output: Path,
    splits: Mapping[str, list[Tile]],
    nonempty: Mapping[str, list[Tile]],
    plan: _ChipPlan,
    options: Mapping[str, Any],
) -> None:
    """Write the chips of the ``nonempty`` splits to ``output`` (``save_to_disk`` layout) with the block
    assignment of ``splits`` (--split-blocks) inside; staged beside ``output`` and renamed into place when
    complete (an existing ``output`` is replaced only then), so an error or interruption leaves nothing."""
    import datasets

    with atomic_path(output, folder=True) as staged, _scratch_folder(output) as cache_dir:
        parts = {split: _write_split(split, tiles, plan, cache_dir) for split, tiles in nonempty.items()}
        datasets.DatasetDict(parts).save_to_disk(str(staged))
        # --split-blocks: which block went to which split, inside the data set folder (renamed with it).
        write_block_assignment(splits, staged, options)


def prepare_dataset(
    source: str,
    data_dir: str | Path | None,
    output: str | Path,
    *,
    chip_size: int = 256,
    stride: int = 256,
    modalities: Sequence[str] | None = None,
    scaling: Mapping[str, Scaling | str] | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    source_options: Mapping[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
) -> Any:
    """Write the chips of every non-empty split of ``source`` to ``output`` (``save_to_disk`` layout).

    ``say`` (e.g. ``print``; the CLI's) gets how the labels are read and, for integer codes, the pixels per
    code of the training tiles with the class each maps to, before any chip is written.

    ``scaling`` (per modality, :class:`Scaling` or its text) overrides the source's; ``stats`` (the default of
    folder and hf sources) is computed once over the train split, and every split is written with that one
    resolved raw -> input scaling, recorded in the metadata (``scaling``, ``scaled: True``).

    ``modalities`` selects which modalities to write (default all); ``source_options`` go to
    :func:`~mfpeft.data.sources.get_source`. The data set is written to a temporary folder beside ``output``
    and renamed when complete, so a failure leaves no half-written output. Returns the ``datasets.DatasetDict``.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        ValueError, FileNotFoundError: from the source and the readers, naming the file and problem.
    """
    import datasets

    output = Path(output).expanduser()
    options = dict(source_options or {})
    _check_chip_grid(output, overwrite, chip_size, stride)
    splits, nonempty = _nonempty_splits(source, data_dir, chip_size, options)
    mods = list(modalities) if modalities is not None else list(next(iter(nonempty.values()))[0].modalities)
    every_tile = [t for tiles in nonempty.values() for t in tiles]
    input_scaling = resolve_stats(splits.get("train", []), requested_scalings(every_tile, mods, scaling))
    plan = _ChipPlan(source, mods, chip_size, stride, dict(input_scaling))
    if say is not None:
        _say_inputs(say, plan, nonempty)
    _save_dataset(output, splits, nonempty, plan, options)
    result = datasets.load_from_disk(str(output))
    if push_to_hub:
        result.push_to_hub(push_to_hub)
    return result
