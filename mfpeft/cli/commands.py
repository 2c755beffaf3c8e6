"""The ``mfpeft`` command line.

Each subcommand is one ``add_<name>_parser(subparsers)`` function that registers its arguments and sets
``func`` to a ``run_<name>(args) -> int`` function; :data:`SUBCOMMANDS` lists them in help order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mfpeft.cli.options import add_scaling_arguments, add_source_arguments, scaling_options, source_options
from mfpeft.cli.options import key_value as _key_value  # NAME=VALUE of the predict / heatmap flags
from mfpeft.common.runtime import prepare_process

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


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
    p.set_defaults(func=run_prepare, on_interrupt=_nothing_written)


def run_prepare(args: argparse.Namespace) -> int:
    from mfpeft.data.prepare import prepare_dataset

    dataset = prepare_dataset(
        args.source,
        args.data_dir,
        args.output,
        chip_size=args.chip_size,
        stride=args.stride,
        scaling=scaling_options(args),
        overwrite=args.overwrite,
        push_to_hub=args.push_to_hub,
        source_options=source_options(args),
        say=print,
    )
    sizes = ", ".join(f"{split}: {len(ds)} chips" for split, ds in dataset.items())
    print(f"wrote {args.output} ({sizes})")
    return 0


# -- train --
def add_train_parser(subparsers: Any) -> None:
    from mfpeft.cli.training import add_training_arguments

    p = subparsers.add_parser(
        "train",
        help="train MFNet (the same options as recipes/train.py)",
        description="Train MFNet with a multimodal PEFT tuner. Multi-GPU / multi-node: "
        "`accelerate launch recipes/train.py ...` takes the same options.",
    )
    add_training_arguments(p)
    add_source_arguments(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from mfpeft.cli.training import training_arguments_from
    from mfpeft.engine.arguments import TrainingArguments
    from mfpeft.engine.training import train

    args.source = getattr(args, "dataset", TrainingArguments.dataset)
    train(training_arguments_from(args, source_options(args), scaling_options(args)))
    return 0


# -- evaluate --
def add_evaluate_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained MFNet adapter with the paper's sliding-window protocol",
        description="Sliding windows with summed logits, one confusion matrix pooled over every pixel, OA over all "
        "classes, mF1 / mIoU over the scored classes, per-class F1 / IoU, kappa; against eroded labels when "
        "the source has them.",
    )
    p.add_argument("--model", required=True, help="adapter folder or Hub repo id")
    p.add_argument("--dataset", default="demo", help="vaihingen, potsdam, mmhunan, folder, hf or demo")
    p.add_argument("--data-dir", help="the data set's folder")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--stride", type=int, default=32, help="sliding-window stride (paper: 32; MMHunan: 128)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--base-model", help="local copy of the SAM the adapter was trained on")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--output", help="also write the scores to this JSON file")
    add_source_arguments(p)
    p.set_defaults(func=run_evaluate, on_interrupt=_nothing_written)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from mfpeft.common.files import write_json
    from mfpeft.engine.evaluation import evaluate_model, is_main_process

    args.source = args.dataset
    scores = evaluate_model(
        args.model,
        args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        stride=args.stride,
        batch_size=args.batch_size,
        base_model=args.base_model,
        source_options=source_options(args),
        device=args.device,
        scaling=scaling_options(args),
    )
    if not is_main_process():  # under accelerate launch every process scores its share; one reports
        return 0
    summary = {k: scores[k] for k in ("overall_accuracy", "mean_f1", "mean_iou", "kappa")}
    print(json.dumps(summary, indent=2))
    if args.output:
        from pathlib import Path

        write_json(Path(args.output), scores)
    return 0


SUBCOMMANDS: list[Callable[[Any], None]] = [add_prepare_parser, add_train_parser, add_evaluate_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfpeft", description="Multimodal parameter-efficient fine-tuning of vision foundation models (MFNet)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    for sub in subparsers.choices.values():
        sub.formatter_class = argparse.ArgumentDefaultsHelpFormatter
        sub.add_argument("--debug", action="store_true", help="show the full traceback of an error (or MFPEFT_DEBUG=1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 a reported error, 2 a usage error,
    128 + N when stopped by signal N: 130 Ctrl-C, 143 SIGTERM). See `mfpeft.errors.run_command`."""
    prepare_process()  # first: torch's worker threads inherit the flush (common/runtime.py)
    from mfpeft.errors import run_command

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    on_interrupt = getattr(args, "on_interrupt", None)
    return run_command(
        f"mfpeft {args.command}",
        lambda: args.func(args),
        debug=args.debug,
        on_interrupt=(lambda: on_interrupt(args)) if on_interrupt else None,
    )


