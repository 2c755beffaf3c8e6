"""Any folder of rasters, paired by name patterns with one ``*`` standing for the tile name.

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

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mfpeft.data.labels import resolve_encoding, top_classes_encoding
from mfpeft.data.scaling import Scaling, parse_scalings
from mfpeft.data.sources.paths import find_dir, require_dir
from mfpeft.data.sources.registry import register_source
from mfpeft.data.sources.splits import SPLIT_DIRS, Splits, hold_out_validation, set_label_encoding
from mfpeft.data.tile import LabelEncoding, Tile

# A modality's files: {tile: path, or band paths stacked in order}.
ModalityFiles = dict[str, Path | tuple[Path, ...]]


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


def _match_bands(folder: Path, spec: str, modality: str) -> tuple[ModalityFiles, dict[str, str]]:
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
    complete: ModalityFiles = {k: tuple(f[k] for f in found) for k in keys if all(k in f for f in found)}
    missing = {k: next(p for p, f in zip(patterns, found) if k not in f) for k in keys - set(complete)}
    return complete, missing


@dataclass(frozen=True)
class _SplitFiles:
    """The files in the folder of one split that the patterns match, by tile name."""

    split: str
    folder: Path
    patterns: Mapping[str, str]  # modality -> pattern; the first modality defines the tiles
    label_pattern: str | None
    modalities: dict[str, tuple[ModalityFiles, dict[str, str]]]  # modality -> _match_bands(...)
    labels: dict[str, Path]
    eroded_labels: dict[str, Path]

    @classmethod
    def match(
        cls, split: str, folder: Path, patterns: Mapping[str, str], labels: str | None, eroded_labels: str | None
    ) -> _SplitFiles:
        modalities = {m: _match_bands(folder, p, m) for m, p in patterns.items()}
        found_labels = _match(folder, labels) if labels else {}
        found_eroded = _match(folder, eroded_labels) if eroded_labels else {}
        return cls(split, folder, patterns, labels, modalities, found_labels, found_eroded)

    def tile_names(self) -> list[str]:
        """The tile names of the first modality (with all its band files or not), sorted; never empty."""
        first = next(iter(self.patterns))
        found, partial = self.modalities[first]
        names = sorted({*found, *partial})
        if not names:
            raise ValueError(
                f"split {self.split!r} of source 'folder' is empty: no file in {self.folder} "
                f"matches {self.patterns[first]!r} ({first})"
            )
        return names

    def tile(
        self,
        name: str,
        encoding: LabelEncoding,
        bands: Mapping[str, Sequence[int]] | None,
        scaling: Mapping[str, Scaling],
    ) -> Tile:
        """The tile ``name``; `FileNotFoundError` naming the pattern of a modality or labels it lacks a file of."""
        files: ModalityFiles = {}
        for m, (found, partial) in self.modalities.items():
            if name in partial:
                raise FileNotFoundError(
                    f"tile {name!r}: no {m} band file matching {partial[name]!r} in {self.folder} (band files "
                    f"{self.patterns[m]!r})"
                )
            if name not in found:
                raise FileNotFoundError(f"tile {name!r}: no {m} file matching {self.patterns[m]!r} in {self.folder}")
            files[m] = found[name]
        if self.label_pattern and name not in self.labels:
            raise FileNotFoundError(f"tile {name!r}: no labels file matching {self.label_pattern!r} in {self.folder}")
        return Tile(
            name=name,
            modalities=dict(files),
            labels=self.labels.get(name),
            eroded_labels=self.eroded_labels.get(name),
            label_encoding=encoding,
            bands={m: tuple(int(b) for b in v) for m, v in (bands or {}).items()},
            scaling=dict(scaling),
        )


def _split_folders(root: Path) -> dict[str, Path]:
    """The split subfolders of ``root`` (``train/``, ``validation/`` or ``val/``, ``test/``), else all in train."""
    split_dirs = {s: find_dir(root, d) for s, d in SPLIT_DIRS.items()}
    return {s: d for s, d in split_dirs.items() if d is not None} or {"train": root}


def _hold_out_test(splits: Splits, test: Sequence[str] | None) -> None:
    """Move the train tiles named in ``test`` to the test split, in place."""
    if not test:
        return
    names = {str(t) for t in test}
    missing = sorted(names - {t.name for t in splits["train"]})
    if missing:
        raise ValueError(f"test tiles {missing} not found in source 'folder'")
    splits["test"] = splits.get("test", []) + [t for t in splits["train"] if t.name in names]
    splits["train"] = [t for t in splits["train"] if t.name not in names]


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
    train, except ``test`` (tile names) and the ``validation`` hold-out. The label options (``label_kind``
    ... ``label_encoding``) and ``scaling`` are described in this module's docstring.
    """
    root = require_dir(data_dir, "folder")
    recommended = {m: parse_scalings(scaling, "scaling").get(m) or Scaling("stats") for m in modalities}
    if not modalities:
        raise ValueError("source 'folder' needs at least one modality pattern")
    found = [_SplitFiles.match(s, sub, modalities, labels, eroded_labels) for s, sub in _split_folders(root).items()]
    encoding = resolve_encoding(
        [path for files in found for path in files.labels.values()],
        label_kind=label_kind,
        classes=classes,
        palette=palette,
        code_map=code_map,
        label_nodata=label_nodata,
        top_classes=top_classes,
        label_encoding=label_encoding,
    )
    splits = {f.split: [f.tile(name, encoding, bands, recommended) for name in f.tile_names()] for f in found}
    _hold_out_test(splits, test)
    if "train" in splits:
        hold_out_validation(splits, validation, "", "folder")
    if top_classes is not None and label_encoding is None:
        # Picked on the final training tiles (after the hold-outs), so no test pixel chooses a class.
        encoding = top_classes_encoding(encoding, splits.get("train", []), top_classes, classes, palette)
        set_label_encoding(splits, encoding)
    return splits
