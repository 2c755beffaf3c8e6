"""Turn any source into a ``datasets.DatasetDict`` of chips (``mfpeft prepare``).

Each row is one chip of the sliding grid over a tile: one float32 (C, chip, chip) column per modality, already
scaled (the exact model input), ``labels`` (uint8 class indices, 255 = ignore, full labels) and, where the
source has them, ``labels_eroded`` (the noBoundary labels used for evaluation), plus the chip's ``tile`` and
window. The description of every split records the modalities, classes, scaling and per-tile statistics
(JSON under the key ``"mfpeft"``), so the ``hf`` source reads the data set back without options.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    for tile in tiles:
        with TileReader(tile, modalities, chip_size=chip_size, scaling=scaling, labels="full") as reader:
            eroded = None
            if tile.eroded_labels is not None:
                eroded = TileReader(
                    tile, modalities, chip_size=chip_size, scaling=scaling, labels="eroded",
                    statistics=reader.statistics,
                )  # fmt: skip
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
                    row.update(tile=tile.name, row=window.row, col=window.col, height=window.height,
                               width=window.width)  # fmt: skip
                    yield row
            finally:
                if eroded is not None:
                    eroded.close()


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
    if output.exists() and not overwrite:
        raise FileExistsError(f"output folder {output} already exists (pass overwrite=True / --overwrite)")
    if isinstance(chip_size, bool) or chip_size <= 0:
        raise ValueError(f"chip_size must be a positive integer, got {chip_size!r}")
    if isinstance(stride, bool) or not 0 < stride <= chip_size:
        raise ValueError(f"stride must be between 1 and chip_size={chip_size}, got {stride!r}")
    check_block_size(source_options or {}, chip_size)
    splits = get_source(source, data_dir, **dict(source_options or {}))
    check_train_classes(splits)
    nonempty = {s: splits[s] for s in SPLITS if splits.get(s)}
    if not nonempty:
        raise ValueError(f"source {source!r} yielded no tiles in any split")
    first = next(iter(nonempty.values()))[0]
    mods = list(modalities) if modalities is not None else list(first.modalities)
    every_tile = [t for tiles in nonempty.values() for t in tiles]
    input_scaling = resolve_stats(splits.get("train", []), requested_scalings(every_tile, mods, scaling))
    if say is not None:
        say("Input scaling: " + ", ".join(f"{m} {s.describe()}" for m, s in input_scaling.items()))
    if say is not None:
        from mfpeft.data.labels import code_table, describe_labels

        # The training tiles (or the first split there is): what a model trained on the data set learns from.
        shown = next(iter(nonempty.values()))
        for line in [describe_labels(shown), *code_table(shown)]:
            say(line)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        parts = {}
        for split, tiles in nonempty.items():
            # Channels per modality and the resolved scaling come from the first tile; every tile must agree.
            stats: dict[str, Any] = {}
            resolved: dict[str, dict[str, Any]] = {}
            channels: dict[str, int] = {}
            has_labels = has_eroded = None
            for tile in tiles:
                with TileReader(tile, mods, chip_size=chip_size, scaling=input_scaling, labels="none") as reader:
                    stats[tile.name] = {m: s.to_dict() for m, s in reader.statistics.items()}
                    for m in mods:
                        resolved.setdefault(m, reader.scaling[m].to_dict())
                        c = len(reader.bands[m])
                        if channels.setdefault(m, c) != c:
                            raise ValueError(f"tile {tile.name!r}: modality {m!r} has {c} bands, earlier tiles "
                                             f"have {channels[m]}")  # fmt: skip
                flags = (tile.labels is not None, tile.eroded_labels is not None)
                if has_labels is None:
                    has_labels, has_eroded = flags
                elif (has_labels, has_eroded) != flags:
                    raise ValueError(f"tile {tile.name!r} of split {split!r}: labels / eroded labels present "
                                     f"in some tiles but not in others")  # fmt: skip
            features: dict[str, Any] = {
                m: datasets.Array3D(shape=(channels[m], chip_size, chip_size), dtype="float32") for m in mods
            }
            if has_labels:
                features["labels"] = datasets.Array2D(shape=(chip_size, chip_size), dtype="uint8")
            if has_eroded:
                features["labels_eroded"] = datasets.Array2D(shape=(chip_size, chip_size), dtype="uint8")
            for key in ("row", "col", "height", "width"):
                features[key] = datasets.Value("int32")
            features["tile"] = datasets.Value("string")
            try:
                ds = datasets.Dataset.from_generator(
                    _chips,
                    features=datasets.Features(features),
                    # Tuples everywhere but "tiles": datasets shards over the lists in gen_kwargs.
                    gen_kwargs={"tiles": list(tiles), "modalities": tuple(mods), "chip_size": chip_size,
                                "stride": stride, "scaling": dict(input_scaling)},
                    cache_dir=str(tmp / "cache"),
                )  # fmt: skip
            except datasets.exceptions.DatasetGenerationError as err:
                # Surface our own error (naming the file) rather than datasets' generic wrapper.
                cause = err.__cause__
                if isinstance(cause, (ValueError, OSError)):
                    raise cause from None
                raise
            encoding = tiles[0].recorded_encoding  # a prepared source's: its original rasters' encoding
            meta = {
                METADATA_KEY: {
                    "source": source,
                    "modalities": mods,
                    "classes": list(encoding.classes),
                    "label_encoding": encoding.to_dict(),
                    "scaled": True,
                    "scaling": resolved,
                    "statistics": stats,
                    "chip_size": chip_size,
                    "stride": stride,
                }
            }
            ds.info.description = json.dumps(meta)
            parts[split] = ds
        dataset = datasets.DatasetDict(parts)
        dataset.save_to_disk(str(tmp / "dataset"))
        final = tmp / "dataset"
        # --split-blocks: which block went to which split, inside the data set folder (renamed with it).
        write_block_assignment(splits, final, source_options or {})
        if output.exists():
            # overwrite: move the old copy aside first so that a failure never leaves neither.
            old = tmp / "old"
            output.rename(old)
        final.rename(output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = datasets.load_from_disk(str(output))
    if push_to_hub:
        result.push_to_hub(push_to_hub)
    return result