def _nothing_written(args: argparse.Namespace) -> str:
    return f"nothing written at {args.output}" if getattr(args, "output", None) else "nothing written"


# -- predict, heatmap (whole-scene prediction; mfpeft.engine.predict / heatmap) --
def _scene_arguments(p: Any, output_required: bool = True) -> None:
    p.add_argument("--model", required=True, help="MFNet adapter folder or Hub repo id")
    p.add_argument("--base-model", help="local copy of the SAM the adapter was trained on")
    p.add_argument(
        "--optical",
        metavar="PATH",
        help="optical raster (the first modality: defines the grid), or "
        "single-band files stacked in order: a_b4.tif,a_b5.tif,a_b6.tif (so may any modality; predict also takes "
        "URLs, glob patterns of tiles and @tiles.txt lists read as one mosaic)",
    )
    p.add_argument("--dsm", metavar="PATH", help="elevation raster")
    p.add_argument(
        "--modality",
        metavar="NAME=PATH",
        type=_key_value,
        action="append",
        default=[],
        help="a raster for another modality of the model (repeatable)",
    )
    p.add_argument(
        "--bands",
        metavar="NAME=1,2,3",
        type=_key_value,
        action="append",
        default=[],
        help="1-based band selection for a modality, e.g. optical=1,2,3 for RGBIR (repeatable)",
    )
    p.add_argument("--output", required=output_required, help="file to write")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps, ... (default: cuda when available)")
    add_scaling_arguments(p)


def _raster_paths(flag: str, value: str) -> str | tuple[str, ...]:
    """A raster flag's value: one path, or comma-separated band files (a tuple, stacked in that order)."""
    if "," not in value:
        return value
    paths = tuple(v.strip() for v in value.split(","))
    if any(not p for p in paths):
        raise ValueError(f"{flag} {value}: an empty file name between commas (band files are PATH,PATH,...)")
    return paths


def _scene_rasters(args: argparse.Namespace) -> tuple[dict[str, str | tuple[str, ...]], dict[str, list[int]]]:
    given = [("optical", "--optical", args.optical), ("dsm", "--dsm", args.dsm)]
    given += [(name, f"--modality {name}=", value) for name, value in args.modality]
    rasters = {name: _raster_paths(flag, value) for name, flag, value in given if value}
    bands = {name: [int(b) for b in value.split(",") if b] for name, value in args.bands}
    return rasters, bands


def add_predict_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label a whole scene (any size) and write a georeferenced class-id GeoTIFF",
        description="Sliding chips over the scene, logits summed over overlaps, written in row bands as they "
        "finish (memory independent of the scene height). Give one raster per modality of the model (a file, a "
        "URL, or tiles read as one mosaic), or many scenes with --scenes.",
    )
    _scene_arguments(p, output_required=False)
    p.add_argument("--scenes", metavar="CSV", help="many scenes: one column per modality plus output, a row each")
    p.add_argument("--output-dir", metavar="DIR", help="with --scenes: the folder the outputs are written in")
    p.add_argument("--chip-size", type=int, help="must equal the model's image size (the default)")
    p.add_argument("--stride", type=int, help="sliding-window step (default: half a chip; paper: 32)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--section-width",
        type=int,
        metavar="COLUMNS",
        help="stitch wider scenes in column sections of this width, so memory does not grow with the width "
        "(a multiple of 256; 0: the whole width at once; default: PredictionOptions.section_width, 4096)",
    )
    p.add_argument(
        "--weights",
        choices=("uniform", "gaussian", "cosine"),
        default="uniform",
        help="weights of overlapping chip logits (uniform = the paper's plain sum)",
    )
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x time)")
    p.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast (auto: on CUDA devices that support it)",
    )
    p.add_argument("--confidence", metavar="PATH", help="also write the per-pixel confidence (float32 GeoTIFF)")
    p.add_argument(
        "--probabilities", metavar="PATH", help="also write per-class probabilities (uint8 0-255, a band per class)"
    )
    p.add_argument("--summary", metavar="JSON", help="also write a summary: scenes, pixels, class areas, MP/s")
    p.add_argument(
        "--vector", metavar="GPKG", help='also write class polygons (GeoPackage; pip install "mfpeft[vector]")'
    )
    p.add_argument("--simplify", type=float, default=0.0, metavar="M", help="--vector: simplify tolerance (map units)")
    p.add_argument("--min-area", type=float, default=0.0, metavar="M2", help="--vector: drop smaller polygons")
    p.add_argument("--cog", action="store_true", help="write Cloud Optimised GeoTIFFs")
    p.add_argument("--preview", metavar="PNG", help="also write a colour quick-look with a legend")
    p.add_argument("--preview-labels-only", action="store_true", help="no optical / DSM panels in the preview")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep completed row bands beside each output (.NAME.partial/) and continue a killed or interrupted "
        "run from them, skipping complete scenes (runs on several processes always keep them)",
    )
    p.set_defaults(func=run_predict, on_interrupt=_predict_interrupted)


