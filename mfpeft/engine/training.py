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

from mfpeft.common.runtime import prepare_process

from ..common.files import atomic_path, install_folder, write_json
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
from .preview import write_chip_previews
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
        return {
            "step": self.step,
            "best_miou": self.best_miou,
            "best_step": self.best_step,
            "best_scores": self.best_scores,
            "history": self.history,
        }

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
    train_tiles: list[Tile],
    validation: list[Tile],
    test: list[Tile],
    modalities: list[str],
    classes: list[str],
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
    say(
        f"Training labels: {len(train_tiles)} tiles, {counts.total:,} px ({100 * counts.ignored_share:.1f} % ignored): "
        f"{shares}"
    )


def say_data_summary(
    say: Any,
    args: TrainingArguments,
    train_set: RandomChipDataset,
    validation: list[Tile],
    test: list[Tile],
    modalities: list[str],
    chips_per_epoch: int,
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
    if work_dir != output_dir:
        install_folder(work_dir, output_dir)


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
    prepare_process()  # first: torch's worker threads inherit the flush (common/runtime.py)
    work_dir = run_folder(args)
    try:
        return _train(args, work_dir)
    except Interrupted as stop:
        stop.detail = stop.detail or interrupted_detail(work_dir, args)
        raise


def _train(args: TrainingArguments, work_dir: Path) -> TrainResult:
    """The run top to bottom. The order is the order of random draws and module construction after the seed (a
    resumed run repeats it exactly): data, model, optimizer and loader, loop, then selection, test and save."""
    accelerator = start_accelerator(args, work_dir)
    data = load_training_data(args, accelerator)
    resume_path = (
        find_checkpoint(work_dir, args.resume_from_checkpoint, accelerator.print)
        if args.resume_from_checkpoint
        else None
    )
    model = build_run_model(args, accelerator, work_dir, data)
    run = prepare_run(args, accelerator, work_dir, data, model, resume_path)
    seconds = train_loop(run)
    unwrapped, metrics, tested = select_and_test(run, seconds)
    save_run(run, unwrapped, metrics, tested, seconds)
    return TrainResult(output_dir=Path(args.output_dir), metrics=metrics, steps=run.state.step)


# -- build: accelerator, data, model, optimizer --


def start_accelerator(args: TrainingArguments, work_dir: Path) -> Accelerator:
    """Accelerate's state for this run, then the seed (before anything random is drawn or built), then the notices."""
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
    )
    set_seed(args.seed)
    notice = idle_cores_notice(accelerator.device.type, accelerator.num_processes)
    if notice:
        accelerator.print(notice)
    if work_dir != Path(args.output_dir):
        accelerator.print(f"--overwrite: training in {work_dir}; it replaces {args.output_dir} once the run is saved")
    return accelerator


@dataclass
class TrainingData:
    """The splits of a run and how each is read: what the loop, the scores and the saved model need from the data."""

    splits: dict[str, list[Tile]]
    train_tiles: list[Tile]  # the selected --train-fraction
    train_set: RandomChipDataset
    modalities: list[str]
    scaling: dict[str, Any]  # raw -> input, resolved once over the training tiles
    channels: dict[str, int]  # bands per modality, in order

    @property
    def validation(self) -> list[Tile]:
        return self.splits["validation"]

    @property
    def test(self) -> list[Tile]:
        return self.splits["test"]

    @property
    def classes(self) -> list[str]:
        return list(self.train_tiles[0].label_encoding.classes)

    @property
    def palette(self) -> Any:
        return self.train_tiles[0].label_encoding.palette

    @property
    def score_classes(self) -> list[int] | None:
        """The ISPRS protocol scores the first five classes (clutter is left out); every other data set all."""
        isprs = ("impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter")
        return list(range(5)) if tuple(self.classes[:6]) == isprs else None


def load_training_data(args: TrainingArguments, accelerator: Accelerator) -> TrainingData:
    """Every data check before any training step or file: the source, modalities, scaling, chip size and every
    raster of every split (`scan_inputs`); then the summary lines."""
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
        train_tiles,
        modalities,
        chip_size=args.chip_size,
        length=chips_per_epoch,
        seed=args.seed,
        rot90=args.rot90,
        scaling=scaling,
    )
    check_chip_size(args.chip_size, train_set.sizes, [t.name for t in train_tiles])
    data = TrainingData(splits, train_tiles, train_set, modalities, scaling, modality_channels(train_set, args))
    say = accelerator.print
    say(describe_labels(train_tiles))
    scan_inputs(train_tiles, data.validation, data.test, modalities, data.classes, say)
    say_data_summary(say, args, train_set, data.validation, data.test, modalities, chips_per_epoch)
    if not data.validation:
        say("No validation split: the last step is kept (a model is never selected on the test split).")
    return data


