"""The training loop, top to bottom: data -> model -> optimizer loop with validation and checkpoints -> test -> save.

Everything that can fail on user input (data folders, modalities, SAM, resume path) is checked before the first
optimizer step. Runs on one CPU, one GPU or many processes through Accelerate.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.blocks import check_block_size, missing_class_warning, write_block_assignment
from ..data.checks import check_tile_inputs, count_labels
from ..data.datasets import RandomChipDataset, collate_chips
from ..data.geometry import ChipWindow
from ..data.labels import describe_labels
from ..data.scaling import resolve_input_scaling
from ..data.sources import get_source
from ..data.tile import Tile
from ..errors import Interrupted
from ..metrics.scores import scores_to_json, segmentation_scores
from ..models.adapter_io import push_adapter_to_hub
from .arguments import TrainingArguments
from .build import (
    RANDOM_PREFIX,
    base_model_source,
    build_model,
    is_generated_base_model,
    recorded_base_model,
    write_generated_base_model,
)
from .checkpoints import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_scheduler_state,
    save_checkpoint,
    scheduler_state,
)
from .evaluation import evaluate_tiles
from .reports import write_chip_previews, write_json
from .summary import sample_value_ranges, sliding_window_count, split_line, tile_sizes

BEST_DIR = "best"
NEW_RUN_SUFFIX = ".new-run"  # staging folder of an --overwrite run, swapped in at its end


@dataclass
class TrainState:
    """Loop state saved with every Accelerate checkpoint."""

    step: int = 0
    best_miou: float = -1.0
    best_step: int = -1
    best_scores: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "best_miou": self.best_miou, "best_step": self.best_step,
                "best_scores": self.best_scores, "history": self.history}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.best_miou = int(state["step"]), float(state["best_miou"])
        self.best_step, self.history = int(state["best_step"]), list(state["history"])
        self.best_scores = dict(state["best_scores"])


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]
    steps: int


def idle_cores_notice(device_type: str, num_processes: int) -> str | None:
    """One line when a lone CPU process uses fewer threads than it has cores, else None.

    Plain `accelerate launch` on a machine without a GPU or an accelerate config exports OMP_NUM_THREADS=1, which
    would otherwise leave the other cores idle without a word.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = torch.get_num_threads()
    if device_type != "cpu" or num_processes != 1 or threads >= cores:
        return None
    return (
        f"Using {threads} of {cores} CPU cores (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); for all of "
        f"them launch with `accelerate launch --cpu --num_processes 1 ...` or set OMP_NUM_THREADS={cores} (the demo "
        "trains ~1.5x faster on 2 cores than on 1)."
    )


def make_optimizer(parameters: list[torch.nn.Parameter], args: TrainingArguments) -> torch.optim.Optimizer:
    """The paper's SGD (one group, weight decay on everything, λ included), or AdamW with the same one group."""
    if args.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    return torch.optim.SGD(parameters, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)


def select_fraction(tiles: list[Tile], fraction: float) -> list[Tile]:
    """The first ceil(fraction · n) training tiles (at least one): the data-amount ablation."""
    return tiles[: max(1, math.ceil(fraction * len(tiles)))]


def resolve_modalities(requested: list[str] | None, tile: Tile, dataset: str) -> list[str]:
    available = list(tile.modalities)
    if requested is None:
        return available
    missing = [m for m in requested if m not in available]
    if missing:
        raise ValueError(f"modalities {missing} are not in data set {dataset!r}, which has {available}")
    return list(requested)


def scan_inputs(
    train_tiles: list[Tile], validation: list[Tile], test: list[Tile], modalities: list[str], classes: list[str],
    say: Any,
) -> None:
    """Read every input and label raster once before training: an empty modality, an unknown label colour or code
    fails now (not after the steps it takes a random chip to land on it); prints the training label histogram."""
    check_tile_inputs([*train_tiles, *validation, *test], modalities)
    for split in (validation, test):
        count_labels(split, len(classes))
    counts = count_labels(train_tiles, len(classes))
    if any(t.window is not None for t in train_tiles):  # --split-blocks: may have drawn a class out of train
        missing_class_warning(counts.pixels, classes)
    shares = ", ".join(f"{name} {100 * n / max(counts.total, 1):.1f} %" for name, n in zip(classes, counts.pixels))
    say(f"Training labels: {len(train_tiles)} tiles, {counts.total:,} px ({100 * counts.ignored_share:.1f} % ignored): "
        f"{shares}")  # fmt: skip