def _predict_interrupted(args: argparse.Namespace) -> str:
    from mfpeft.engine.predict_job import staged

    if staged(args.resume):
        return "the completed row bands are kept; rerun with --resume to continue"
    if args.scenes:
        return "the scenes already predicted are complete; the interrupted one left nothing"
    return _nothing_written(args)


def _prediction_options(args: argparse.Namespace, bands: dict[str, list[int]]) -> Any:
    from mfpeft.engine.predict import PredictionOptions

    sections = {} if args.section_width is None else {"section_width": args.section_width}
    return PredictionOptions(
        chip_size=args.chip_size,
        stride=args.stride,
        batch_size=args.batch_size,
        weights=args.weights,
        tta=args.tta,
        device=args.device,
        bf16="auto" if args.bf16 == "auto" else args.bf16 == "on",
        confidence=args.confidence,
        cog=args.cog,
        preview=args.preview,
        preview_inputs=not args.preview_labels_only,
        bands=bands or None,
        base_model=args.base_model,
        scaling=scaling_options(args),
        probabilities=args.probabilities,
        summary=args.summary,
        vector=args.vector,
        vector_simplify=args.simplify,
        vector_min_area=args.min_area,
        **sections,
    )


def _check_predict_flags(args: argparse.Namespace, rasters: dict[str, Any]) -> None:
    """One scene (rasters and --output) or many (--scenes and --output-dir), not a mix."""
    if args.scenes:
        given = [flag for flag, value in (("--output", args.output), ("a raster flag", rasters)) if value]
        if given:
            raise ValueError(f"--scenes {args.scenes}: the scenes file gives every raster and output; drop {given[0]}")
        if not args.output_dir:
            raise ValueError(f"--scenes {args.scenes}: give --output-dir DIR, the folder its outputs are written in")
    elif not args.output:
        raise ValueError("give --output PATH (one scene) or --scenes CSV --output-dir DIR (many scenes)")
    elif args.output_dir:
        raise ValueError(f"--output-dir {args.output_dir}: only with --scenes; one scene is written at --output")


def run_predict(args: argparse.Namespace) -> int:
    from mfpeft.engine.predict_job import predict_one
    from mfpeft.engine.scenes import predict_scenes

    rasters, bands = _scene_rasters(args)
    _check_predict_flags(args, rasters)
    options = _prediction_options(args, bands)
    if args.scenes:
        results = predict_scenes(args.model, args.scenes, args.output_dir, options, resume=args.resume)
    else:
        results = predict_one(args.model, rasters, args.output, options, resume=args.resume)
    for result in results:
        print(
            f"wrote {result.output} ({result.height} x {result.width}, {result.chips} chips, "
            f"{result.seconds:.1f} s, {result.megapixels_per_second:.2f} MP/s)"
        )
        for extra in (result.confidence, result.probabilities, result.preview, result.vector):
            if extra is not None:
                print(f"wrote {extra}")
    if args.summary and results:
        print(f"wrote {args.summary}")
    return 0


def add_heatmap_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "heatmap",
        help="per-class Grad-CAM heatmaps of each modality's encoder features, frozen vs tuned SAM (Fig. 11)",
        description="For one chip of a scene: per class, the Grad-CAM of the class score w.r.t. each "
        "modality's SAM neck features, with the tuner switched off (frozen SAM) and on (tuned). Writes a PNG.",
    )
    _scene_arguments(p)
    p.add_argument("--row", type=int, help="chip top row on the optical grid (default: centred)")
    p.add_argument("--col", type=int, help="chip left column on the optical grid (default: centred)")
    p.add_argument("--classes", help="comma-separated class ids or names (default: all)")
    p.set_defaults(func=run_heatmap, on_interrupt=_nothing_written)


def run_heatmap(args: argparse.Namespace) -> int:
    from mfpeft.engine.heatmap import heatmap_figure

    rasters, bands = _scene_rasters(args)
    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    path, _ = heatmap_figure(
        args.model,
        rasters,
        args.output,
        row=args.row,
        col=args.col,
        classes=classes,
        bands=bands or None,
        base_model=args.base_model,
        device=args.device,
        scaling=scaling_options(args),
    )
    print(f"wrote {path}")
    return 0


SUBCOMMANDS.extend([add_predict_parser, add_heatmap_parser])
