"""Hugging Face datasets: a ``save_to_disk`` folder or a Hub id, one column per modality and a label column."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfpeft.data.palette import ISPRS_CLASSES
from mfpeft.data.scaling import Scaling
from mfpeft.data.sources.registry import register_source
from mfpeft.data.sources.splits import SPLITS, Splits
from mfpeft.data.tile import LabelEncoding, Tile

METADATA_KEY = "mfpeft"
# Columns of a prepared data set that are not modalities.
_BOOKKEEPING_COLUMNS = ("tile", "row", "col")


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
    try:
        recorded = {m: Scaling.from_dict(s) for m, s in dict(meta.get("scaling") or {}).items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"hf split {split!r}: mfpeft metadata scaling: {error}") from None
    if not meta.get("scaled", False):
        return {m: recorded.get(m) or Scaling("stats") for m in mods}, {}
    unknown = [m for m in mods if m not in recorded]
    if unknown:
        # stacklevel 4: the caller of get_source's source (hf <- _split_tiles <- here).
        warnings.warn(
            f"hf split {split!r} is prepared (scaled) but records no scaling for {unknown}; a model "
            "trained on it records 'none' for them, and predict would read raw rasters unscaled",
            UserWarning,
            stacklevel=4,
        )
    return {}, {m: recorded.get(m) or Scaling("none") for m in mods}


def _load(data_dir: Path | None, path: str | None) -> Any:
    """The ``datasets.DatasetDict`` of a ``save_to_disk`` folder or a Hub id (a lone Dataset becomes train)."""
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
    return loaded


def _modalities(
    ds: Any, split_name: str, meta: Mapping[str, Any], modalities: Sequence[str] | None, labels: Sequence[str]
) -> list[str]:
    """The modality columns: as given, else as recorded, else every column but ``labels`` and bookkeeping."""
    mods = list(
        modalities
        or meta.get("modalities")
        or [c for c in ds.column_names if c not in (*labels, *_BOOKKEEPING_COLUMNS)]
    )
    missing = [m for m in mods if m not in ds.column_names]
    if missing:
        raise ValueError(f"hf split {split_name!r} has no column(s) {missing} (columns: {ds.column_names})")
    return mods


def _encodings(meta: Mapping[str, Any], classes: Sequence[str] | None) -> tuple[LabelEncoding, LabelEncoding | None]:
    """(encoding of the label column: class indices, the encoding of the source's label rasters if recorded)."""
    names = tuple(classes or meta.get("classes") or ISPRS_CLASSES)
    # A prepared data set records how its source's label rasters were encoded; its labels are indices.
    original = meta.get("label_encoding")
    source_encoding = LabelEncoding.from_dict(original, "mfpeft metadata label_encoding") if original else None
    colours = source_encoding.palette if source_encoding and source_encoding.classes == names else ()
    if source_encoding is not None and source_encoding.classes != names:
        source_encoding = None  # classes= renamed them: the recorded rasters' encoding no longer applies
    return LabelEncoding("index", names, colours), source_encoding


def _split_tiles(
    ds: Any,
    split_name: str,
    split: str,
    modalities: Sequence[str] | None,
    columns: tuple[str, str],
    classes: Sequence[str] | None,
) -> list[Tile]:
    """The tiles of one split ``ds`` (a ``datasets.Dataset``), one per row; ``columns``: (labels, eroded labels)."""
    label_column, eroded_label_column = columns
    meta = read_metadata(ds)
    mods = _modalities(ds, split_name, meta, modalities, columns)
    encoding, source_encoding = _encodings(meta, classes)
    scaling, prepared = _hf_scaling(meta, mods, split_name)
    has_labels = label_column in ds.column_names
    has_eroded = eroded_label_column in ds.column_names
    tiles = [
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
        for i in range(len(ds))
    ]
    if not tiles:
        raise ValueError(f"split {split_name!r} of the hf dataset is empty")
    return tiles


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
    splits: Splits = {}
    for split_name, ds in _load(data_dir, path).items():
        split = "validation" if split_name in ("val", "valid") else split_name
        if split in SPLITS:
            columns = (label_column, eroded_label_column)
            splits[split] = _split_tiles(ds, split_name, split, modalities, columns, classes)
    return splits
