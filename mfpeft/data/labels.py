"""Label rasters of the folder source: which kind they are, which codes they hold, and the code -> class map.

- ``label_kind="auto"`` (the default): 1-band integer rasters hold integer codes, 3-band (or RGB + alpha)
  uint8 rasters hold palette colours; anything else is an error naming the file, so a wrong guess never
  trains. ``palette``, ``codes`` and ``index`` say it explicitly.
- A code map ``{code: class}`` may give the class of every other code under the key ``"*"`` (``*=255``: ignore
  them); without it a code that is not in the map is an error naming the file, the codes and their pixels.
- Without a code map the codes found in the label rasters (nodata left out) become classes 0, 1, ... in code
  order. ``top_classes=N`` keeps the N most frequent codes of the *training* tiles (counted on the grid the
  model sees: their overlap with the other rasters and the tile's window) as classes 0..N-1, numbered in code
  order (ties at the cut go to the lower code), and ignores every other code.
- Nodata (the raster's own and ``label_nodata``) is ignore and never a code. A code 255 is a code like any
  other: it maps through the code map, or it is an error; only class *indices* use 255 for ignore.

The folder source calls :func:`resolve_encoding`; :func:`describe_labels` and :func:`code_table` are the lines
``mfpeft prepare`` and training print; :func:`use_recorded_encoding` lets evaluation read raw label rasters with
a model's recorded encoding.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from mfpeft.data.palette import (
    BOUNDARY_COLOR,
    IGNORE_INDEX,
    ISPRS_CLASSES,
    ISPRS_PALETTE,
    hex_colour,
    palette_or_default,
)
from mfpeft.data.tile import LabelEncoding, Tile

__all__ = [
    "LABEL_KIND_CHOICES",
    "OTHER_CODES",
    "code_table",
    "count_tile_codes",
    "describe_labels",
    "detect_label_kind",
    "discover_codes",
    "parse_code_map",
    "resolve_encoding",
    "split_code_map",
    "top_classes_encoding",
    "use_recorded_encoding",
]

LABEL_KIND_CHOICES = ("auto", "palette", "codes", "index")
OTHER_CODES = "*"
"""The code-map key meaning "every code not listed" (``--code-map 11=0,21=1,*=255``)."""

Colour = tuple[int, int, int]
PaletteOption = Sequence[Sequence[int]] | Mapping[str, Sequence[int]] | None
_KIND_WORDS = {"palette": "RGB palette colours", "codes": "integer codes", "index": "class indices"}


def _open(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as error:
        raise ValueError(f"{path}: unreadable or not a raster (labels): {error}") from error


def _header(path: Path) -> tuple[int, str, bool]:
    """(bands, dtype of band 1, band 4 is alpha) of a label raster."""
    with _open(path) as ds:
        return ds.count, ds.dtypes[0], ds.count == 4 and ds.colorinterp[3] == ColorInterp.alpha


def detect_label_kind(paths: Sequence[Path]) -> tuple[str, str]:
    """``(kind, what)`` of label rasters, e.g. ``("codes", "1-band int16 rasters")``.

    Raises:
        ValueError: the rasters differ in bands or type (naming two of them), or are neither 1-band integer
            nor 3-band / RGB + alpha uint8 (naming one, and ``--label-kind``).
    """
    seen: dict[tuple[int, str, bool], Path] = {}
    for path in paths:
        seen.setdefault(_header(Path(path)), Path(path))
    if len(seen) > 1:
        (a, path_a), (b, path_b) = list(seen.items())[:2]
        raise ValueError(
            f"label rasters differ: {path_a} has {a[0]} band(s) of {a[1]} but {path_b} has {b[0]} of {b[1]}; "
            "every label raster must be encoded alike"
        )
    (count, dtype, alpha), path = next(iter(seen.items()))
    what = f"{count}-band {dtype} rasters"
    if count == 1 and np.dtype(dtype).kind in "iu":
        return "codes", what
    if dtype == "uint8" and (count == 3 or (count == 4 and alpha)):
        return "palette", what + (" (RGB + alpha)" if count == 4 else "")
    raise ValueError(
        f"{path}: cannot tell how these labels are encoded ({count} band(s) of {dtype}); auto reads 1-band "
        "integer rasters as codes and 3-band (or RGB + alpha) uint8 rasters as palette colours; pass "
        "--label-kind codes, index or palette"
    )


def _rows(ds: Any, block_pixels: int = 1 << 22) -> list[Window]:
    """Row bands of whole blocks, about ``block_pixels`` each: bounded memory, every block decoded once."""
    block_rows = max(1, min(ds.block_shapes[0][0], ds.height))
    rows = max(block_rows, block_pixels // max(ds.width, 1) // block_rows * block_rows)
    return [Window(0, r, ds.width, min(rows, ds.height - r)) for r in range(0, ds.height, rows)]


def _valid_codes(values: np.ndarray, nodata: Sequence[float | None], source: str) -> np.ndarray:
    """The values of ``values`` that are codes (nodata and NaN left out), as int64; non-whole ones fail."""
    keep = np.ones(values.shape, dtype=bool)
    if values.dtype.kind == "f":
        keep &= np.isfinite(values)
    for value in nodata:
        if value is not None and not np.isnan(value):
            keep &= values != value
    kept = values[keep]
    if kept.dtype.kind == "f" and (kept % 1 != 0).any():
        raise ValueError(f"{source}: label codes must be whole numbers, found {np.unique(kept[kept % 1 != 0])[:5]}")
    return kept.astype(np.int64)


def discover_codes(paths: Sequence[Path], nodata: float | None = None) -> set[int]:
    """Every code in the label rasters (whole files, block by block), nodata and ``nodata`` left out."""
    codes: set[int] = set()
    for path in paths:
        with _open(Path(path)) as ds:
            for window in _rows(ds):
                kept = _valid_codes(ds.read(1, window=window), (ds.nodata, nodata), str(path))
                codes.update(np.unique(kept).tolist())
    return codes


def count_tile_codes(tiles: Sequence[Tile], rows: int = 512) -> tuple[Counter[int], int]:
    """``(pixels per code, nodata pixels)`` of the tiles' label rasters, read on each tile's grid (its overlap
    with the other rasters and its window: what a model trained on the tiles sees)."""
    from mfpeft.data.raster import label_row_bands

    counts: Counter[int] = Counter()
    nodata = 0
    for reader, window in label_row_bands(tiles, rows):
        raw, valid = reader.read_label_codes(window)
        values, pixels = np.unique(raw[valid].astype(np.int64), return_counts=True)
        counts.update(dict(zip(values.tolist(), pixels.tolist())))
        nodata += int(valid.size - np.count_nonzero(valid))
    return counts, nodata


def split_code_map(mapping: Mapping[Any, Any], option: str = "code_map") -> tuple[dict[int, int], int | None]:
    """``({code: class}, class of every other code or None)`` from a map that may hold the key ``"*"``.

    Raises:
        ValueError: a key that is no integer code or ``*``, or a class that is no index 0-254 or 255.
    """
    table: dict[int, int] = {}
    other: int | None = None
    for key, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= IGNORE_INDEX:
            raise ValueError(f"{option}: {key}={value!r}: a class must be an index 0-254, or 255 to ignore")
        if str(key).strip() == OTHER_CODES:
            other = int(value)
        elif (isinstance(key, (int, np.integer)) and not isinstance(key, bool)) or (
            isinstance(key, str) and key.strip().lstrip("-").isdigit()
        ):
            table[int(key)] = int(value)
        else:
            raise ValueError(f"{option}: {key!r} is not an integer code (or '*' for every other code)")
    return table, other


def parse_code_map(text: str, option: str = "--code-map") -> dict[int | str, int]:
    """``"11=0,21=1,*=255"`` -> ``{11: 0, 21: 1, "*": 255}``.

    Raises:
        ValueError: one line naming ``option`` and the value: an entry that is not ``CODE=CLASS``, a code
            given twice, a class outside 0-254 / 255.
    """
    wanted = f"{option} {text!r}: expected CODE=CLASS,... (an integer code or *, a class index 0-254 or 255 = ignore)"
    mapping: dict[int | str, int] = {}
    for item in str(text).split(","):
        code, sep, value = (part.strip() for part in item.partition("="))
        number = code.lstrip("-")
        if not sep or not value.isdigit() or not (code == OTHER_CODES or (number.isdigit() and code.count("-") <= 1)):
            raise ValueError(f"{wanted}; {item.strip()!r} is not")
        key: int | str = code if code == OTHER_CODES else int(code)
        if key in mapping:
            raise ValueError(f"{wanted}; code {code} is given twice")
        if int(value) > IGNORE_INDEX:
            raise ValueError(f"{wanted}; class {value} of code {code} is past 255")
        mapping[key] = int(value)
    return mapping


def _palette_for(palette: PaletteOption, classes: Sequence[str], kind: str) -> tuple[Colour, ...] | None:
    """Each class's colour from a palette option: one colour per class in order, or colours by class name
    (for code / index labels the classes not named keep their default colour). None: the default."""
    if palette is None:
        return None
    if isinstance(palette, Mapping):
        unknown = [name for name in palette if name not in classes]
        if unknown:
            raise ValueError(f"palette names {unknown}, which are not classes; the classes are {list(classes)}")
        missing = [name for name in classes if name not in palette]
        if missing and kind == "palette":
            raise ValueError(f"palette gives no colour for classes {missing}; palette labels need one per class")
        defaults = palette_or_default(None, len(classes))
        return tuple(tuple(palette.get(n, d))[:3] for n, d in zip(classes, defaults))  # type: ignore[misc]
    colours = tuple(tuple(int(v) for v in c) for c in palette)
    if len(colours) != len(classes):
        raise ValueError(f"palette has {len(colours)} colours for the {len(classes)} classes {list(classes)}")
    return colours  # type: ignore[return-value]


def _palette_encoding(classes: Sequence[str] | None, palette: PaletteOption, nodata: int | None) -> LabelEncoding:
    """Palette labels: the colours are the labels, so every class needs one, and black (ignore) is none."""
    if classes is None:
        if isinstance(palette, Mapping):
            classes = list(palette)
        elif palette is None or tuple(tuple(c) for c in palette) == ISPRS_PALETTE:
            classes = ISPRS_CLASSES
        else:
            classes = [f"class_{i}" for i in range(len(palette))]
    colours = _palette_for(palette if palette is not None else ISPRS_PALETTE, classes, "palette")
    black = [name for name, colour in zip(classes, colours or ()) if tuple(colour) == BOUNDARY_COLOR]
    if black:
        raise ValueError(f"palette gives {black} the colour #000000, which palette labels use for ignore (boundary)")
    return LabelEncoding("palette", tuple(classes), colours or (), nodata=nodata)


def _codes_encoding(
    paths: Sequence[Path],
    classes: Sequence[str] | None,
    palette: PaletteOption,
    code_map: Mapping[Any, Any] | None,
    nodata: int | None,
) -> LabelEncoding:
    """Code labels: the given map, or the codes found numbered in code order."""
    if code_map is not None:
        table, other = split_code_map(code_map)
        if not table:
            raise ValueError(f"code_map {dict(code_map)} lists no code; give CODE=CLASS pairs (and *=255 if wanted)")
    else:
        if not paths:
            raise ValueError("integer code labels need a code map (--code-map) or label rasters to find the codes in")
        codes = discover_codes(paths, nodata)
        if not codes:
            raise ValueError(f"the label rasters ({paths[0]}, ...) hold no code: every pixel is nodata")
        table, other = {code: index for index, code in enumerate(sorted(codes))}, None
        if classes is not None and len(classes) != len(table):
            raise ValueError(
                f"classes names {len(classes)} classes but the label rasters hold {len(table)} codes "
                f"{sorted(table)[:30]}; give {len(table)} names, a code map, or top_classes={len(classes)}"
            )
    indices = sorted({v for v in [*table.values(), other] if v is not None and v != IGNORE_INDEX})
    if not indices:
        raise ValueError(f"code_map {dict(code_map or {})} sends every code to 255 (ignore): nothing to learn")
    names = tuple(classes) if classes is not None else tuple(f"class_{i}" for i in range(indices[-1] + 1))
    if indices[-1] >= len(names):
        raise ValueError(f"code_map maps codes to class {indices[-1]} but there are {len(names)} classes {list(names)}")
    colours = _palette_for(palette, names, "codes")
    return LabelEncoding("codes", names, colours or (), code_map=table, nodata=nodata, other=other)


def resolve_encoding(
    paths: Sequence[Path],
    *,
    label_kind: str = "auto",
    classes: Sequence[str] | None = None,
    palette: PaletteOption = None,
    code_map: Mapping[Any, Any] | None = None,
    label_nodata: int | None = None,
    top_classes: int | None = None,
    label_encoding: LabelEncoding | None = None,
) -> LabelEncoding:
    """The label encoding of the folder source's label rasters ``paths`` (all splits), from its options.

    ``label_encoding`` (e.g. a model's recorded one) is used as it is (``label_nodata`` still applies: it is
    the rasters' own). With ``top_classes`` the result holds every code found, to be narrowed to the training
    tiles' most frequent ones by :func:`top_classes_encoding` once the splits are known.

    Raises:
        ValueError: naming the option and value, or the file, that does not fit.
    """
    if label_encoding is not None:
        return label_encoding if label_nodata is None else dataclasses.replace(label_encoding, nodata=label_nodata)
    if label_kind not in LABEL_KIND_CHOICES:
        raise ValueError(f"label_kind={label_kind!r} must be one of {LABEL_KIND_CHOICES}")
    kind = label_kind
    if kind == "auto":
        kind = detect_label_kind(paths)[0] if paths else ("codes" if code_map or top_classes else "palette")
    if top_classes is not None:
        if isinstance(top_classes, bool) or not isinstance(top_classes, int) or not 1 <= top_classes < IGNORE_INDEX:
            raise ValueError(f"--top-classes {top_classes!r} must be a whole number 1-254")
        if kind != "codes" or code_map is not None:
            what = "a code map" if code_map is not None else f"{kind} labels"
            raise ValueError(f"--top-classes {top_classes} picks classes among integer codes; not with {what}")
        if classes is not None and len(classes) != top_classes:
            raise ValueError(f"--top-classes {top_classes} with {len(classes)} class names {list(classes)}")
        classes = None  # named once the classes are picked
    if kind == "palette":
        return _palette_encoding(classes, palette, label_nodata)
    if kind == "codes":
        return _codes_encoding(paths, classes, palette if top_classes is None else None, code_map, label_nodata)
    if classes is None and isinstance(palette, Mapping):
        classes = list(palette)
    if classes is None:
        raise ValueError("index labels need the class names (--classes a,b,c or classes=[...])")
    colours = _palette_for(palette, classes, "index")
    return LabelEncoding("index", tuple(classes), colours or (), nodata=label_nodata)


def top_classes_encoding(
    encoding: LabelEncoding,
    train: Sequence[Tile],
    top_classes: int,
    classes: Sequence[str] | None = None,
    palette: PaletteOption = None,
) -> LabelEncoding:
    """Keep the ``top_classes`` most frequent codes of the ``train`` tiles as classes 0..N-1 in code order (ties
    at the cut go to the lower code); every other code, seen or not, maps to 255 (ignore).

    Raises:
        ValueError: the training tiles hold fewer codes than asked for.
    """
    counts, _ = count_tile_codes(train)
    if len(counts) < top_classes:
        raise ValueError(
            f"--top-classes {top_classes}: the training tiles hold only {len(counts)} codes {sorted(counts)}"
        )
    ranked = sorted(counts, key=lambda code: (-counts[code], code))
    kept = sorted(ranked[:top_classes])
    table = {code: IGNORE_INDEX for code in encoding.code_map or {}}
    table.update({code: index for index, code in enumerate(kept)})
    names = tuple(classes) if classes is not None else tuple(f"class_{i}" for i in range(top_classes))
    colours = _palette_for(palette, names, "codes")
    return LabelEncoding("codes", names, colours or (), code_map=table, nodata=encoding.nodata, other=IGNORE_INDEX)


def describe_labels(tiles: Sequence[Tile]) -> str:
    """One line: how the tiles' label rasters are read, e.g.
    ``labels: 1-band int16 rasters -> integer codes (21 codes -> 21 classes)``."""
    tile = next((t for t in tiles if t.labels is not None), None)
    if tile is None:
        return "labels: none"
    encoding = tile.label_encoding
    if isinstance(tile.labels, (str, Path)):
        count, dtype, _ = _header(Path(tile.labels))
        what = f"{count}-band {dtype} rasters"
    else:
        what = "class indices of a prepared data set" if tile.source_encoding else "in-memory labels"
    classes = len(encoding.classes)
    detail = f"{classes} classes"
    if encoding.kind == "codes":
        kept = sum(1 for v in (encoding.code_map or {}).values() if v != IGNORE_INDEX)
        detail = f"{len(encoding.code_map or {})} codes -> {classes} classes"
        if encoding.other is not None or kept < len(encoding.code_map or {}):
            detail += f"; {'every other code' if encoding.other == IGNORE_INDEX else 'others'} ignored"
    nodata = "" if encoding.nodata is None else f", nodata {encoding.nodata:g} ignored"
    return f"labels: {what} -> {_KIND_WORDS[encoding.kind]} ({detail}{nodata})"


def code_table(tiles: Sequence[Tile]) -> list[str]:
    """Pixels per code of the tiles' integer code labels, one line per code: code, pixels, share and the
    class it maps to (``mfpeft prepare`` prints it for the training tiles). Empty for other label kinds."""
    with_labels = [t for t in tiles if t.labels is not None]
    if not with_labels or with_labels[0].label_encoding.kind != "codes":
        return []
    encoding = with_labels[0].label_encoding
    counts, nodata = count_tile_codes(with_labels)
    total = sum(counts.values())
    head = f"label codes of {len(with_labels)} training tile(s): {total:,} px"
    lines = [head + (f" (and {nodata:,} nodata px, ignored)" if nodata else "")]
    width = max([len(f"{n:,}") for n in counts.values()] + [6])
    lines.append(f"  {'code':>8}  {'pixels':>{width}}  {'share':>7}  class")
    for code in sorted(counts):
        index = encoding.class_of(code)
        if index is None:
            target = "NOT MAPPED (an error when read; map it or add *=255)"
        elif index == IGNORE_INDEX or index >= len(encoding.classes):
            target = "ignore"
        else:
            target = f"{index} {encoding.classes[index]} ({hex_colour(encoding.palette[index])})"
        share = 100 * counts[code] / max(total, 1)
        lines.append(f"  {code:>8}  {counts[code]:>{width},}  {share:>6.2f}%  {target}")
    return lines


_LABEL_OPTIONS = ("label_kind", "classes", "palette", "code_map", "top_classes")


def _same_codes(given: Mapping[Any, Any], recorded: LabelEncoding) -> bool:
    """Whether a code map sends every code where ``recorded`` does (listed codes and every other one)."""
    table, other = split_code_map(given)
    codes = set(table) | set(recorded.code_map or {})
    return other == recorded.other and all(table.get(c, other) == recorded.class_of(c) for c in codes)


def _shown(value: Any) -> str:
    """An option's value as it is written on the command line (``11=0,*=255``, ``a,b``, ``#228b22,...``)."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={hex_colour(v) if isinstance(v, (list, tuple)) else v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(hex_colour(v) if isinstance(v, (list, tuple)) else str(v) for v in value)
    return str(value)


def use_recorded_encoding(options: Mapping[str, Any], recorded: LabelEncoding, origin: str) -> dict[str, Any]:
    """Folder-source options that read the labels with ``recorded`` (e.g. the encoding a model was trained
    with, ``origin`` naming where it is recorded). Label options the caller gave anyway must agree with it.

    Raises:
        ValueError: a given label option disagrees, naming the option, its value and the recorded encoding.
    """
    out = dict(options)
    for key in _LABEL_OPTIONS:
        value = out.pop(key, None)
        if value is None or (key == "label_kind" and value == "auto"):
            continue
        if key == "label_kind":
            agrees = value == recorded.kind
        elif key == "classes":
            agrees = tuple(value) == recorded.classes
        elif key == "code_map":
            agrees = recorded.kind == "codes" and _same_codes(value, recorded)
        elif key == "palette":
            agrees = _palette_for(value, recorded.classes, recorded.kind) == recorded.palette
        else:
            agrees = False  # top_classes chooses classes from training tiles; a trained model has them
        if not agrees:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} {_shown(value)} disagrees with {origin}: {recorded.describe()}; omit {flag} to read "
                "the labels as the model was trained"
            )
    out["label_encoding"] = recorded
    return out
