"""Data sources: where the tiles of a data set are, and how they split into train / validation / test.

``get_source(name, data_dir, **options)`` returns ``{"train": [Tile], "validation": [...], "test": [...]}``.
Sources only find files and describe them (:class:`~mfpeft.data.tile.Tile`); reading is
:class:`~mfpeft.data.raster.TileReader`'s job. Folder layouts are described in ``docs/data.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.data.labels import resolve_encoding, top_classes_encoding
from mfpeft.data.palette import (
    ISPRS_CLASSES,
    ISPRS_PALETTE,
    MMHUNAN_CLASSES,
    MMHUNAN_LC_TO_CLASS,
    MMHUNAN_PALETTE,
)
from mfpeft.data.scaling import Scaling, parse_scalings
from mfpeft.data.tile import LabelEncoding, Tile

__all__ = [
    "POTSDAM_SPLITS",
    "SPLITS",
    "VAIHINGEN_SPLITS",
    "available_sources",
    "get_source",
    "register_source",
]

SPLITS = ("train", "validation", "test")
Splits = dict[str, list[Tile]]
SourceFn = Callable[..., Splits]
_REGISTRY: dict[str, SourceFn] = {}

_VAIHINGEN_ALL = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    20,
    21,
    22,
    23,
    24,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    37,
    38,
)
_VAIHINGEN_OFFICIAL_TRAIN = (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
VAIHINGEN_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {
        "train": tuple(str(n) for n in (1, 3, 23, 26, 7, 11, 13, 28, 17, 32, 34, 37)),
        "test": tuple(str(n) for n in (5, 21, 15, 30)),
    },
    "official": {
        "train": tuple(str(n) for n in _VAIHINGEN_OFFICIAL_TRAIN),
        "test": tuple(str(n) for n in _VAIHINGEN_ALL if n not in _VAIHINGEN_OFFICIAL_TRAIN),
    },
}
_POTSDAM_OFFICIAL_TRAIN = (
    "2_10",
    "2_11",
    "2_12",
    "3_10",
    "3_11",
    "3_12",
    "4_10",
    "4_11",
    "4_12",
    "5_10",
    "5_11",
    "5_12",
    "6_7",
    "6_8",
    "6_9",
    "6_10",
    "6_11",
    "6_12",
    "7_7",
    "7_8",
    "7_9",
    "7_10",
    "7_11",
    "7_12",
)
POTSDAM_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {
        "train": (
            "6_10",
            "7_10",
            "2_12",
            "3_11",
            "2_10",
            "7_8",
            "5_10",
            "3_12",
            "5_12",
            "7_11",
            "7_9",
            "6_9",
            "7_7",
            "4_12",
            "6_8",
            "6_12",
            "6_7",
            "4_11",
        ),
        "test": ("4_10", "5_11", "2_11", "3_10", "6_11", "7_12"),
    },
    "official": {
        "train": _POTSDAM_OFFICIAL_TRAIN,
        "test": (
            "2_13",
            "2_14",
            "3_13",
            "3_14",
            "4_13",
            "4_14",
            "4_15",
            "5_13",
            "5_14",
            "5_15",
            "6_13",
            "6_14",
            "6_15",
            "7_13",
        ),
    },
}


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
    blocks = {k: options.pop(k) for k in ("split_blocks", "block_size", "split_seed") if k in options}
    fractions = blocks.get("split_blocks")
    if fractions is None and blocks.get("block_size") is not None:
        raise ValueError(f"--block-size {blocks['block_size']}: needs --split-blocks (e.g. validation=0.15,test=0.25)")
    if fractions is not None:
        from mfpeft.data.blocks import parse_split_fractions, split_into_blocks

        parse_split_fractions(fractions)  # a bad value fails before any file is looked at
    splits = _REGISTRY[name](data_dir, **options)
    for split in SPLITS:
        splits.setdefault(split, [])
    if fractions is not None:
        splits = split_into_blocks(splits, fractions, blocks.get("block_size"), blocks.get("split_seed", 0))
        if options.get("top_classes") is not None and options.get("label_encoding") is None and splits["train"]:
            # The source picked its classes on whole scenes; pick them again on the training blocks alone, so
            # that no held-out pixel chooses a class.
            encoding = top_classes_encoding(splits["train"][0].label_encoding, splits["train"],
                                            options["top_classes"], options.get("classes"), options.get("palette"))
            for tile in (t for tiles in splits.values() for t in tiles):
                tile.label_encoding = encoding
    return splits


# -- helpers --
def _require_dir(data_dir: Path | None, source: str) -> Path:
    if data_dir is None:
        raise ValueError(f"source {source!r} needs --data-dir")
    return data_dir


def _first_existing(candidates: Iterable[Path], what: str, tile: str) -> Path:
    candidates = list(candidates)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"tile {tile!r}: {what} not found (tried {tried})")


def _optional(candidates: Iterable[Path]) -> Path | None:
    for path in candidates:
        if path.is_file():
            return path
    return None


def _find_dir(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _hold_out(train: list[Tile], validation: int | Sequence[str] | None, source: str) -> tuple[list[Tile], list[Tile]]:
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


def _check_nonempty(splits: Splits, source: str, names: Sequence[str]) -> Splits:
    for split in names:
        if not splits.get(split):
            raise ValueError(f"split {split!r} of source {source!r} is empty")
    return splits


def _preset(
    presets: Mapping[str, Mapping[str, tuple[str, ...]]],
    split: str | Mapping[str, Sequence[str]],
    source: str,
) -> dict[str, tuple[str, ...]]:
    if isinstance(split, Mapping):
        return {k: tuple(str(v) for v in vs) for k, vs in split.items()}
    if split not in presets:
        raise ValueError(f"unknown split preset {split!r} for source {source!r}; available: {sorted(presets)}")
    return dict(presets[split])


# -- ISPRS Vaihingen --
_VAIHINGEN_LABEL_DIRS = (
    "gts_for_participants",
    "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
    "ground_truth",
    "gts",
    "labels",
)
_VAIHINGEN_ERODED_DIRS = (
    "gts_eroded_for_participants",
    "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
    "ground_truth_eroded",
    "gts_eroded",
    "labels_eroded",
    "labels_noBoundary",
)


@register_source("vaihingen")
def vaihingen(
    data_dir: Path | None,
    *,
    split: str | Mapping[str, Sequence[str]] = "paper",
    validation: int | Sequence[str] | None = None,
) -> Splits:
    """ISPRS Vaihingen: ``top/``, ``dsm/``, a label folder and an eroded label folder (docs/data.md)."""
    root = _require_dir(data_dir, "vaihingen")
    label_dirs = [root / d for d in _VAIHINGEN_LABEL_DIRS]
    eroded_dirs = [root / d for d in _VAIHINGEN_ERODED_DIRS]
    names = _preset(VAIHINGEN_SPLITS, split, "vaihingen")

    def tile(area: str) -> Tile:
        name = f"area{area}"
        return Tile(
            name=name,
            modalities={
                "optical": _first_existing([root / "top" / f"top_mosaic_09cm_area{area}.tif"], "IRRG image", name),
                "dsm": _first_existing([root / "dsm" / f"dsm_09cm_matching_area{area}.tif"], "DSM", name),
            },
            labels=_first_existing([d / f"top_mosaic_09cm_area{area}.tif" for d in label_dirs], "labels", name),
            eroded_labels=_optional(d / f"top_mosaic_09cm_area{area}_noBoundary.tif" for d in eroded_dirs),
            label_encoding=LabelEncoding("palette", ISPRS_CLASSES, ISPRS_PALETTE),
        )

    splits = {k: [tile(a) for a in v] for k, v in names.items()}
    splits["train"], held = _hold_out(splits.get("train", []), _as_names(validation, "area"), "vaihingen")
    splits["validation"] = splits.get("validation", []) + held
    return _check_nonempty(splits, "vaihingen", list(names))


def _as_names(validation: int | Sequence[str] | None, prefix: str) -> int | list[str] | None:
    if validation is None or isinstance(validation, int):
        return validation
    if isinstance(validation, str):
        validation = [v for v in validation.split(",") if v]
    return [v if v.startswith(prefix) else f"{prefix}{v}" for v in map(str, validation)]


# -- ISPRS Potsdam --
@register_source("potsdam")
def potsdam(
    data_dir: Path | None,
    *,
    split: str | Mapping[str, Sequence[str]] = "paper",
    validation: int | Sequence[str] | None = None,
    optical_bands: Sequence[int] = (1, 2, 3),
) -> Splits:
    """ISPRS Potsdam: ``4_Ortho_RGBIR/``, ``1_DSM_normalisation/``, ``5_Labels_all/``,
    ``5_Labels_all_noBoundary/``. ``optical_bands`` picks from RGBIR (1-based; default R, G, B)."""
    root = _require_dir(data_dir, "potsdam")
    names = _preset(POTSDAM_SPLITS, split, "potsdam")

    def tile(tid: str) -> Tile:
        if not re.fullmatch(r"\d+_\d+", tid):
            raise ValueError(f"Potsdam tile ids look like '2_10', got {tid!r}")
        x, y = tid.split("_")
        ndsm = root / "1_DSM_normalisation"
        # The nDSM archive zero-pads both numbers (dsm_potsdam_02_10_...), the others do not.
        dsm_names = {
            f"dsm_potsdam_{int(x):02d}_{int(y):02d}_normalized_lastools.jpg",
            f"dsm_potsdam_{x}_{y}_normalized_lastools.jpg",
            f"dsm_potsdam_{int(x):02d}_{y}_normalized_lastools.jpg",
        }
        return Tile(
            name=tid,
            modalities={
                "optical": _first_existing(
                    [root / "4_Ortho_RGBIR" / f"top_potsdam_{tid}_RGBIR.tif"], "RGBIR image", tid
                ),
                "dsm": _first_existing(sorted(ndsm / n for n in dsm_names), "nDSM", tid),
            },
            labels=_first_existing([root / "5_Labels_all" / f"top_potsdam_{tid}_label.tif"], "labels", tid),
            eroded_labels=_optional([root / "5_Labels_all_noBoundary" / f"top_potsdam_{tid}_label_noBoundary.tif"]),
            label_encoding=LabelEncoding("palette", ISPRS_CLASSES, ISPRS_PALETTE),
            bands={"optical": tuple(int(b) for b in optical_bands)},
        )

    splits = {k: [tile(t) for t in v] for k, v in names.items()}
    splits["train"], held = _hold_out(splits.get("train", []), _as_names(validation, ""), "potsdam")
    splits["validation"] = splits.get("validation", []) + held
    return _check_nonempty(splits, "potsdam", list(names))


# -- MMHunan --
_SPLIT_DIRS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


@register_source("mmhunan")
def mmhunan(
    data_dir: Path | None,
    *,
    s2_bands: Sequence[int] = (4, 3, 2),
    s2_scaling: Scaling | None = None,
    validation: int | Sequence[str] | None = None,
    code_map: Sequence[int] | Mapping[int, int] = MMHUNAN_LC_TO_CLASS,
) -> Splits:
    """MMHunan raw layout: ``{train,test}/{s2,topo,lc}/{s2,topo,lc}_{id}.tif``.

    ``s2_bands`` are 1-based Sentinel-2 bands (default B4, B3, B2 = R, G, B), stretched between the tile's
    2nd and 98th percentiles unless ``s2_scaling`` says otherwise; land-cover codes map to 7 classes.
    """
    root = _require_dir(data_dir, "mmhunan")
    cmap = dict(code_map) if isinstance(code_map, Mapping) else dict(enumerate(code_map))
    encoding = LabelEncoding("codes", MMHUNAN_CLASSES, MMHUNAN_PALETTE, code_map=cmap)
    scaling = {"optical": s2_scaling or Scaling("percentile"), "dsm": Scaling("minmax_tile")}
    splits: Splits = {}
    for split, dirs in _SPLIT_DIRS.items():
        folder = _find_dir(root, dirs)
        if folder is None:
            continue
        if not (folder / "s2").is_dir():
            raise FileNotFoundError(f"{folder / 's2'} does not exist (MMHunan split {split!r})")
        tiles = []
        for s2 in sorted((folder / "s2").glob("s2_*.tif")):
            tid = s2.stem[len("s2_") :]
            tiles.append(
                Tile(
                    name=tid,
                    modalities={
                        "optical": s2,
                        "dsm": _first_existing([folder / "topo" / f"topo_{tid}.tif"], "elevation", tid),
                    },
                    labels=_first_existing([folder / "lc" / f"lc_{tid}.tif"], "land cover", tid),
                    label_encoding=encoding,
                    bands={"optical": tuple(int(b) for b in s2_bands)},
                    scaling=dict(scaling),
                )
            )
        if not tiles:
            raise ValueError(f"split {split!r} of source 'mmhunan' is empty: no s2_*.tif in {folder / 's2'}")
        splits[split] = tiles
    if "train" not in splits:
        raise FileNotFoundError(f"{root} has no train/ folder with s2/, topo/, lc/ (source 'mmhunan')")
    splits["train"], held = _hold_out(splits["train"], _as_names(validation, ""), "mmhunan")
    splits["validation"] = splits.get("validation", []) + held
    return splits


# -- any folder of rasters --
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if pattern.count("*") != 1:
        raise ValueError(f"a file pattern needs exactly one '*' (the tile name), got {pattern!r}")
    head, tail = pattern.split("*")
    return re.compile(re.escape(head) + r"(?P<key>[^/]+?)" + re.escape(tail) + r"\Z")


def _match(folder: Path, pattern: str) -> dict[str, Path]:
    regex = _pattern_regex(pattern)
    found = {}
    for path in sorted(folder.glob(pattern)):
        m = regex.match(path.relative_to(folder).as_posix())
        if m and path.is_file():
            found[m.group("key")] = path
    return found


def _match_bands(folder: Path, spec: str, modality: str) -> tuple[dict[str, Path | tuple[Path, ...]], dict[str, str]]:
    """Files of a modality: one pattern, or comma-separated band-file patterns stacked in that order.

    Returns ``({tile: path or (band paths...)}, {tile: first band pattern without a file})``; the second
    lists tiles some band files were found for but not all, so that a missing band is an error, not a tile
    silently left out.
    """
    patterns = [p.strip() for p in spec.split(",")]
    if any(not p for p in patterns):
        raise ValueError(f"modality {modality!r}: the band-file patterns {spec!r} have an empty entry between commas")
    if len(patterns) == 1:
        return dict(_match(folder, patterns[0])), {}
    found = [_match(folder, p) for p in patterns]
    keys = set().union(*found)
    complete: dict[str, Path | tuple[Path, ...]] = {
        k: tuple(f[k] for f in found) for k in keys if all(k in f for f in found)
    }
    missing = {k: next(p for p, f in zip(patterns, found) if k not in f) for k in keys - set(complete)}
    return complete, missing


@register_source("folder")
def folder(
    data_dir: Path | None,
    *,
    modalities: Mapping[str, str],
    labels: str | None = None,
    eroded_labels: str | None = None,
    label_kind: str = "auto",
    palette: Sequence[Sequence[int]] | Mapping[str, Sequence[int]] | None = None,
    classes: Sequence[str] | None = None,
    code_map: Mapping[int | str, int] | None = None,
    label_nodata: int | None = None,
    top_classes: int | None = None,
    label_encoding: LabelEncoding | None = None,
    bands: Mapping[str, Sequence[int]] | None = None,
    scaling: Mapping[str, Scaling | str] | None = None,
    validation: int | Sequence[str] | None = None,
    test: Sequence[str] | None = None,
) -> Splits:
    """Any folder of rasters, paired by name patterns with one ``*`` standing for the tile name.

    ``modalities`` maps modality name -> pattern (the first defines the grid), e.g.
    ``{"optical": "*_rgb.tif", "dsm": "*_dsm.tif"}``; ``labels="*_label.tif"``. A modality's pattern may be
    comma-separated band-file patterns, ``"*_b4.tif,*_b5.tif,*_b6.tif"``: single-band files stacked in that
    order (a tuple of paths in the tile; a tile with some but not all of them is an error). With ``train/``,
    ``validation/`` (or ``val/``) and ``test/`` subfolders those are the splits; otherwise every tile is in
    train, except ``test`` (tile names) and the ``validation`` hold-out.

    Labels (:mod:`mfpeft.data.labels`): ``label_kind`` ``auto`` (1-band integer rasters are codes, 3-band
    uint8 ones palette colours), ``palette`` (RGB colours, ``palette``; default ISPRS), ``codes`` (integers
    mapped by ``code_map``, whose key ``"*"`` maps every other code, e.g. ``{"*": 255}``; discovered from the
    label rasters in code order when not given; ``top_classes=N`` keeps the N most frequent codes of the
    training tiles) or ``index``. ``palette`` is one colour per class or ``{class name: colour}``.
    ``label_encoding`` (e.g. a model's recorded one) replaces all of these. The result is recorded in the
    tiles' :class:`LabelEncoding`.

    ``scaling`` recommends a scaling per modality (:class:`Scaling` or its text, e.g. ``"range:0,3000"``); a
    modality without one is ``stats`` (per-band 2nd-98th percentiles over the training tiles, computed once:
    :func:`mfpeft.data.scaling.resolve_input_scaling`), so that a chip's input does not depend on the size of
    the raster it is cut from.
    """
    root = _require_dir(data_dir, "folder")
    recommended = {m: parse_scalings(scaling, "scaling").get(m) or Scaling("stats") for m in modalities}
    if not modalities:
        raise ValueError("source 'folder' needs at least one modality pattern")
    split_dirs = {s: _find_dir(root, d) for s, d in _SPLIT_DIRS.items()}
    folders = {s: d for s, d in split_dirs.items() if d is not None} or {"train": root}
    matched: dict[str, tuple[dict[str, Any], dict[str, Path], dict[str, Path]]] = {}
    for split, sub in folders.items():
        per_mod = {m: _match_bands(sub, p, m) for m, p in modalities.items()}
        lab = _match(sub, labels) if labels else {}
        ero = _match(sub, eroded_labels) if eroded_labels else {}
        matched[split] = (per_mod, lab, ero)
    encoding = resolve_encoding(
        [p for _, lab, _ in matched.values() for p in lab.values()], label_kind=label_kind, classes=classes,
        palette=palette, code_map=code_map, label_nodata=label_nodata, top_classes=top_classes,
        label_encoding=label_encoding,
    )  # fmt: skip

    splits: Splits = {}
    first = next(iter(modalities))
    for split, (per_mod, lab, ero) in matched.items():
        keys = sorted({*per_mod[first][0], *per_mod[first][1]})
        if not keys:
            raise ValueError(
                f"split {split!r} of source 'folder' is empty: no file in {folders[split]} "
                f"matches {modalities[first]!r} ({first})"
            )
        tiles = []
        for key in keys:
            mods: dict[str, Any] = {}
            for m, (found, partial) in per_mod.items():
                if key in partial:
                    raise FileNotFoundError(
                        f"tile {key!r}: no {m} band file matching {partial[key]!r} in {folders[split]} (band files "
                        f"{modalities[m]!r})"
                    )
                if key not in found:
                    raise FileNotFoundError(f"tile {key!r}: no {m} file matching {modalities[m]!r} in {folders[split]}")
                mods[m] = found[key]
            if labels and key not in lab:
                raise FileNotFoundError(f"tile {key!r}: no labels file matching {labels!r} in {folders[split]}")
            tiles.append(
                Tile(
                    name=key,
                    modalities=mods,
                    labels=lab.get(key),
                    eroded_labels=ero.get(key),
                    label_encoding=encoding,
                    bands={m: tuple(int(b) for b in v) for m, v in (bands or {}).items()},
                    scaling=dict(recommended),
                )
            )
        splits[split] = tiles
    if test:
        names_ = {str(t) for t in test}
        missing = sorted(names_ - {t.name for t in splits["train"]})
        if missing:
            raise ValueError(f"test tiles {missing} not found in source 'folder'")
        splits["test"] = splits.get("test", []) + [t for t in splits["train"] if t.name in names_]
        splits["train"] = [t for t in splits["train"] if t.name not in names_]
    if "train" in splits:
        splits["train"], held = _hold_out(splits["train"], _as_names(validation, ""), "folder")
        splits["validation"] = splits.get("validation", []) + held
    if top_classes is not None and label_encoding is None:
        # Picked on the final training tiles (after the hold-outs), so no test pixel chooses a class.
        encoding = top_classes_encoding(encoding, splits.get("train", []), top_classes, classes, palette)
        for tile in (t for tiles in splits.values() for t in tiles):
            tile.label_encoding = encoding
    return splits


# -- built-in demo --
DEMO_PATTERNS = {"optical": "*_rgb.tif", "dsm": "*_dsm.tif"}


@register_source("demo")
def demo(data_dir: Path | None, *, seed: int = 0, validation: int | Sequence[str] | None = None) -> Splits:
    """The procedurally generated city of :mod:`mfpeft.data.demo` (generated on first use, then cached)."""
    from mfpeft.data.demo import demo_data_dir

    root = data_dir if data_dir is not None else demo_data_dir(seed=seed)
    if data_dir is not None and not (root / "train").is_dir():
        root = demo_data_dir(cache_dir=root, seed=seed)
    return folder(
        root,
        modalities=DEMO_PATTERNS,
        labels="*_label.tif",
        eroded_labels="*_label_noBoundary.tif",
        label_kind="palette",
        # The paper's scaling, not the stats default of folders: the README's demo results were measured so.
        scaling={"optical": Scaling("divide"), "dsm": Scaling("minmax_tile")},
        validation=validation,
    )


# -- Hugging Face datasets --
METADATA_KEY = "mfpeft"


class _HFCell:
    """A lazily read cell of a ``datasets.Dataset``: (C, H, W) or (H, W) numpy array."""

    def __init__(self, dataset: Any, row: int, column: str) -> None:
        self.dataset, self.row, self.column = dataset, row, column
        self.description = f"hf row {row} column {column!r}"

    def __call__(self) -> np.ndarray:
        value = self.dataset[self.row][self.column]
        array = np.asarray(value)
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
            array = np.moveaxis(array, -1, 0)  # PIL-like (H, W, C) -> (C, H, W)
        return array


def read_metadata(dataset: Any) -> dict[str, Any]:
    """mfpeft metadata stored in a prepared dataset's description (empty dict if none)."""
    try:
        data = json.loads(dataset.info.description or "{}")
    except (ValueError, AttributeError):
        return {}
    return data.get(METADATA_KEY, {}) if isinstance(data, dict) else {}


def _hf_scaling(
    meta: Mapping[str, Any], mods: Sequence[str], split: str
) -> tuple[dict[str, Scaling], dict[str, Scaling]]:
    """``(recommended scaling, prepared scaling)`` per modality of an hf split from its mfpeft metadata.

    A prepared set (``scaled``) stores model inputs made with the recorded raw -> input scaling: that is its
    prepared scaling, never applied again. Otherwise the recorded scaling is a recommendation, else ``stats``.
    """
    import warnings

    try:
        recorded = {m: Scaling.from_dict(s) for m, s in dict(meta.get("scaling") or {}).items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"hf split {split!r}: mfpeft metadata scaling: {error}") from None
    if not meta.get("scaled", False):
        return {m: recorded.get(m) or Scaling("stats") for m in mods}, {}
    unknown = [m for m in mods if m not in recorded]
    if unknown:
        warnings.warn(f"hf split {split!r} is prepared (scaled) but records no scaling for {unknown}; a model "
                      "trained on it records 'none' for them, and predict would read raw rasters unscaled",
                      UserWarning, stacklevel=3)  # fmt: skip
    return {}, {m: recorded.get(m) or Scaling("none") for m in mods}


@register_source("hf")
def hf(
    data_dir: Path | None,
    *,
    path: str | None = None,
    modalities: Sequence[str] | None = None,
    label_column: str = "labels",
    eroded_label_column: str = "labels_eroded",
    classes: Sequence[str] | None = None,
) -> Splits:
    """A Hugging Face dataset: a ``save_to_disk`` folder (``data_dir``) or a Hub id (``path``).

    One column per modality ((C, H, W) arrays or images) and a label column of class indices. A data set
    written by ``mfpeft prepare`` carries its modalities, classes and scaling in its description: its values
    are model inputs already, read as they are, and its tiles report (``Tile.prepared_scaling``) the raw ->
    input scaling they were made with. Other data sets default to ``stats``, like folders.
    """
    import datasets

    if path is None and data_dir is None:
        raise ValueError("source 'hf' needs a save_to_disk folder (--data-dir) or a Hub id (path=...)")
    if data_dir is not None and path is None:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"data folder {data_dir} does not exist (source 'hf')")
        loaded = datasets.load_from_disk(str(data_dir))
    else:
        loaded = datasets.load_dataset(str(path))
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits: Splits = {}
    for split_name, ds in loaded.items():
        split = "validation" if split_name in ("val", "valid") else split_name
        if split not in SPLITS:
            continue
        meta = read_metadata(ds)
        mods = list(
            modalities
            or meta.get("modalities")
            or [c for c in ds.column_names if c not in (label_column, eroded_label_column, "tile", "row", "col")]
        )
        missing = [m for m in mods if m not in ds.column_names]
        if missing:
            raise ValueError(f"hf split {split_name!r} has no column(s) {missing} (columns: {ds.column_names})")
        names = tuple(classes or meta.get("classes") or ISPRS_CLASSES)
        # A prepared data set records how its source's label rasters were encoded; its labels are indices.
        original = meta.get("label_encoding")
        source_encoding = LabelEncoding.from_dict(original, "mfpeft metadata label_encoding") if original else None
        colours = source_encoding.palette if source_encoding and source_encoding.classes == names else ()
        encoding = LabelEncoding("index", names, colours)
        if source_encoding is not None and source_encoding.classes != names:
            source_encoding = None  # classes= renamed them: the recorded rasters' encoding no longer applies
        scaling, prepared = _hf_scaling(meta, mods, split_name)
        has_labels = label_column in ds.column_names
        has_eroded = eroded_label_column in ds.column_names
        tiles = []
        for i in range(len(ds)):
            tiles.append(
                Tile(
                    name=f"{split}-{i}",
                    modalities={m: _HFCell(ds, i, m) for m in mods},
                    labels=_HFCell(ds, i, label_column) if has_labels else None,
                    eroded_labels=_HFCell(ds, i, eroded_label_column) if has_eroded else None,
                    label_encoding=encoding,
                    scaling=dict(scaling),
                    source_encoding=source_encoding,
                    prepared_scaling=dict(prepared),
                )
            )
        if not tiles:
            raise ValueError(f"split {split_name!r} of the hf dataset is empty")
        splits[split] = tiles
    return splits
