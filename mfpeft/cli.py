"""The ``mfpeft`` command line.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that registers its arguments and sets
``func`` to a ``run_<name>(args) -> int`` function; :data:`SUBCOMMANDS` lists them in help order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _validation(text: str) -> int | list[str]:
    return int(text) if text.isdigit() else [v for v in text.split(",") if v]


def add_source_arguments(p: Any) -> None:
    """The data-source options shared by ``prepare``, ``train`` and ``evaluate`` (see :func:`source_options`)."""
    p.add_argument("--split", help="split preset for vaihingen / potsdam: paper (default) or official")
    p.add_argument(
        "--validation",
        type=_validation,
        help="hold out validation tiles from train: a count (the last N) or comma-separated names",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated demo data set")
    g = p.add_argument_group("folder source")
    g.add_argument("--optical", metavar="PATTERN", help='optical files, e.g. "*_rgb.tif" (* = tile name)')
    g.add_argument("--dsm", metavar="PATTERN", help='elevation files, e.g. "*_dsm.tif"')
    g.add_argument(
        "--modality",
        metavar="NAME=PATTERN",
        type=_key_value,
        action="append",
        default=[],
        help="another modality (repeatable; in order, after --optical and --dsm)",
    )
    g.add_argument("--labels", metavar="PATTERN", help='label files, e.g. "*_label.tif"')
    g.add_argument("--eroded-labels", metavar="PATTERN", help="eroded (noBoundary) label files")
    g.add_argument("--label-kind", choices=("palette", "codes", "index"), default="palette")
    g.add_argument("--classes", help="comma-separated class names")
    g.add_argument(
        "--code-map",
        metavar="CODE=CLASS,...",
        help="integer label code -> class index, e.g. 10=0,20=1,0=255 (discovered if omitted)",
    )
    g.add_argument("--label-nodata", type=int, help="label value meaning no data (ignored)")
    g.add_argument(
        "--bands",
        metavar="NAME=1,2,3",
        type=_key_value,
        action="append",
        default=[],
        help="1-based band selection for a modality (repeatable)",
    )
    g.add_argument(
        "--scaling",
        metavar="NAME=MODE",
        type=_key_value,
        action="append",
        default=[],
        help="scaling mode for a modality: divide, minmax_tile, minmax_chip, zscore, percentile, none",
    )
    g.add_argument("--hub-id", help="hf source: a Hub dataset id instead of --data-dir")


# -- prepare --
def add_prepare_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="turn a data source into a Hugging Face DatasetDict of chips (train / validation / test)",
        description="Chip every split of SOURCE on a sliding grid and save a datasets.DatasetDict "
        "(save_to_disk layout) with the scaled model inputs, labels and eroded labels.",
    )
    p.add_argument("source", help="vaihingen, potsdam, mmhunan, folder, hf or demo")
    p.add_argument("--data-dir", help="the data set's folder (omit for the demo set: the cached copy)")
    p.add_argument("--output", required=True, help="output folder (must not exist unless --overwrite)")
    p.add_argument("--chip-size", type=int, default=256)
    p.add_argument("--stride", type=int, default=256)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--push-to-hub", metavar="REPO", help="also push the data set to this Hub repository")
    add_source_arguments(p)
    p.set_defaults(func=run_prepare)


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of `get_source` given by the flags of :func:`add_source_arguments`."""
    options: dict[str, Any] = {}
    if getattr(args, "validation", None) is not None:
        options["validation"] = args.validation
    if args.source in ("vaihingen", "potsdam") and args.split:
        options["split"] = args.split
    if args.source == "demo":
        options["seed"] = args.data_seed
    if args.source == "hf" and args.hub_id:
        options["path"] = args.hub_id
    if args.source == "folder":
        modalities: dict[str, str] = {}
        if args.optical:
            modalities["optical"] = args.optical
        if args.dsm:
            modalities["dsm"] = args.dsm
        modalities.update(dict(args.modality))
        options.update(modalities=modalities, labels=args.labels, eroded_labels=args.eroded_labels,
                       label_kind=args.label_kind, label_nodata=args.label_nodata)  # fmt: skip
        if args.classes:
            options["classes"] = [c for c in args.classes.split(",") if c]
        if args.code_map:
            pairs = [_key_value(p) for p in args.code_map.split(",") if p]
            options["code_map"] = {int(k): int(v) for k, v in pairs}
        if args.bands:
            options["bands"] = {k: [int(b) for b in v.split(",")] for k, v in args.bands}
    return options


def run_prepare(args: argparse.Namespace) -> int:
    from mfpeft.data.prepare import prepare_dataset
    from mfpeft.data.scaling import Scaling

    scaling = {name: Scaling(mode=mode) for name, mode in args.scaling}
    dataset = prepare_dataset(
        args.source, args.data_dir, args.output, chip_size=args.chip_size, stride=args.stride,
        scaling=scaling or None, overwrite=args.overwrite, push_to_hub=args.push_to_hub,
        source_options=source_options(args),
    )  # fmt: skip
    sizes = ", ".join(f"{split}: {len(ds)} chips" for split, ds in dataset.items())
    print(f"wrote {args.output} ({sizes})")
    return 0


SUBCOMMANDS: list[Callable[[Any], None]] = [add_prepare_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfpeft", description="Multimodal parameter-efficient fine-tuning of SAM (MFNet)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 a reported error, 2 a usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"mfpeft {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