def modality_channels(train_set: RandomChipDataset, args: TrainingArguments) -> dict[str, int]:
    """The number of bands of each modality, read from the first training tile's top-left chip."""
    height, width = train_set.sizes[0]
    first = train_set.read(0, ChipWindow(0, 0, min(args.chip_size, height), min(args.chip_size, width)))
    return {name: int(first["pixel_values"][name].shape[0]) for name in train_set.modalities}


def build_run_model(args: TrainingArguments, accelerator: Accelerator, work_dir: Path, data: TrainingData) -> Any:
    """MFNet with its tuner (`build_model`). A real encoder is loaded before the run folder exists, so a bad
    --base-model creates nothing; a generated encoder is written into the run folder first and loaded from there."""
    generated = is_generated_base_model(args.base_model)
    accelerator.wait_for_everyone()  # every process has decided on the run folder before any creates it
    if generated:
        _create_run_folder(accelerator, args, work_dir)
        accelerator.print(generated_base_model_notice(args.base_model))
    recorded_scaling = {name: s.to_dict() for name, s in data.train_set.input_scaling.items()}
    model = build_model(
        args,
        base_model_source(args.base_model, work_dir),
        modality_channels=data.channels,
        classes=data.classes,
        palette=data.palette,
        input_scaling=recorded_scaling,
        score_classes=data.score_classes,
    )
    if not generated:
        _create_run_folder(accelerator, args, work_dir)
    if accelerator.is_main_process:  # --split-blocks: which block went to which split (nothing written otherwise)
        write_block_assignment(data.splits, work_dir, args.source_options)
    config: Any = model.get_base_model().config
    # Record which encoder, not where it is on this machine: the folder stays loadable when moved or pushed.
    config.encoder_name_or_path = recorded_base_model(args.base_model)
    config.vision_config._name_or_path = config.encoder_name_or_path
    # The whole label encoding (code map, classes, colours): evaluate and predict read raw labels without it.
    config.label_encoding = data.train_tiles[0].recorded_encoding.to_dict()
    config.validate_mfnet()
    return model


def generated_base_model_notice(base_model: str) -> str:
    """What a generated encoder is, and that its scores check the pipeline only."""
    what = (
        "a RANDOM encoder"
        if base_model.startswith(RANDOM_PREFIX)
        else "NOT SAM, a tiny SAM-shaped encoder pre-trained for seconds on the demo city's optical chips"
    )
    return (
        f"Base model {base_model}: {what}. Results check the pipeline only; pass a real encoder "
        "(--base-model facebook/sam-vit-base, a local folder or sam_vit_b_01ec64.pth) for real work."
    )


@dataclass
class TrainingRun:
    """Everything the loop and the final save work on, prepared by Accelerate (`prepare_run`)."""

    args: TrainingArguments
    accelerator: Accelerator
    work_dir: Path  # --output-dir, or its staging sibling for --overwrite
    data: TrainingData
    model: Any  # the prepared PeftModel (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    loader: DataLoader[Any]
    checkpoint_bytes: int  # the free-space check before each checkpoint
    state: TrainState = field(default_factory=TrainState)


