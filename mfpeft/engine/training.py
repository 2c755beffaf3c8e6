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

from ..data.datasets import RandomChipDataset, collate_chips
from ..data.geometry import ChipWindow
from ..data.sources import get_source
from ..data.tile import Tile
from ..metrics.scores import scores_to_json, segmentation_scores
from ..models.adapter_io import push_adapter_to_hub
from .arguments import TrainingArguments
from .evaluation import evaluate_tiles
from .factory import (
    RANDOM_PREFIX,
    base_model_source,
    build_model,
    is_generated_base_model,
    write_generated_base_model,
)
from .reports import write_chip_previews, write_json

BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoints"


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


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """The checkpoint folder `resume` names ("latest" = newest under ``output_dir/checkpoints``)."""
    if resume == "latest":
        folder = output_dir / CHECKPOINT_DIR
        candidates = sorted(
            (p for p in folder.glob("checkpoint_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[-1])
        )
        if not candidates:
            raise FileNotFoundError(f"--resume-from-checkpoint latest: no checkpoint in {folder}")
        return candidates[-1]
    path = Path(resume)
    if not path.is_dir() or (not any(path.glob("*.safetensors")) and not any(path.glob("*.bin"))):
        raise FileNotFoundError(f"--resume-from-checkpoint {resume}: not a checkpoint folder")
    return path


def train(args: TrainingArguments) -> TrainResult:
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            logging_dir=str(output_dir / "logs"),
            automatic_checkpoint_naming=True,
            total_limit=args.checkpoints_total_limit,
        ),
    )
    set_seed(args.seed)
    say = accelerator.print
    notice = idle_cores_notice(accelerator.device.type, accelerator.num_processes)
    if notice:
        say(notice)

    # -- data: every check before any training step --
    splits = get_source(args.dataset, args.data_dir, **args.source_options)
    if not splits["train"]:
        raise ValueError(f"data set {args.dataset!r} has no training tiles")
    train_tiles = select_fraction(splits["train"], args.train_fraction)
    modalities = resolve_modalities(args.modalities, train_tiles[0], args.dataset)
    chips_per_epoch = args.steps_per_epoch * args.batch_size * accelerator.num_processes
    train_set = RandomChipDataset(
        train_tiles, modalities, chip_size=args.chip_size, length=chips_per_epoch, seed=args.seed, rot90=args.rot90
    )
    first = train_set.read(0, ChipWindow(0, 0, args.chip_size, args.chip_size))
    channels = {name: int(first["pixel_values"][name].shape[0]) for name in modalities}
    encoding = train_tiles[0].label_encoding
    scaling = {name: s.to_dict() for name, s in train_set.scalings[0].items()}
    validation, test = splits["validation"], splits["test"]
    if not validation:
        say("No validation split: the last step is kept (a model is never selected on the test split).")
    resume_path = find_checkpoint(output_dir, args.resume_from_checkpoint) if args.resume_from_checkpoint else None

    # -- model --
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        data_seed = int(args.source_options.get("seed", 0)) if args.dataset == "demo" else 0
        write_generated_base_model(args.base_model, args.chip_size, output_dir, args.seed, data_seed=data_seed)
    accelerator.wait_for_everyone()
    sam_source = base_model_source(args.base_model, output_dir)
    if is_generated_base_model(args.base_model):
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
        input_scaling=scaling, score_classes=score_classes,
    )  # fmt: skip
    mfnet: Any = model.get_base_model()
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
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if resume_path is not None:
        accelerator.load_state(str(resume_path))
        # Continue the automatic checkpoint numbering after the newest existing state.
        existing = [int(p.name.split("_")[-1]) for p in (output_dir / CHECKPOINT_DIR).glob("checkpoint_*")]
        accelerator.project_configuration.iteration = max(existing, default=-1) + 1
        say(f"Resumed from {resume_path} at step {state.step}")
    if args.report_to:
        accelerator.init_trackers("mfpeft", config={k: str(v) for k, v in args.to_json().items()})

    def validate() -> dict[str, Any]:
        matrix = evaluate_tiles(
            accelerator.unwrap_model(model), validation, modalities=modalities, num_labels=len(encoding.classes),
            chip_size=args.chip_size, stride=args.eval_stride, batch_size=args.eval_batch_size,
            accelerator=accelerator,
        )  # fmt: skip
        return segmentation_scores(matrix.matrix, list(encoding.classes), score_classes)

    # -- the loop --
    total = args.total_steps
    eval_every = args.eval_every or args.steps_per_epoch
    progress = tqdm(total=total, initial=state.step, desc="train", disable=not accelerator.is_local_main_process)
    started, running = time.time(), float("nan")
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
                        save_adapter(accelerator.unwrap_model(model), output_dir / BEST_DIR)
            if args.checkpoint_every and state.step % args.checkpoint_every == 0:
                accelerator.wait_for_everyone()
                accelerator.save_state()
            if state.step >= total:
                break
    progress.close()
    accelerator.wait_for_everyone()
    seconds = time.time() - started

    # -- select, test, save --
    unwrapped = accelerator.unwrap_model(model)
    best = output_dir / BEST_DIR
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
            stride=args.eval_stride, batch_size=args.eval_batch_size, accelerator=accelerator,
        )  # fmt: skip
        test_scores = segmentation_scores(matrix.matrix, list(encoding.classes), score_classes)
        metrics["test"] = scores_to_json(test_scores)
        metrics["test"]["confusion_matrix"] = matrix.matrix.tolist()
        plot_scores = test_scores
    if accelerator.is_main_process:
        mfnet.config.evaluation_results = summary(metrics)
        mfnet.config.training_hyperparameters = training_hyperparameters(args, state.step, accelerator.num_processes)
        save_adapter(unwrapped, output_dir)
        write_json(output_dir / "metrics.json", metrics)
        if test:
            write_plots(plot_scores, matrix.matrix, list(encoding.classes), output_dir)
        if validation:
            preview_set = RandomChipDataset(validation, modalities, chip_size=args.chip_size, length=4, seed=1,
                                            augment=False)  # fmt: skip
            write_chip_previews(
                unwrapped, [preview_set[i] for i in range(4)], encoding.palette, output_dir / "preview.png",
                device=accelerator.device,
            )  # fmt: skip
        if args.push_to_hub:
            push_adapter_to_hub(unwrapped, args.push_to_hub)
            say(f"Pushed the adapter to {args.push_to_hub}")
        say(f"Saved the adapter and reports to {output_dir} ({state.step} steps in {seconds:.0f} s)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output_dir=output_dir, metrics=metrics, steps=state.step)


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


def training_hyperparameters(args: TrainingArguments, steps: int, num_processes: int) -> dict[str, Any]:
    """What the model card reports about a run: enough to train the same weights again."""
    optimizer = f"{args.optimizer} (momentum {args.momentum})" if args.optimizer == "sgd" else args.optimizer
    schedule = (
        f"x{args.lr_gamma:g} at epochs {', '.join(map(str, args.lr_milestones))} of {args.epochs}"
        if args.lr_milestones else "constant"
    )  # fmt: skip
    return {
        "dataset": args.dataset if args.data_dir is None else f"{args.dataset} ({Path(args.data_dir).name})",
        "base_model": args.base_model,
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
    """Write the adapter folder through a temporary sibling so a reader never sees half of it."""
    tmp = folder.with_name(folder.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    folder.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        path.replace(folder / path.name)
    tmp.rmdir()


def load_trained_weights(peft_model: Any, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(folder / "adapter_model.safetensors"))
    set_peft_model_state_dict(peft_model, state)


def write_plots(scores: dict[str, Any], matrix: Any, class_names: list[str], output_dir: Path) -> None:
    from ..metrics.plots import plot_confusion_matrix, plot_per_class

    plot_confusion_matrix(matrix, class_names, output_dir / "confusion_matrix.png")
    plot_per_class(scores, output_dir / "per_class.png")
