"""Flags shared by several commands: the data-source flags, built from the one table of source options
(`mfpeft.data.sources.options`), and ``--scaling``; and reading them back into `get_source` keywords.

Used by ``mfpeft prepare``, ``train`` and ``evaluate`` (:mod:`mfpeft.cli.commands`), by ``predict`` and ``heatmap``
(``--scaling``) and by the recipes' parser (:mod:`mfpeft.cli.training`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mfpeft.data.sources.options import SourceOption

__all__ = [
    "add_scaling_arguments",
    "add_source_arguments",
    "count_or_names",
    "key_value",
    "scaling_options",
    "source_options",
]


def key_value(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` -> ``(NAME, VALUE)``, stripped; argparse reports a text without ``=``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def count_or_names(text: str) -> int | list[str]:
    """``"3"`` -> 3 (a count), ``"a,b"`` -> ``["a", "b"]`` (names)."""
    return int(text) if text.isdigit() else [v for v in text.split(",") if v]


# The argparse type of each option type of the table (mfpeft.data.sources.options.OPTION_TYPES).
_ARGPARSE_TYPES: dict[str, Any] = {
    "text": None,
    "int": int,
    "choice": None,
    "count_or_names": count_or_names,
    "name=value": key_value,
}


def _add_option(container: Any, option: SourceOption) -> None:
    """Add the flag of one table row to a parser or argument group."""
    settings: dict[str, Any] = {"help": option.help}
    if option.metavar is not None:
        settings["metavar"] = option.metavar
    if option.choices:
        settings["choices"] = option.choices
    if _ARGPARSE_TYPES[option.type] is not None:
        settings["type"] = _ARGPARSE_TYPES[option.type]
    if option.type == "name=value":
        settings.update(action="append", default=list(option.default))
    elif option.default is not None:
        settings["default"] = option.default
    container.add_argument(option.flag, **settings)


def add_source_arguments(p: Any) -> None:
    """The data-source options shared by ``prepare``, ``train`` and ``evaluate`` (see :func:`source_options`).

    One flag per row of `mfpeft.data.sources.options.SOURCE_OPTIONS`, in table order, each in its help group.
    """
    from mfpeft.data.sources.options import SOURCE_OPTIONS

    groups: dict[str, Any] = {}
    for option in SOURCE_OPTIONS:
        if option.group is not None and option.group not in groups:
            groups[option.group] = p.add_argument_group(option.group)
        _add_option(p if option.group is None else groups[option.group], option)


def add_scaling_arguments(p: Any) -> None:
    """``--scaling NAME=MODE``, shared by every command that reads rasters (see :func:`scaling_options`)."""
    from mfpeft.data.sources.options import source_option

    _add_option(p, source_option("scaling"))


def scaling_options(args: argparse.Namespace) -> dict[str, Any]:
    """``{modality: Scaling}`` of the ``--scaling`` flags, parsed by the one parser (`Scaling.parse`).

    Raises:
        ValueError: one line naming the flag and value, e.g. ``--scaling optical=linear:abc: ...``, or a
            modality given twice.
    """
    from mfpeft.data.scaling import parse_scalings

    texts: dict[str, str] = {}
    for name, text in getattr(args, "scaling", None) or []:
        if name in texts:
            raise ValueError(f"--scaling {name}= is given twice ({texts[name]!r} and {text!r}); give it once")
        texts[name] = text
    return parse_scalings(texts, "--scaling")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of `get_source` for ``args.source`` given by the flags of :func:`add_source_arguments`.

    Raises:
        ValueError: a malformed ``--code-map`` or ``--palette``, in one line naming the option and value.
    """
    from mfpeft.data.sources.options import SOURCE_OPTIONS, source_keywords

    values = {option.dest: getattr(args, option.dest) for option in SOURCE_OPTIONS if hasattr(args, option.dest)}
    return source_keywords(args.source, values)