def prepare_run(
    args: TrainingArguments,
    accelerator: Accelerator,
    work_dir: Path,
    data: TrainingData,
    model: Any,
    resume_path: Path | None,
) -> TrainingRun:
    """The optimizer over the trainable parameters, the LR schedule and the loader, prepared by Accelerate; the
    saved state of ``resume_path`` loaded into them; the trackers started."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    accelerator.print(
        f"{args.tuner}: {sum(p.numel() for p in trainable):,} trainable parameters; modalities {data.channels}"
    )
    optimizer = make_optimizer(trainable, args)
    # Milestones are counted in optimizer steps of one process; stepped by hand so that Accelerate does not
    # advance the schedule once per process.
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[m * args.steps_per_epoch for m in args.lr_milestones], gamma=args.lr_gamma
    )
    # The loader gets its own generator: creating an iterator draws a seed from it, and drawing from the global
    # RNG instead would shift dropout after a resume (a new iterator is made there) and break exact resumption.
    loader = DataLoader(
        data.train_set,
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
    run = TrainingRun(args, accelerator, work_dir, data, model, optimizer, scheduler, loader, checkpoint_bytes)
    if resume_path is not None:
        # Only JSON and weights_only files are read (mfpeft.engine.checkpoints); nothing is registered for
        # Accelerate's pickled custom states.
        saved = load_checkpoint(accelerator, resume_path)
        run.state.load_state_dict(saved["train_state"])
        load_scheduler_state(scheduler, saved["scheduler"])
        accelerator.print(f"Resumed from {resume_path} at step {run.state.step}")
    if args.report_to:
        accelerator.init_trackers("mfpeft", config={k: str(v) for k, v in args.to_json().items()})
    return run


# -- the loop --


def train_loop(run: TrainingRun) -> float:
    """Optimizer steps from ``run.state.step`` to ``args.total_steps``, validating every ``eval_every`` steps (and
    at the last) and checkpointing every ``checkpoint_every``; returns the seconds it took."""
    args, accelerator, state = run.args, run.accelerator, run.state
    model, optimizer, scheduler = run.model, run.optimizer, run.scheduler
    total, eval_every = args.total_steps, args.eval_every or args.steps_per_epoch
    progress = tqdm(total=total, initial=state.step, desc="train", disable=not accelerator.is_local_main_process)
    started, running = time.time(), float("nan")
    try:  # the bar ends its line before anything else is printed, an interruption's message too
        model.train()
        while state.step < total:
            for batch in epoch_batches(run):
                outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                accelerator.backward(outputs.loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                loss = outputs.loss.detach().float().item()
                running = loss if math.isnan(running) else 0.9 * running + 0.1 * loss
                lr = scheduler.get_last_lr()[0]
                progress.update(1)
                progress.set_postfix(loss=f"{running:.3f}", lr=f"{lr:.2g}")
                accelerator.log({"train/loss": loss, "train/lr": lr}, step=state.step)
                if run.data.validation and (state.step % eval_every == 0 or state.step == total):
                    validate_and_select(run, running)
                if args.checkpoint_every and state.step % args.checkpoint_every == 0:
                    save_training_state(run)
                if state.step >= total:
                    break
    finally:
        progress.close()
    accelerator.wait_for_everyone()
    return time.time() - started


def epoch_batches(run: TrainingRun) -> Any:
    """The batches left in the current epoch: those a resumed run already took are skipped, not drawn again."""
    epoch = run.state.step // run.args.steps_per_epoch
    run.data.train_set.set_epoch(epoch)
    skip = run.state.step - epoch * run.args.steps_per_epoch
    return run.accelerator.skip_first_batches(run.loader, skip) if skip else run.loader


def validate_and_select(run: TrainingRun, running_loss: float) -> None:
    """Score the validation split, log it, and keep the adapter in ``best/`` when its mIoU is the best so far."""
    state, accelerator = run.state, run.accelerator
    run.model.eval()
    scores, _ = score_split(run, run.data.validation)
    run.model.train()
    entry = {
        "step": state.step,
        "loss": running_loss,
        "val_mIoU": scores["mean_iou"],
        "val_OA": scores["overall_accuracy"],
        "val_mF1": scores["mean_f1"],
    }
    state.history.append(entry)
    accelerator.log({k: v for k, v in entry.items() if k != "step"}, step=state.step)
    accelerator.print(f"step {state.step}: loss {running_loss:.4f}, validation mIoU {scores['mean_iou']:.4f}")
    if scores["mean_iou"] > state.best_miou:
        state.best_miou, state.best_step = scores["mean_iou"], state.step
        state.best_scores = scores_to_json(scores)
        if accelerator.is_main_process:
            save_adapter(accelerator.unwrap_model(run.model), run.work_dir / BEST_DIR)


def score_split(run: TrainingRun, tiles: list[Tile]) -> tuple[dict[str, Any], Any]:
    """Sliding-window scores of the model on ``tiles`` (all processes share the windows) and the confusion matrix
    ((K, K) numpy, rows reference)."""
    data, args = run.data, run.args
    matrix = evaluate_tiles(
        run.accelerator.unwrap_model(run.model),
        tiles,
        modalities=data.modalities,
        num_labels=len(data.classes),
        chip_size=args.chip_size,
        stride=args.eval_stride,
        batch_size=args.eval_batch_size,
        scaling=data.scaling,
        accelerator=run.accelerator,
    )
    return segmentation_scores(matrix.matrix, data.classes, data.score_classes), matrix.matrix


def save_training_state(run: TrainingRun) -> None:
    """A resumable checkpoint of the step just taken (every process writes its part)."""
    trainer_state = {"train_state": run.state.state_dict(), "scheduler": scheduler_state(run.scheduler)}
    save_checkpoint(
        run.accelerator,
        run.work_dir,
        run.state.step,
        trainer_state,
        run.args.checkpoints_total_limit,
        size_hint=run.checkpoint_bytes,
    )


# -- select, test, save --


def select_and_test(run: TrainingRun, seconds: float) -> tuple[Any, dict[str, Any], tuple[dict[str, Any], Any] | None]:
    """Load the selected step's adapter (the best validation mIoU; without validation the last step), score the
    test split with it, and gather the metrics. Returns the unwrapped model, the metrics and the test scores with
    their confusion matrix (None without a test split)."""
    state, data = run.state, run.data
    unwrapped = run.accelerator.unwrap_model(run.model)
    best = run.work_dir / BEST_DIR
    if data.validation and (best / "adapter_model.safetensors").is_file():
        load_trained_weights(unwrapped, best)
    unwrapped.eval()
    metrics: dict[str, Any] = {
        "steps": state.step,
        "train_seconds": round(seconds, 1),
        "history": state.history,
        "selected_step": state.best_step if data.validation else state.step,
    }
    if data.validation:
        metrics["validation"] = state.best_scores  # scored when selected; the weights are those of that step
    if not data.test:
        return unwrapped, metrics, None
    scores, matrix = score_split(run, data.test)
    metrics["test"] = scores_to_json(scores)
    metrics["test"]["confusion_matrix"] = matrix.tolist()
    return unwrapped, metrics, (scores, matrix)


def save_run(
    run: TrainingRun,
    unwrapped: Any,
    metrics: dict[str, Any],
    tested: tuple[dict[str, Any], Any] | None,
    seconds: float,
) -> None:
    """On the main process: the adapter with its model card, metrics.json, plots and previews, the run swapped into
    --output-dir (for --overwrite), the push; then every process ends the run."""
    args, accelerator, work_dir, data = run.args, run.accelerator, run.work_dir, run.data
    output_dir, say = Path(args.output_dir), accelerator.print
    if accelerator.is_main_process:
        config = unwrapped.get_base_model().config
        config.evaluation_results = summary(metrics)
        config.training_hyperparameters = training_hyperparameters(args, run.state.step, accelerator.num_processes)
        save_adapter(unwrapped, work_dir)
        write_json(work_dir / "metrics.json", metrics)
        if tested is not None:
            write_plots(tested[0], tested[1], data.classes, work_dir)
        if data.validation:
            write_validation_previews(run, unwrapped)
        install_run(work_dir, output_dir)
        if args.push_to_hub:
            push_adapter_to_hub(unwrapped, args.push_to_hub, base_model_dir=output_dir / "base-model")
            say(f"Pushed the adapter to {args.push_to_hub}")
        say(f"Saved the adapter and reports to {output_dir} ({run.state.step} steps in {seconds:.0f} s)")
        say("Scores: " + scores_line(metrics))
    accelerator.wait_for_everyone()
    accelerator.end_training()


def write_validation_previews(run: TrainingRun, unwrapped: Any) -> None:
    """``preview.png``: four fixed validation chips (seed 1, no augmentation) with labels and prediction."""
    data, args = run.data, run.args
    preview_set = RandomChipDataset(
        data.validation,
        data.modalities,
        chip_size=args.chip_size,
        length=4,
        seed=1,
        augment=False,
        scaling=data.scaling,
    )
    write_chip_previews(
        unwrapped,
        [preview_set[i] for i in range(4)],
        data.palette,
        run.work_dir / "preview.png",
        device=run.accelerator.device,
    )


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
            parts.append(
                f"{split}{step} mIoU {scores['mean_iou']:.4f}, mF1 {scores['mean_f1']:.4f}, "
                f"OA {scores['overall_accuracy']:.4f}"
            )
    return "; ".join(parts) or "no validation or test split to score"


def training_hyperparameters(args: TrainingArguments, steps: int, num_processes: int) -> dict[str, Any]:
    """What the model card reports about a run: enough to train the same weights again."""
    optimizer = f"{args.optimizer} (momentum {args.momentum})" if args.optimizer == "sgd" else args.optimizer
    schedule = (
        f"x{args.lr_gamma:g} at epochs {', '.join(map(str, args.lr_milestones))} of {args.epochs}"
        if args.lr_milestones
        else "constant"
    )
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
    """Write the adapter files into ``folder`` through a temporary sibling (`mfpeft.common.files`): a reader never
    sees half of them, and a failure (full disk, signal) leaves neither the sibling nor a half-replaced file."""
    with atomic_path(folder, folder=True, merge=True) as staged:
        peft_model.save_pretrained(str(staged))


def load_trained_weights(peft_model: Any, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    set_peft_model_state_dict(peft_model, state)


def write_plots(scores: dict[str, Any], matrix: Any, class_names: list[str], output_dir: Path) -> None:
    from ..metrics.plots import plot_confusion_matrix, plot_per_class

    plot_confusion_matrix(matrix, class_names, output_dir / "confusion_matrix.png")
    plot_per_class(scores, output_dir / "per_class.png")