def say_data_summary(
    say: Any, args: TrainingArguments, train_set: RandomChipDataset, validation: list[Tile], test: list[Tile],
    modalities: list[str], chips_per_epoch: int,
) -> None:
    """Two lines before the first step: the splits (tiles, megapixels, chips or windows), then each modality's
    scaling and the scaled value range of a few training chips (a saturated band also gets a warning)."""
    parts = [split_line("train", train_set.tiles, train_set.sizes, f"{chips_per_epoch:,} random chips an epoch")]
    for name, tiles in (("validation", validation), ("test", test)):
        if tiles:
            sizes = tile_sizes(tiles)
            windows = sliding_window_count(sizes, args.chip_size, args.eval_stride)
            parts.append(split_line(name, tiles, sizes, f"{windows:,} windows at stride {args.eval_stride}"))
    say("Data: " + "; ".join(parts))
    samples = [train_set[i] for i in range(min(8, len(train_set)))]
    say("Scaling: " + "; ".join(sample_value_ranges(samples, modalities, train_set.scalings[0])))


def check_chip_size(chip_size: int, sizes: list[tuple[int, int]], names: list[str]) -> None:
    """Chips may overhang (be padded past) some tiles, but must fit inside at least one training tile."""
    fits = [min(h, w) for h, w in sizes]
    best = max(range(len(sizes)), key=lambda i: fits[i])
    if chip_size > fits[best]:
        h, w = sizes[best]
        raise ValueError(
            f"--chip-size {chip_size} is larger than every training tile (the largest, {names[best]!r}, is "
            f"{h} x {w}); use --chip-size {fits[best] // 32 * 32} or less"
        )


def run_folder(args: TrainingArguments) -> Path:
    """Where this run writes, decided before anything is created: ``--output-dir`` itself, or, to ``--overwrite`` a
    run already there, the staging sibling ``<output-dir>.new-run`` that `install_run` swaps in at the end.

    Raises:
        ValueError: ``--output-dir`` holds files and neither ``--resume-from-checkpoint`` nor ``--overwrite`` is set.
    """
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out}: is a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and args.overwrite:
        return out.with_name(out.name + NEW_RUN_SUFFIX)
    if held and not args.resume_from_checkpoint:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(
            f"--output-dir {out} already holds a run ({shown}); resume it with --resume-from-checkpoint latest, "
            "replace it with --overwrite, or choose another --output-dir"
        )
    return out


def install_run(work_dir: Path, output_dir: Path) -> None:
    """Swap a finished staging folder in for the run it replaces; the old run is deleted only after the swap."""
    if work_dir == output_dir:
        return
    aside = output_dir.with_name(output_dir.name + ".replaced-run")
    shutil.rmtree(aside, ignore_errors=True)
    if output_dir.exists():
        output_dir.rename(aside)
    work_dir.rename(output_dir)
    shutil.rmtree(aside, ignore_errors=True)


def interrupted_detail(work_dir: Path, args: TrainingArguments) -> str:
    """What an interrupted run leaves and how to go on, for the one line the command prints."""
    done = list_checkpoints(work_dir)
    if done:
        extra = " --overwrite" if work_dir != Path(args.output_dir) else ""
        return f"resume with the same command and --resume-from-checkpoint latest{extra} (newest: {done[-1]})"
    if work_dir != Path(args.output_dir):
        return f"no checkpoint yet; {args.output_dir} is unchanged"
    return f"no checkpoint yet; to start again, rerun with --overwrite (partial files in {work_dir})"


def train(args: TrainingArguments) -> TrainResult:
    """Train, validate, select, test and save; see the module docstring. An interrupted run (SIGTERM / SIGINT)
    leaves its complete checkpoints and says how to resume."""
    work_dir = run_folder(args)
    try:
        return _train(args, work_dir)
    except Interrupted as stop:
        stop.detail = stop.detail or interrupted_detail(work_dir, args)
        raise


