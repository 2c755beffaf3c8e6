"""PyTorch datasets over tiles: random chips for training, a sliding grid for evaluation.

Rasters are opened lazily in each process (DataLoader workers fork or spawn; rasterio handles must not cross
processes); tile statistics for scaling are computed once, in the constructing process, and shipped to the
workers with the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from mfpeft.data.geometry import ChipWindow, random_chip_window, sliding_chip_windows
from mfpeft.data.raster import TileReader, pad_chip
from mfpeft.data.scaling import Scaling, TileStatistics, parse_scalings, resolve_input_scaling
from mfpeft.data.tile import Tile
from mfpeft.data.transforms import random_flip_rotate

__all__ = ["RandomChipDataset", "SlidingWindowDataset", "collate_chips"]


class _TileDataset(Dataset):  # type: ignore[type-arg]
    """Shared lazily opened readers and optional in-memory cache."""

    def __init__(
        self,
        tiles: Sequence[Tile],
        modalities: Sequence[str] | None,
        chip_size: int,
        scaling: Mapping[str, Scaling | str] | None,
        cache: bool,
        labels: str,
    ) -> None:
        if not tiles:
            raise ValueError("a dataset needs at least one tile, got none")
        if isinstance(chip_size, bool) or chip_size <= 0:
            raise ValueError(f"chip_size must be a positive integer, got {chip_size!r}")
        self.tiles = list(tiles)
        self.modalities = list(modalities) if modalities is not None else list(self.tiles[0].modalities)
        self.chip_size = chip_size
        self.scaling = parse_scalings(scaling, "scaling")
        self.cache = cache
        self.labels = labels
        self.sizes: list[tuple[int, int]] = []
        self.statistics: list[dict[str, TileStatistics]] = []
        self.scalings: list[dict[str, Scaling]] = []
        for tile in self.tiles:
            with self._open(tile) as reader:
                self.sizes.append((reader.height, reader.width))
                self.statistics.append(dict(reader.statistics))
                self.scalings.append(dict(reader.scaling))
        self._pid: int | None = None
        self._readers: dict[int, TileReader] = {}
        self._cached: dict[int, dict[str, Any]] = {}

    @property
    def input_scaling(self) -> dict[str, Scaling]:
        """The raw -> input scaling per modality (what a model trained on these chips records)."""
        return dict(self.scalings[0])

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (index = class id) of the tiles' label encoding."""
        return self.tiles[0].label_encoding.classes

    def _open(self, tile: Tile, statistics: Mapping[str, TileStatistics] | None = None) -> TileReader:
        return TileReader(
            tile,
            self.modalities,
            chip_size=self.chip_size,
            scaling=self.scaling,
            labels=self.labels,
            statistics=statistics,
        )

    def reader(self, index: int) -> TileReader:
        """This process's reader of tile ``index`` (reopened after a fork)."""
        if self._pid != os.getpid():
            self._readers, self._cached, self._pid = {}, {}, os.getpid()
        if index not in self._readers:
            self._readers[index] = self._open(self.tiles[index], self.statistics[index])
        return self._readers[index]

    def read(self, index: int, window: ChipWindow) -> dict[str, Any]:
        """A chip of tile ``index`` (numpy, padded to ``chip_size``)."""
        if not self.cache:
            return self.reader(index).read(window)
        if self._pid != os.getpid() or index not in self._cached:
            height, width = self.sizes[index]
            reader = self.reader(index)
            whole = reader.read(ChipWindow(0, 0, height, width))
            self._cached[index] = whole
        whole = self._cached[index]
        rows, cols = window.slices
        pixel_values = {m: v[:, rows, cols] for m, v in whole["pixel_values"].items()}
        labels = None if whole["labels"] is None else whole["labels"][rows, cols]
        return pad_chip({"pixel_values": pixel_values, "labels": labels}, self.chip_size)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"], state["_cached"], state["_pid"] = {}, {}, None
        return state


def _to_torch(sample: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pixel_values": {m: torch.from_numpy(np.ascontiguousarray(v)) for m, v in sample["pixel_values"].items()}
    }
    if sample["labels"] is not None:
        out["labels"] = torch.from_numpy(np.ascontiguousarray(sample["labels"]).astype(np.int64))
    return out


