"""`TrainingArguments`: every option of a training run, with the paper and demo presets, validated up front."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

TUNERS = ("mmlora", "mmadapter", "lora", "adapter", "none")
ABLATIONS = ("authors", "full")
PRESETS = ("paper", "demo")
MIXED_PRECISION = ("no", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")

# The paper's protocol (Sec. IV-B and the authors' code): SGD, LR x0.1 at epochs 25/35/45 of 50, 1000 batches an
# epoch, batch 10, random 256 chips with joint flips, cross-entropy ignoring 255, sliding-window test at stride 32.
PAPER_PRESET: dict[str, Any] = dict(
    optimizer="sgd",
    learning_rate=0.01,
    momentum=0.9,
    weight_decay=5e-4,
    epochs=50,
    steps_per_epoch=1000,
    lr_milestones=[25, 35, 45],
    lr_gamma=0.1,
    batch_size=10,
    chip_size=256,
    eval_stride=32,
)

# The built-in demo city with a tiny SAM-shaped encoder pre-trained on the demo's optical training chips
# (`mfpeft.engine.demo_encoder`: built once, ~30 s, then cached), 128-pixel chips: finishes in a few minutes on a
# 2-core CPU. 600 steps, because trees (height-only, small) are not learned at all within 200. AdamW, because 600
# SGD steps barely move zero-initialised LoRA weights (||B·A|| ends at a median 0.3 % of ||W0||, AdamW: 18 %), so an
# SGD-tuned demo encoder is still the frozen one; the paper's SGD has 50,000 steps for that.
DEMO_PRESET: dict[str, Any] = dict(
    base_model="demo:tiny",
    dataset="demo",
    optimizer="adamw",
    learning_rate=1e-3,
    weight_decay=0.01,
    epochs=1,
    steps_per_epoch=600,
    lr_milestones=[],
    batch_size=8,
    chip_size=128,
    eval_stride=64,
    eval_every=150,
    checkpoint_every=150,
    output_dir="outputs/demo",
)


def check_generated_base_model(base_model: str) -> None:
    """Raise ValueError for ``random:SIZE`` / ``demo:SIZE`` names mfpeft cannot generate (before any file is made)."""
    from ..models.encoders.registry import split_random_spec
    from .demo_encoder import DEMO_ENCODER_PREFIX

    if base_model.startswith("random:"):
        try:
            split_random_spec(base_model)
        except ValueError as error:
            raise ValueError(f"base_model={base_model!r}: {error}") from None
    if base_model.startswith(DEMO_ENCODER_PREFIX) and base_model != DEMO_ENCODER_PREFIX + "tiny":
        # Pre-training a full-size encoder on CPU would take hours; the demo encoder is a pipeline check only.
        raise ValueError(f"base_model={base_model!r}: the demo encoder comes in one size, demo:tiny")


@dataclass
class TrainingArguments:
    """Options of `mfpeft.engine.training.train` and ``recipes/train.py`` (flags use dashes: ``--max-steps``).

    A ``preset`` fills every field the user did not set explicitly (see `apply_preset`).
    """

    tuner: str = field(default="mmlora", metadata={"help": f"one of {TUNERS}"})
    rank: int = field(default=4, metadata={"help": "LoRA rank (mmlora, lora)"})
    base_model: str = field(
        default="facebook/sam-vit-base",
        metadata={
            "help": "the frozen encoder: Hub id or local folder of any supported family (SAM, SAM-HQ, SAM2.1, DINOv2, "
            "DINOv2 with registers, DINOv3), SAM's Meta .pth file, random:<family>-<size> (e.g. random:vit-b, "
            "random:dinov3-small, random:sam2-tiny), or demo:tiny"
        },
    )
    input_normalisation: str = field(
        default="none",
        metadata={
            "help": "none (MFNet's default: the scaled input as it is) or encoder (the encoder's own RGB mean/std, "
            "e.g. ImageNet's, or DINOv3 SAT-493M's for its satellite weights, on every 3-band modality; recorded "
            "in config.json)"
        },
    )
    ablation: str = field(
        default="authors",
        metadata={
            "help": "the Table IV ablation tuners (lora, adapter): authors (MLP LoRA scaled by alpha/r; attention "
            "adapters only, as the authors ran them) or full (unscaled MLP LoRA; adapters beside the MLP too)"
        },
    )
    rel_pos: str = field(default="pretrained", metadata={"help": "pretrained or zero (the published setting)"})
    dataset: str = field(default="demo", metadata={"help": "vaihingen, potsdam, mmhunan, folder, hf or demo"})
    data_dir: str | None = field(default=None, metadata={"help": "the data set's folder"})
    modalities: list[str] | None = field(
        default=None, metadata={"help": "modalities to use, in order (default: all the data set has)"}
    )
    no_dfm: bool = field(default=False, metadata={"help": "Table V ablation: no Deep Fusion Module"})
    train_fraction: float = field(default=1.0, metadata={"help": "fraction of the training tiles to use"})
    preset: str | None = field(default=None, metadata={"help": f"one of {PRESETS}"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    epochs: int = field(default=50, metadata={"help": "epochs"})
    steps_per_epoch: int = field(default=1000, metadata={"help": "batches per epoch (per process)"})
    batch_size: int = field(default=10, metadata={"help": "chips per batch (per process)"})
    optimizer: str = field(default="sgd", metadata={"help": f"one of {OPTIMIZERS} (the paper: sgd)"})
    learning_rate: float = field(default=0.01, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum (sgd only)"})
    weight_decay: float = field(
        default=5e-4, metadata={"help": "weight decay (all parameters, λ included; decoupled for adamw)"}
    )
    lr_milestones: list[int] = field(default_factory=lambda: [25, 35, 45], metadata={"help": "LR x gamma here"})
    lr_gamma: float = field(default=0.1, metadata={"help": "LR decay factor at each milestone epoch"})
    chip_size: int = field(default=256, metadata={"help": "training chip size (the encoder's image size)"})
    rot90: bool = field(default=False, metadata={"help": "also random 90-degree rotations"})
    eval_stride: int = field(default=32, metadata={"help": "sliding-window stride of the evaluation"})
    eval_every: int | None = field(default=None, metadata={"help": "validate every N steps (default: each epoch)"})
    eval_batch_size: int = field(default=8, metadata={"help": "chips per evaluation batch"})
    output_dir: str = field(default="outputs/mfnet", metadata={"help": "where everything is written"})
    seed: int = field(default=42, metadata={"help": "random seed"})
    mixed_precision: str = field(default="no", metadata={"help": f"one of {MIXED_PRECISION}"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "checkpoint the frozen encoder blocks"})
    attn_implementation: str = field(default="eager", metadata={"help": "eager or sdpa"})
    padding_free: bool = field(
        default=True,
        metadata={"help": "skip the wasted work of SAM's window padding (exact, ~1.4x faster; docs/benchmarks.md)"},
    )
    encoder_dtype: str = field(
        default="fp32", metadata={"help": "frozen encoder: fp32, bf16-autocast, or bf16 (bf16-stored weights)"}
    )
    checkpoint_every: int | None = field(default=None, metadata={"help": "save a resumable state every N steps"})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "resumable states kept"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace the run already in --output-dir (removed only once the new one is saved)"},
    )
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "latest or a checkpoint folder"})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repository for the trained adapter"})
    report_to: str | None = field(default=None, metadata={"help": "Accelerate tracker(s), e.g. tensorboard"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers"})
    source_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "data source options"})
    scaling: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "raw -> input scaling per modality: text (--scaling NAME=MODE, e.g. 'range:0,3000') or "
            "Scaling; default the source's (stats for folder / hf data); recorded in the model"
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        self._check_choices()
        self._check_counts()
        self._check_optimization()
        check_generated_base_model(self.base_model)
        if self.chip_size % 32:
            raise ValueError(f"chip_size={self.chip_size} must be a multiple of 32")
        if self.modalities is not None and (not self.modalities or len(set(self.modalities)) != len(self.modalities)):
            raise ValueError(f"modalities={self.modalities!r} must list distinct names")
        if self.num_workers < 0:
            raise ValueError(f"num_workers={self.num_workers!r} must be >= 0")
        from ..data.scaling import parse_scalings

        parse_scalings(self.scaling)  # a bad one names --scaling NAME=TEXT

    def _check_choices(self) -> None:
        if self.tuner not in TUNERS:
            raise ValueError(f"tuner={self.tuner!r} is not one of {TUNERS}")
        if self.input_normalisation not in ("none", "encoder"):
            raise ValueError(f"input_normalisation={self.input_normalisation!r} must be none or encoder")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation={self.ablation!r} is not one of {ABLATIONS}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {PRESETS}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r} is not one of {MIXED_PRECISION}")
        if self.rel_pos not in ("pretrained", "zero"):
            raise ValueError(f"rel_pos={self.rel_pos!r} must be 'pretrained' or 'zero'")
        if self.encoder_dtype not in ("fp32", "bf16-autocast", "bf16"):
            raise ValueError(f"encoder_dtype={self.encoder_dtype!r} must be fp32, bf16-autocast or bf16")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ValueError(f"attn_implementation={self.attn_implementation!r} must be 'eager' or 'sdpa'")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} must be one of {OPTIMIZERS}")

    def _check_counts(self) -> None:
        counts = (
            "rank",
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "chip_size",
            "eval_stride",
            "eval_batch_size",
            "checkpoints_total_limit",
        )
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("max_steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name}={value!r} must be a positive integer or None")
        if not 0 < self.train_fraction <= 1:  # NaN too
            raise ValueError(f"train_fraction={self.train_fraction!r} must be in (0, 1]")

    def _check_optimization(self) -> None:
        # `not x >= 0` is also true for NaN; math.isfinite rules out inf, which trains on NaN weights.
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate={self.learning_rate!r} must be a finite positive number")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not (self.lr_gamma > 0 and math.isfinite(self.lr_gamma)):
            raise ValueError(f"lr_gamma={self.lr_gamma!r} must be a finite positive number (0.1: LR x0.1 a milestone)")
        if any(not isinstance(m, int) or m <= 0 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones={self.lr_milestones!r} must be positive epoch numbers")

    @property
    def total_steps(self) -> int:
        planned = self.epochs * self.steps_per_epoch
        return min(planned, self.max_steps) if self.max_steps is not None else planned

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_preset(args: TrainingArguments, explicit: set[str]) -> TrainingArguments:
    """Fill the fields of ``args.preset`` that are not in ``explicit`` (the fields the user set)."""
    if args.preset is None:
        return args
    values = PAPER_PRESET if args.preset == "paper" else DEMO_PRESET
    updates = {k: v for k, v in values.items() if k not in explicit}
    return dataclasses.replace(args, **updates)
