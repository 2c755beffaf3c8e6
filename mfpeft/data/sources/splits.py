"""Splits of a data source: the split names, presets of tile names, and hold-outs carved from train."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mfpeft.data.tile import LabelEncoding, Tile

SPLITS = ("train", "validation", "test")
Splits = dict[str, list[Tile]]
# Subfolders that hold a split, in the order they are looked for.
SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


def preset(
    presets: Mapping[str, Mapping[str, tuple[str, ...]]],
    split: str | Mapping[str, Sequence[str]],
    source: str,
) -> dict[str, tuple[str, ...]]:
    """The tile names of each split: a preset by name, or ``split`` itself when it maps split -> names."""
    if isinstance(split, Mapping):
        return {k: tuple(str(v) for v in vs) for k, vs in split.items()}
    if split not in presets:
        raise ValueError(f"unknown split preset {split!r} for source {source!r}; available: {sorted(presets)}")
    return dict(presets[split])


def as_names(validation: int | Sequence[str] | None, prefix: str) -> int | list[str] | None:
    """A validation hold-out as a count or tile names, each name given ``prefix`` (``5`` -> ``area5``)."""
    if validation is None or isinstance(validation, int):
        return validation
    if isinstance(validation, str):
        validation = [v for v in validation.split(",") if v]
    return [v if v.startswith(prefix) else f"{prefix}{v}" for v in map(str, validation)]


def hold_out(train: list[Tile], validation: int | Sequence[str] | None, source: str) -> tuple[list[Tile], list[Tile]]:
    """Move tiles from train to validation: the last ``n`` train tiles, or the tiles with the given names."""
    if validation is None or validation == 0:
        return train, []
    if isinstance(validation, int):
        if not 0 < validation < len(train):
            raise ValueError(
                f"validation={validation} must be between 1 and {len(train) - 1} "
                f"(source {source!r} has {len(train)} train tiles)"
            )
        return train[:-validation], train[-validation:]
    names = {str(v) for v in validation}
    known = {t.name for t in train}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"validation tiles {unknown} are not in the train split of source {source!r} (train tiles: {sorted(known)})"
        )
    return [t for t in train if t.name not in names], [t for t in train if t.name in names]


def hold_out_validation(splits: Splits, validation: int | Sequence[str] | None, prefix: str, source: str) -> None:
    """Move the ``validation`` hold-out (:func:`hold_out`; names given ``prefix``) from train to validation."""
    splits["train"], held = hold_out(splits.get("train", []), as_names(validation, prefix), source)
    splits["validation"] = splits.get("validation", []) + held


def check_nonempty(splits: Splits, source: str, names: Sequence[str]) -> Splits:
    for split in names:
        if not splits.get(split):
            raise ValueError(f"split {split!r} of source {source!r} is empty")
    return splits


def set_label_encoding(splits: Splits, encoding: LabelEncoding) -> None:
    """Give every tile of every split ``encoding`` (classes picked again after the splits were drawn)."""
    for tile in (t for tiles in splits.values() for t in tiles):
        tile.label_encoding = encoding