class RandomChipDataset(_TileDataset):
    """Training chips: a random tile, a random ``chip_size`` window, joint flips (and optional rot90).

    Item ``i`` is a pure function of ``(seed, epoch, i)`` (see :meth:`set_epoch`), whichever worker reads it.
    ``scaling`` (:class:`Scaling` or its text per modality) is resolved over these tiles, the training tiles
    (:func:`~mfpeft.data.scaling.resolve_input_scaling`: ``stats`` becomes per-band bounds, computed once);
    read other splits with :attr:`input_scaling`.

    Returns per item ``{"pixel_values": {modality: FloatTensor (C, chip, chip)}, "labels": LongTensor
    (chip, chip)}`` (labels absent when the tiles have none).
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        modalities: Sequence[str] | None = None,
        *,
        chip_size: int = 256,
        length: int = 1000,
        augment: bool = True,
        rot90: bool = False,
        seed: int = 0,
        scaling: Mapping[str, Scaling | str] | None = None,
        cache: bool = False,
        labels: str = "full",
    ) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length!r}")
        if tiles:  # no tiles: the base class says so
            scaling = resolve_input_scaling(tiles, list(modalities or tiles[0].modalities), scaling)
        super().__init__(tiles, modalities, chip_size, scaling, cache, labels)
        self.length = length
        self.augment = augment
        self.rot90 = rot90
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a different (still deterministic) set of chips for each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: int) -> tuple[int, ChipWindow, np.random.Generator]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tile = int(rng.integers(len(self.tiles)))
        height, width = self.sizes[tile]
        return tile, random_chip_window(height, width, self.chip_size, rng), rng

    def chip_window(self, index: int) -> tuple[int, ChipWindow]:
        """Which tile and window (relative to the tile's reader window) item ``index`` of this epoch reads."""
        tile, window, _ = self._draw(index)
        return tile, window

    def __getitem__(self, index: int) -> dict[str, Any]:
        tile, window, rng = self._draw(index)  # the same generator then draws the augmentation
        sample = self.read(tile, window)
        if self.augment:
            sample["pixel_values"], sample["labels"] = random_flip_rotate(
                sample["pixel_values"], sample["labels"], rng, rot90=self.rot90
            )
        return _to_torch(sample)


class SlidingWindowDataset(_TileDataset):
    """Evaluation chips: every window of :func:`sliding_chip_windows` over every tile, tile by tile.

    Items add ``"tile_index"`` (int) and ``"window"`` (LongTensor [row, col, height, width]; the valid part of
    the padded chip is ``[:height, :width]``) so that predictions can be stitched back.
    """

    def __init__(
        self,
        tiles: Sequence[Tile],
        modalities: Sequence[str] | None = None,
        *,
        chip_size: int = 256,
        stride: int = 128,
        scaling: Mapping[str, Scaling | str] | None = None,
        cache: bool = False,
        labels: str = "eroded",
    ) -> None:
        super().__init__(tiles, modalities, chip_size, scaling, cache, labels)
        self.stride = stride
        self.windows: list[tuple[int, ChipWindow]] = [
            (t, w) for t, (h, wd) in enumerate(self.sizes) for w in sliding_chip_windows(h, wd, chip_size, stride)
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        tile, window = self.windows[index]
        out = _to_torch(self.read(tile, window))
        out["tile_index"] = tile
        out["window"] = torch.tensor(list(window), dtype=torch.int64)
        return out


def collate_chips(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples: ``pixel_values`` -> {modality: (B, C, H, W)}, ``labels`` -> (B, H, W), other tensors and
    numbers stacked along a new first dimension."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    # default_collate stacks straight into shared memory inside a DataLoader worker, saving a copy per batch.
    out: dict[str, Any] = {
        "pixel_values": {m: default_collate([b["pixel_values"][m] for b in batch]) for m in batch[0]["pixel_values"]}
    }
    for key in batch[0]:
        if key == "pixel_values":
            continue
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            out[key] = default_collate(values)
        elif isinstance(values[0], (int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
