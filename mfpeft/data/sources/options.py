"""The one table of data-source options: each flag of the command line, the sources it is for, and the
`get_source` keyword it becomes.

``mfpeft prepare``, ``train``, ``evaluate`` and ``recipes/train.py`` build their data-source flags from
:data:`SOURCE_OPTIONS` (`mfpeft.cli.options`), in table order; :func:`source_keywords` turns the parsed values
into the keywords of one source. A new source declares its options here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mfpeft.common.scaling import SCALING_SYNTAX
from mfpeft.data.blocks import parse_split_fractions
from mfpeft.data.labels import parse_code_map
from mfpeft.data.palette import parse_palette

# How a flag's text is read (mfpeft.cli.options turns each into an argparse type):
OPTION_TYPES = (
    "text",  # the text itself
    "int",
    "choice",  # one of `choices`
    "count_or_names",  # a count (digits) or comma-separated names
    "name=value",  # NAME=VALUE, repeatable: a list of (name, value) pairs
)
# When a parsed value is given to the source: always, when not None, or when not empty.
PASSED = ("always", "given", "nonempty")
# Help sections; None is the command's own options.
BLOCKS_GROUP = "splits inside a scene (any source; docs/data.md)"
FOLDER_GROUP = "folder source"


@dataclasses.dataclass(frozen=True)
class SourceOption:
    """One data-source option: its flag (``--name``), how it is read, and the keyword of the sources it is for.

    ``keyword`` is the `get_source` keyword (None: not a source keyword; its command reads it); ``sources``
    the sources given it (None: every source); ``parse(value, flag)`` turns the flag's value into the
    keyword's; options with ``merge`` add their ``{name: value}`` entries to one mapping keyword, in order.
    """

    name: str
    help: str
    keyword: str | None
    sources: tuple[str, ...] | None = None
    type: str = "text"
    default: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    group: str | None = None
    parse: Callable[[Any, str], Any] | None = None
    passed: str = "given"
    merge: bool = False

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"SourceOption {self.name!r}: type={self.type!r} must be one of {OPTION_TYPES}")
        if self.passed not in PASSED:
            raise ValueError(f"SourceOption {self.name!r}: passed={self.passed!r} must be one of {PASSED}")
        if bool(self.choices) != (self.type == "choice"):
            raise ValueError(f"SourceOption {self.name!r}: choices={self.choices!r} go with type='choice' only")

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        """The attribute of the parsed command line (argparse's name for the flag)."""
        return self.name.replace("-", "_")

    def gives(self, source: str, value: Any) -> bool:
        """Whether ``value`` of this option becomes a keyword of ``source``."""
        if self.keyword is None or (self.sources is not None and source not in self.sources):
            return False
        return self.passed == "always" or (value is not None if self.passed == "given" else bool(value))


def _comma_list(text: str, flag: str) -> list[str]:
    return [c for c in text.split(",") if c]


def _code_map(text: str, flag: str) -> dict[int | str, int]:
    return parse_code_map(text, flag)


def _palette(text: str, flag: str) -> Any:
    return parse_palette(text, flag)


def _split_fractions(text: str, flag: str) -> dict[str, float]:
    return parse_split_fractions(text)


def _modality(name: str) -> Callable[[str, str], dict[str, str]]:
    """``parse`` of a flag giving the pattern of modality ``name``."""

    def parse(pattern: str, flag: str) -> dict[str, str]:
        return {name: pattern}

    return parse


def _pairs(pairs: Sequence[tuple[str, str]], flag: str) -> dict[str, str]:
    return dict(pairs)


def _band_lists(pairs: Sequence[tuple[str, str]], flag: str) -> dict[str, list[int]]:
    return {name: [int(b) for b in bands.split(",")] for name, bands in pairs}


_FOLDER = ("folder",)
# In flag order: the order of --help and of the usage line.
SOURCE_OPTIONS: tuple[SourceOption, ...] = (
    # Not --split: evaluate uses that for the data split (train / validation / test) to score.
    SourceOption(
        name="split-preset",
        keyword="split",
        sources=("vaihingen", "potsdam"),
        passed="nonempty",
        help="split preset for vaihingen / potsdam: paper (default) or official",
    ),
    SourceOption(
        name="validation",
        keyword="validation",
        type="count_or_names",
        help="hold out validation tiles from train: a count (the last N) or comma-separated names",
    ),
    # Also the seed of the --split-blocks draw, of every source (source_keywords).
    SourceOption(
        name="data-seed",
        keyword="seed",
        sources=("demo",),
        type="int",
        default=0,
        passed="always",
        help="seed of the generated demo data set and of the --split-blocks draw",
    ),
    SourceOption(
        name="split-blocks",
        keyword="split_blocks",
        metavar="SPLIT=FRACTION,...",
        group=BLOCKS_GROUP,
        parse=_split_fractions,
        help="cut each train tile into square blocks and draw this fraction of them (pooled over the tiles) "
        "into validation / test, e.g. validation=0.15,test=0.25; train keeps the rest",
    ),
    SourceOption(
        name="block-size",
        keyword="block_size",
        type="int",
        metavar="PIXELS",
        group=BLOCKS_GROUP,
        help="side of a --split-blocks block on the first modality's grid (default 1024; at least the chip size)",
    ),
    SourceOption(
        name="optical",
        keyword="modalities",
        sources=_FOLDER,
        metavar="PATTERN",
        group=FOLDER_GROUP,
        parse=_modality("optical"),
        passed="nonempty",
        merge=True,
        help='optical files, e.g. "*_rgb.tif" (* = tile name), or band files stacked in order: '
        '"*_b4.tif,*_b5.tif,*_b6.tif" (any modality\'s pattern may list band files)',
    ),
    SourceOption(
        name="dsm",
        keyword="modalities",
        sources=_FOLDER,
        metavar="PATTERN",
        group=FOLDER_GROUP,
        parse=_modality("dsm"),
        passed="nonempty",
        merge=True,
        help='elevation files, e.g. "*_dsm.tif"',
    ),
    SourceOption(
        name="modality",
        keyword="modalities",
        sources=_FOLDER,
        type="name=value",
        default=(),
        metavar="NAME=PATTERN",
        group=FOLDER_GROUP,
        parse=_pairs,
        passed="always",
        merge=True,
        help="another modality (repeatable; in order, after --optical and --dsm)",
    ),
    SourceOption(
        name="labels",
        keyword="labels",
        sources=_FOLDER,
        metavar="PATTERN",
        group=FOLDER_GROUP,
        passed="always",
        help='label files, e.g. "*_label.tif"',
    ),
    SourceOption(
        name="eroded-labels",
        keyword="eroded_labels",
        sources=_FOLDER,
        metavar="PATTERN",
        group=FOLDER_GROUP,
        passed="always",
        help="eroded (noBoundary) label files",
    ),
    SourceOption(
        name="label-kind",
        keyword="label_kind",
        sources=_FOLDER,
        type="choice",
        default="auto",
        choices=("auto", "palette", "codes", "index"),
        group=FOLDER_GROUP,
        passed="always",
        help="auto: 1-band integer label rasters are codes, 3-band uint8 ones palette colours",
    ),
    SourceOption(
        name="classes",
        keyword="classes",
        sources=_FOLDER,
        group=FOLDER_GROUP,
        parse=_comma_list,
        passed="nonempty",
        help="comma-separated class names",
    ),
    SourceOption(
        name="code-map",
        keyword="code_map",
        sources=_FOLDER,
        metavar="CODE=CLASS,...",
        group=FOLDER_GROUP,
        parse=_code_map,
        help="integer label code -> class index, e.g. 11=0,21=1,*=255 (* = every other code; 255 = ignore); "
        "discovered in code order if omitted",
    ),
    SourceOption(
        name="top-classes",
        keyword="top_classes",
        sources=_FOLDER,
        type="int",
        metavar="N",
        group=FOLDER_GROUP,
        help="codes: keep the N most frequent codes of the training tiles (classes 0..N-1 in code order), "
        "ignore the others",
    ),
    SourceOption(
        name="palette",
        keyword="palette",
        sources=_FOLDER,
        metavar="COLOURS",
        group=FOLDER_GROUP,
        parse=_palette,
        help='class colours: "#228b22,#1f77b4,..." (one per class) or "forest=#228b22,water=#1f77b4" (by name); '
        "the label colours of palette labels (default ISPRS)",
    ),
    SourceOption(
        name="label-nodata",
        keyword="label_nodata",
        sources=_FOLDER,
        type="int",
        group=FOLDER_GROUP,
        passed="always",
        help="label value meaning no data (ignored)",
    ),
    SourceOption(
        name="bands",
        keyword="bands",
        sources=_FOLDER,
        type="name=value",
        default=(),
        metavar="NAME=1,2,3",
        group=FOLDER_GROUP,
        parse=_band_lists,
        passed="nonempty",
        help="1-based band selection for a modality (repeatable)",
    ),
    # Not a source keyword: prepare / train / evaluate read it as the raw -> input scaling; predict and
    # heatmap take the same flag (mfpeft.cli.options.add_scaling_arguments).
    SourceOption(
        name="scaling",
        keyword=None,
        type="name=value",
        default=(),
        metavar="NAME=MODE",
        help=f"raw -> input scaling of a modality (repeatable): {SCALING_SYNTAX}. Default: prepare / train: "
        "stats for folder and hf data (per-band 2nd-98th percentiles of the training tiles), the paper's for "
        "vaihingen, potsdam, mmhunan and demo; evaluate / predict / heatmap: what the model recorded "
        "(docs/data.md)",
    ),
    SourceOption(
        name="hub-id",
        keyword="path",
        sources=("hf",),
        group=FOLDER_GROUP,
        passed="nonempty",
        help="hf source: a Hub dataset id instead of --data-dir",
    ),
)


def source_option(name: str) -> SourceOption:
    """The row of :data:`SOURCE_OPTIONS` for flag ``--name``."""
    for option in SOURCE_OPTIONS:
        if option.name == name:
            return option
    raise KeyError(f"no source option --{name}; known: {[o.name for o in SOURCE_OPTIONS]}")


def source_keywords(source: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The `get_source` keywords of ``source`` from the parsed flag values ``{dest: value}`` (absent: default).

    Raises:
        ValueError: ``--block-size`` without ``--split-blocks``, or a malformed ``--split-blocks``,
            ``--code-map`` or ``--palette``, in one line naming the option and value.
    """
    block_size = values.get("block_size")
    if block_size is not None and values.get("split_blocks") is None:
        raise ValueError(f"--block-size {block_size}: needs --split-blocks (e.g. validation=0.15,test=0.25)")
    keywords: dict[str, Any] = {}
    for option in SOURCE_OPTIONS:
        value = values.get(option.dest, option.default)
        if option.keyword is None or not option.gives(source, value):
            continue
        parsed = option.parse(value, option.flag) if option.parse is not None else value
        if option.merge:
            keywords.setdefault(option.keyword, {}).update(parsed)
        else:
            keywords[option.keyword] = parsed
    if "split_blocks" in keywords:
        # A split inside scenes comes whole (mfpeft.data.blocks): fractions, block size and the draw's seed.
        keywords.update(block_size=block_size, split_seed=values.get("data_seed", 0))
    return keywords