def _train(args: TrainingArguments, work_dir: Path) -> TrainResult:
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
    )
    set_seed(args.seed)
    say = accelerator.print
    notice = idle_cores_notice(accelerator.device.type, accelerator.num_processes)
    if notice:
        say(notice)
    if work_dir != output_dir:
        say(f"--overwrite: training in {work_dir}; it replaces {output_dir} once the run is saved")

    # -- data: every check before any training step or file --
    check_block_size(args.source_options, args.chip_size)
    splits = get_source(args.dataset, args.data_dir, **args.source_options)
    if not splits["train"]:
        raise ValueError(f"data set {args.dataset!r} has no training tiles")
    train_tiles = select_fraction(splits["train"], args.train_fraction)
    modalities = resolve_modalities(args.modalities, train_tiles[0], args.dataset)
    chips_per_epoch = args.steps_per_epoch * args.batch_size * accelerator.num_processes
    # The raw -> input scaling, resolved once over the training tiles (stats: concrete per-band bounds): every
    # split is read with it, and the model records it, so that predict reads new rasters the same way.
    scaling = resolve_input_scaling(train_tiles, modalities, args.scaling)
    train_set = RandomChipDataset(
        train_tiles, modalities, chip_size=args.chip_size, length=chips_per_epoch, seed=args.seed, rot90=args.rot90,
        scaling=scaling,
    )  # fmt: skip
    check_chip_size(args.chip_size, train_set.sizes, [t.name for t in train_tiles])
    height, width = train_set.sizes[0]
    first = train_set.read(0, ChipWindow(0, 0, min(args.chip_size, height), min(args.chip_size, width)))
    channels = {name: int(first["pixel_values"][name].shape[0]) for name in modalities}
    encoding = train_tiles[0].label_encoding
    recorded_scaling = {name: s.to_dict() for name, s in train_set.input_scaling.items()}
    validation, test = splits["validation"], splits["test"]
    say(describe_labels(train_tiles))
    scan_inputs(train_tiles, validation, test, modalities, list(encoding.classes), say)
    say_data_summary(say, args, train_set, validation, test, modalities, chips_per_epoch)
    if not validation:
        say("No validation split: the last step is kept (a model is never selected on the test split).")
    resume_path = find_checkpoint(work_dir, args.resume_from_checkpoint, say) if args.resume_from_checkpoint else None

    # -- model: a real SAM is loaded before the run folder exists, so a bad --base-model creates nothing --
    generated = is_generated_base_model(args.base_model)
    accelerator.wait_for_everyone()  # every process has decided on the run folder before any creates it
    if generated:
        _create_run_folder(accelerator, args, work_dir)
    sam_source = base_model_source(args.base_model, work_dir)
    if generated:
        what = (
            "a RANDOM SAM encoder"
            if args.base_model.startswith(RANDOM_PREFIX)
            else "NOT SAM, a tiny SAM-shaped encoder pre-trained for seconds on the demo city's optical chips"
        )
        say(
            f"Base model {args.base_model}: {what}. Results check the pipeline only; pass a real SAM "
            "(--base-model facebook/sam-vit-base, a local folder or sam_vit_b_01ec64.pth) for real work."
        )
    score_classes = list(range(5)) if tuple(encoding.classes[:6]) == (
        "impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter") else None  # fmt: skip
    model = build_model(
        args, sam_source, modality_channels=channels, classes=encoding.classes, palette=encoding.palette,
        input_scaling=recorded_scaling, score_classes=score_classes,
    )  # fmt: skip
    if not generated:
        _create_run_folder(accelerator, args, work_dir)
    if accelerator.is_main_process:  # --split-blocks: which block went to which split (nothing written otherwise)
        write_block_assignment(splits, work_dir, args.source_options)
    mfnet: Any = model.get_base_model()
    # Record which encoder, not where it is on this machine: the folder stays loadable when moved or pushed.
    mfnet.config.sam_name_or_path = recorded_base_model(args.base_model)
    mfnet.config.vision_config._name_or_path = mfnet.config.sam_name_or_path
    # The whole label encoding (code map, classes, colours): evaluate and predict read raw labels without it.
    mfnet.config.label_encoding = train_tiles[0].recorded_encoding.to_dict()
    mfnet.config.validate_mfnet()
    trainable = [p for p in model.parameters() if p.requires_grad]
    say(f"{args.tuner}: {sum(p.numel() for p in trainable):,} trainable parameters; modalities {channels}")
    optimizer = make_optimizer(trainable, args)
    # Milestones are counted in optimizer steps of one process; stepped by hand so that Accelerate does not
    # advance the schedule once per process.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[m * args.steps_per_epoch for m in args.lr_milestones], gamma=args.lr_gamma
    )
    # The loader gets its own generator: creating an iterator draws a seed from it, and drawing from the global
    # RNG instead would shift dropout after a resume (a new iterator is made there) and break exact resumption.
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        collate_fn=collate_chips,
        num_workers=args.num_workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    # Model state plus up to two optimizer moments per trained value (AdamW), for the free-space check.
    checkpoint_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    checkpoint_bytes += 2 * sum(p.numel() * p.element_size() for p in trainable)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    if resume_path is not None:
        # Only JSON and weights_only files are read (mfpeft.engine.checkpoints); nothing is registered for
        # Accelerate's pickled custom states.
        saved = load_checkpoint(accelerator, resume_path)
        state.load_state_dict(saved["train_state"])
        load_scheduler_state(scheduler, saved["scheduler"])
        say(f"Resumed from {resume_path} at step {state.step}")
    if args.report_to:
        accelerator.init_trackers("mfpeft", config={k: str(v) for k, v in args.to_json().items()})

    def validate() -> dict[str, Any]:
        matrix = evaluate_tiles(
            accelerator.unwrap_model(model), validation, modalities=modalities, num_labels=len(encoding.classes),
            chip_size=args.chip_size, stride=args.eval_stride, batch_size=args.eval_batch_size, scaling=scaling,
            accelerator=accelerator,
        )  # fmt: skip
        return segmentation_scores(matrix.matrix, list(encoding.classes), score_classes)

    # -- the loop --
    total = args.total_steps
    eval_every = args.eval_every or args.steps_per_epoch
    progress = tqdm(total=total, initial=state.step, desc="train", disable=not accelerator.is_local_main_process)
    started, running = time.time(), float("nan")
    try:  # the bar ends its line before anything else is printed, an interruption's message too
        model.train()
        while state.step < total:
            epoch = state.step // args.steps_per_epoch
            train_set.set_epoch(epoch)
            skip = state.step - epoch * args.steps_per_epoch
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in batches:
                outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                accelerator.backward(outputs.loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                loss = outputs.loss.detach().float().item()
                running = loss if math.isnan(running) else 0.9 * running + 0.1 * loss
                progress.update(1)
                progress.set_postfix(loss=f"{running:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2g}")
                accelerator.log({"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]}, step=state.step)

                if validation and (state.step % eval_every == 0 or state.step == total):
                    model.eval()
                    scores = validate()
                    model.train()
                    entry = {"step": state.step, "loss": running, "val_mIoU": scores["mean_iou"],
                             "val_OA": scores["overall_accuracy"], "val_mF1": scores["mean_f1"]}  # fmt: skip
                    state.history.append(entry)
                    accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=state.step)
                    say(f"step {state.step}: loss {running:.4f}, validation mIoU {scores['mean_iou']:.4f}")
                    if scores["mean_iou"] > state.best_miou:
                        state.best_miou, state.best_step = scores["mean_iou"], state.step
                        state.best_scores = scores_to_json(scores)
                        if accelerator.is_main_process:
                            save_adapter(accelerator.unwrap_model(model), work_dir / BEST_DIR)
                if args.checkpoint_every and state.step % args.checkpoint_every == 0:
                    trainer_state = {"train_state": state.state_dict(), "scheduler": scheduler_state(scheduler)}
                    save_checkpoint(accelerator, work_dir, state.step, trainer_state, args.checkpoints_total_limit,
                                    size_hint=checkpoint_bytes)  # fmt: skip
                if state.step >= total:
                    break
    finally:
        progress.close()
    accelerator.wait_for_everyone()
    seconds = time.time() - started

    # -- select, test, save --
    unwrapped = accelerator.unwrap_model(model)
    best = work_dir / BEST_DIR
    if validation and (best / "adapter_model.safetensors").is_file():
        load_trained_weights(unwrapped, best)
    unwrapped.eval()
    metrics: dict[str, Any] = {"steps": state.step, "train_seconds": round(seconds, 1), "history": state.history,
                               "selected_step": state.best_step if validation else state.step}  # fmt: skip
    if validation:
        metrics["validation"] = state.best_scores  # scored when selected; the weights are those of that step
    if test:
        matrix = evaluate_tiles(
            unwrapped, test, modalities=modalities, num_labels=len(encoding.classes), chip_size=args.chip_size,
            stride=args.eval_stride, batch_size=args.eval_batch_size, scaling=scaling, accelerator=accelerator,
        )  # fmt: skip
        test_scores = segmentation_scores(matrix.matrix, list(encoding.classes), score_classes)
        metrics["test"] = scores_to_json(test_scores)
        metrics["test"]["confusion_matrix"] = matrix.matrix.tolist()
        plot_scores = test_scores
    if accelerator.is_main_process:
        mfnet.config.evaluation_results = summary(metrics)
        mfnet.config.training_hyperparameters = training_hyperparameters(args, state.step, accelerator.num_processes)
        save_adapter(unwrapped, work_dir)
        write_json(work_dir / "metrics.json", metrics)
        if test:
            write_plots(plot_scores, matrix.matrix, list(encoding.classes), work_dir)
        if validation:
            preview_set = RandomChipDataset(validation, modalities, chip_size=args.chip_size, length=4, seed=1,
                                            augment=False, scaling=scaling)  # fmt: skip
            write_chip_previews(
                unwrapped, [preview_set[i] for i in range(4)], encoding.palette, work_dir / "preview.png",
                device=accelerator.device,
            )  # fmt: skip
        install_run(work_dir, output_dir)
        if args.push_to_hub:
            push_adapter_to_hub(unwrapped, args.push_to_hub, base_model_dir=output_dir / "base-model")
            say(f"Pushed the adapter to {args.push_to_hub}")
        say(f"Saved the adapter and reports to {output_dir} ({state.step} steps in {seconds:.0f} s)")
        say("Scores: " + scores_line(metrics))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output_dir=output_dir, metrics=metrics, steps=state.step)


def _create_run_folder(accelerator: Accelerator, args: TrainingArguments, work_dir: Path) -> None:
    """Create the run folder (a stale staging folder of an earlier --overwrite is started afresh) and, for a
    generated encoder, save it there as ``base-model/``."""
    if accelerator.is_main_process:
        if work_dir != Path(args.output_dir) and not args.resume_from_checkpoint:
            shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        data_seed = int(args.source_options.get("seed", 0)) if args.dataset == "demo" else 0
        write_generated_base_model(args.base_model, args.chip_size, work_dir, args.seed, data_seed=data_seed)
    accelerator.wait_for_everyone()


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline figures for the model card."""
    out: dict[str, float] = {}
    for split in ("validation", "test"):
        scores = metrics.get(split)
        if scores:
            for key, name in (("mean_iou", "mIoU"), ("mean_f1", "mF1"), ("overall_accuracy", "OA")):
                if scores.get(key) is not None:
                    out[f"{split}_{name}"] = float(scores[key])
    return out


def scores_line(metrics: dict[str, Any]) -> str:
    """The selected step's validation scores and the test scores, in one line."""
    parts = []
    for split in ("validation", "test"):
        scores = metrics.get(split)
        if scores:
            step = f" (step {metrics['selected_step']})" if split == "validation" else ""
            parts.append(f"{split}{step} mIoU {scores['mean_iou']:.4f}, mF1 {scores['mean_f1']:.4f}, "
                         f"OA {scores['overall_accuracy']:.4f}")  # fmt: skip
    return "; ".join(parts) or "no validation or test split to score"


def training_hyperparameters(args: TrainingArguments, steps: int, num_processes: int) -> dict[str, Any]:
    """What the model card reports about a run: enough to train the same weights again."""
    optimizer = f"{args.optimizer} (momentum {args.momentum})" if args.optimizer == "sgd" else args.optimizer
    schedule = (
        f"x{args.lr_gamma:g} at epochs {', '.join(map(str, args.lr_milestones))} of {args.epochs}"
        if args.lr_milestones else "constant"
    )  # fmt: skip
    return {
        "dataset": args.dataset if args.data_dir is None else f"{args.dataset} ({Path(args.data_dir).name})",
        "base_model": recorded_base_model(args.base_model),
        "optimizer": optimizer,
        "learning_rate": f"{args.learning_rate:g}",
        "weight_decay": f"{args.weight_decay:g}",
        "lr_schedule": schedule,
        "steps": steps,
        "batch_size": f"{args.batch_size} per process x {num_processes}",
        "chip_size": args.chip_size,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
    }


def save_adapter(peft_model: Any, folder: Path) -> None:
    """Write the adapter folder through a temporary sibling so a reader never sees half of it, and a failure (full
    disk, signal) leaves neither the sibling nor a half-replaced folder."""
    tmp = folder.with_name(folder.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        peft_model.save_pretrained(str(tmp))
        folder.mkdir(parents=True, exist_ok=True)
        for path in tmp.iterdir():
            path.replace(folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_trained_weights(peft_model: Any, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    set_peft_model_state_dict(peft_model, state)


def write_plots(scores: dict[str, Any], matrix: Any, class_names: list[str], output_dir: Path) -> None:
    from ..metrics.plots import plot_confusion_matrix, plot_per_class

    plot_confusion_matrix(matrix, class_names, output_dir / "confusion_matrix.png")
    plot_per_class(scores, output_dir / "per_class.png")
