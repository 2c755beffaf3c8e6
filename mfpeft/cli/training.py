"""Command-line parsing of `TrainingArguments` (dashed flags) plus the data-source options (`mfpeft.cli.options`)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..engine.arguments import TrainingArguments, apply_preset

# Fields set from the shared data-source flags (mfpeft.cli.options.add_source_arguments), not flags of their own.
_NOT_FLAGS = ("source_options", "scaling")


def _field_type(annotation: Any) -> tuple[Any, bool]:
    """(base type, is a list) of a dataclass field annotation such as ``int | None`` or ``list[str]``."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        return typing.get_args(hint)[0], True
    return hint, False


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--dashed-name`` flag per `TrainingArguments` field; unset flags stay absent from the namespace."""
    hints = typing.get_type_hints(TrainingArguments)
    group = parser.add_argument_group("training")
    for f in dataclasses.fields(TrainingArguments):
        if f.name in _NOT_FLAGS:
            continue
        kind, is_list = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if kind is bool and f.default is True:
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        elif kind is bool:
            group.add_argument(flag, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=help_text)
        elif is_list:
            group.add_argument(flag, dest=f.name, type=kind, nargs="*", default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def training_arguments_from(
    namespace: argparse.Namespace, source_options: dict[str, Any], scaling: dict[str, Any] | None = None
) -> TrainingArguments:
    """Build validated arguments: explicit flags win over the preset, the preset over the defaults.

    ``source_options`` and ``scaling`` (parsed ``--scaling``) come from the shared data-source flags
    (`mfpeft.cli.options.source_options`, `mfpeft.cli.options.scaling_options`)."""
    names = {f.name for f in dataclasses.fields(TrainingArguments)} - set(_NOT_FLAGS)
    explicit = {k: v for k, v in vars(namespace).items() if k in names}
    args = TrainingArguments(**explicit, source_options=source_options, scaling=dict(scaling or {}))
    return apply_preset(args, set(explicit))


def parse_training_arguments(argv: Sequence[str] | None = None) -> TrainingArguments:
    """Parse a recipe's command line (training flags and the data-source flags of ``mfpeft prepare``)."""
    from .options import add_source_arguments, scaling_options, source_options

    parser = argparse.ArgumentParser(description="Train MFNet (encoder + multimodal PEFT tuner + DFM + UNetFormer).")
    add_training_arguments(parser)
    add_source_arguments(parser)
    namespace = parser.parse_args(argv)
    namespace.source = getattr(namespace, "dataset", TrainingArguments.dataset)
    return training_arguments_from(namespace, source_options(namespace), scaling_options(namespace))
