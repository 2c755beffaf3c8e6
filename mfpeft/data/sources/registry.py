"""The registry of data sources by name, and `get_source`, the one way to the tiles of a data set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mfpeft.data.blocks import parse_split_fractions, split_into_blocks
from mfpeft.data.labels import top_classes_encoding
from mfpeft.data.sources.splits import SPLITS, Splits, set_label_encoding

SourceFn = Callable[..., Splits]
_REGISTRY: dict[str, SourceFn] = {}
# Options of every source, taken by get_source itself: splits inside a scene (mfpeft.data.blocks).
_BLOCK_OPTIONS = ("split_blocks", "block_size", "split_seed")


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    """Decorator registering ``fn(data_dir, **options) -> {split: [Tile]}`` under ``name``."""

    def decorate(fn: SourceFn) -> SourceFn:
        _REGISTRY[name] = fn
        return fn

    return decorate


def available_sources() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str, data_dir: str | Path | None = None, **options: Any) -> Splits:
    """The tiles of a data source by split: ``{"train": [...], "validation": [...], "test": [...]}``.

    Every source also takes ``split_blocks=`` (``{"validation": 0.15, "test": 0.25}`` or that as
    ``"validation=0.15,test=0.25"``), ``block_size=`` (pixels, default 1024) and ``split_seed=``: the train
    tiles are then cut into blocks drawn into the splits (:func:`mfpeft.data.blocks.split_into_blocks`).

    Raises:
        ValueError: unknown source or option, or an empty split that a preset or option asked for.
        FileNotFoundError: a missing folder or file, naming it (and the tile).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown data source {name!r}; available: {available_sources()}")
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if name != "hf" and not data_dir.is_dir():
            raise FileNotFoundError(f"data folder {data_dir} does not exist (source {name!r})")
    # Splits inside a scene apply to every source, after its own splits (mfpeft.data.blocks).
    blocks = {k: options.pop(k) for k in _BLOCK_OPTIONS if k in options}
    fractions = blocks.get("split_blocks")
    if fractions is None and blocks.get("block_size") is not None:
        raise ValueError(f"--block-size {blocks['block_size']}: needs --split-blocks (e.g. validation=0.15,test=0.25)")
    if fractions is not None:
        parse_split_fractions(fractions)  # a bad value fails before any file is looked at
    splits = _REGISTRY[name](data_dir, **options)
    for split in SPLITS:
        splits.setdefault(split, [])
    if fractions is not None:
        splits = _split_into_blocks(splits, blocks, options)
    return splits


def _split_into_blocks(splits: Splits, blocks: dict[str, Any], options: dict[str, Any]) -> Splits:
    """``splits`` with their train tiles cut into blocks drawn into the splits (``blocks``: the block options)."""
    splits = split_into_blocks(splits, blocks["split_blocks"], blocks.get("block_size"), blocks.get("split_seed", 0))
    if options.get("top_classes") is not None and options.get("label_encoding") is None and splits["train"]:
        # The source picked its classes on whole scenes; pick them again on the training blocks alone, so
        # that no held-out pixel chooses a class.
        encoding = top_classes_encoding(
            splits["train"][0].label_encoding,
            splits["train"],
            options["top_classes"],
            options.get("classes"),
            options.get("palette"),
        )
        set_label_encoding(splits, encoding)
    return splits
