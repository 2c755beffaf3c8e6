"""A miniature "foundation model" for the demo: a tiny SAM encoder pre-trained on the demo city's optical chips.

Real SAM was pre-trained (MAE, then SAM's own segmentation training) on RGB photographs only, so a DSM fed through
it is out of distribution and a multimodal tuner has something to adapt. A *random* tiny encoder has no such
asymmetry: nothing is learned, its near-identity blocks pass every input through alike, and a tuner adds nothing
over the frozen encoder. This module builds the faithful miniature cheaply: the tiny encoder (neck included) is
pre-trained by masked-patch reconstruction (SimMIM style: masked patches are blanked in the input, a linear head on
the neck output predicts their pixels) on random optical chips of the demo's *training* tiles, never the DSM and
never the validation or test tiles. It takes tens of seconds on a 2-core CPU, is deterministic given its seeds,
and is cached like the demo data (``cache_root() / "demo-encoder-..."``).

Use it as ``--base-model demo:tiny`` (the demo preset's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamVisionModel

from ..models.sam.fast_path import optimized_sam_encoder
from ..models.sam.loading import SAM_SIZES, random_sam_vision_model, save_quietly

__all__ = [
    "DEMO_ENCODER_PREFIX",
    "DEMO_ENCODER_VERSION",
    "DemoPretrainingConfig",
    "demo_encoder_dir",
    "pretrain_demo_encoder",
]

DEMO_ENCODER_PREFIX = "demo:"
DEMO_ENCODER_VERSION = "v3"  # bump whenever the pre-training changes: caches are keyed by it
_PATCH = 16


@dataclass(frozen=True)
class DemoPretrainingConfig:
    """Masked-patch pre-training of the demo encoder on optical chips.

    Attributes:
        size: SAM encoder size (``SAM_SIZES`` key), "tiny" for the demo.
        image_size: chip size in pixels (a multiple of 16); the demo's 128.
        steps: AdamW steps.
        batch_size: chips per step.
        learning_rate: peak AdamW learning rate (linear warm-up over the first 10 %, then cosine to 0).
        weight_decay: AdamW weight decay (weights only; biases, norms and position tables are not decayed).
        mask_ratio: fraction of the patches blanked in each chip.
        visible_weight: weight of the visible patches' reconstruction error relative to the masked ones'. Pure
            SimMIM (0) leaves the features of visible patches untrained for a short run; reconstructing them too
            makes every patch's feature describe its own colour and texture, which segmentation needs.
        norm_pix: reconstruct each patch normalised to zero mean and unit variance (MAE's ``norm_pix_loss``), so
            the encoder is not asked to keep a patch's absolute brightness.
        seed: seed of the initial weights, the chips and the masks.
        data_seed: seed of the demo data set whose training tiles are used.
    """

    size: str = "tiny"
    image_size: int = 128
    steps: int = 150
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.5
    visible_weight: float = 1.0
    norm_pix: bool = False
    seed: int = 0
    data_seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SAM_SIZES:
            raise ValueError(f"size={self.size!r} is not one of {sorted(SAM_SIZES)}")
        if self.image_size <= 0 or self.image_size % _PATCH:
            raise ValueError(f"image_size={self.image_size!r} must be a positive multiple of {_PATCH}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be positive")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not self.visible_weight >= 0:
            raise ValueError(f"visible_weight={self.visible_weight!r} must be >= 0")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio={self.mask_ratio!r} must be in (0, 1)")

    @property
    def cache_name(self) -> str:
        """The cache folder's name: every field that changes the weights is in it."""
        from mfpeft.data.demo import DEMO_VERSION

        return (
            f"demo-encoder-{DEMO_ENCODER_VERSION}-{self.size}-{self.image_size}px-{self.steps}x{self.batch_size}"
            f"-lr{self.learning_rate:g}-wd{self.weight_decay:g}-mask{self.mask_ratio:g}-vis{self.visible_weight:g}"
            f"{'-normpix' if self.norm_pix else ''}"
            f"-seed{self.seed}"
            f"-data{DEMO_VERSION}-{self.data_seed}"
        )


def _training_images(data_seed: int) -> torch.Tensor:
    """The demo's training tiles' optical bands scaled like the model input (/255): (T, 3, H, W) float32."""
    from mfpeft.data.demo import DEMO_SPLITS, make_demo_scene

    # The same scenes `demo_data_dir` writes (it seeds tile i with data_seed * 1000 + i); regenerating them is
    # cheaper than reading the GeoTIFFs and keeps this module free of the data sources.
    scenes = [make_demo_scene(seed=data_seed * 1000 + i)["optical"] for i in DEMO_SPLITS["train"]]
    return torch.from_numpy(np.stack(scenes)).float() / 255.0


def _random_chips(images: torch.Tensor, count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random ``size`` x ``size`` chips with random flips: (count, 3, size, size)."""
    tiles, _, height, width = images.shape
    chips = []
    for _ in range(count):
        t = int(torch.randint(tiles, (1,), generator=generator))
        y = int(torch.randint(height - size + 1, (1,), generator=generator))
        x = int(torch.randint(width - size + 1, (1,), generator=generator))
        chip = images[t, :, y : y + size, x : x + size]
        flips = torch.rand(2, generator=generator)
        if flips[0] < 0.5:
            chip = chip.flip(-1)
        if flips[1] < 0.5:
            chip = chip.flip(-2)
        chips.append(chip)
    return torch.stack(chips)


def _patchify(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C * 16 * 16, H / 16, W / 16), the pixels of each patch as channels."""
    return F.pixel_unshuffle(images, _PATCH)


def pretrain_demo_encoder(config: DemoPretrainingConfig | None = None) -> tuple[SamVisionModel, list[float]]:
    """Pre-train a SAM encoder on the demo's optical training chips by masked-patch reconstruction.

    Returns the encoder (eval mode, at ``config.image_size``) and the reconstruction loss of every step
    (mean squared error on the masked patches' pixels in [0, 1]).
    """
    config = config or DemoPretrainingConfig()
    generator = torch.Generator().manual_seed(config.seed)
    model = random_sam_vision_model(config.size, image_size=config.image_size, seed=config.seed)
    images = _training_images(config.data_seed)
    grid = config.image_size // _PATCH
    neck_channels = model.config.output_channels
    head = nn.Conv2d(neck_channels, 3 * _PATCH * _PATCH, kernel_size=1, bias=True)
    # A zero head: the encoder gets no gradient until the head reads something out of its (random, informative)
    # features. A random head instead sends large errors back at once, and the fastest way to shrink them is to
    # flatten the features across positions, which collapses them for good within a few dozen steps.
    nn.init.zeros_(head.weight)
    nn.init.zeros_(cast(torch.Tensor, head.bias))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n] + [head.weight]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    no_decay.append(cast(nn.Parameter, head.bias))
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
    )
    warmup = max(1, config.steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, config.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    masked_count = max(1, round(config.mask_ratio * grid * grid))
    mean_colour = images.mean(dim=(0, 2, 3)).view(1, 3, 1, 1)
    losses: list[float] = []
    model.train()
    with optimized_sam_encoder(model, padding_free=True):  # exact, and ~1.6x faster at 128 px (8 of 14 tokens)
        for _ in range(config.steps):
            losses.append(
                _pretraining_step(model, head, optimizer, images, config, grid, masked_count, generator, mean_colour)
            )
            scheduler.step()
    model.eval()
    model.name_or_path = f"{DEMO_ENCODER_PREFIX}{config.size}"
    return model, losses


def _pretraining_step(
    model: SamVisionModel,
    head: nn.Conv2d,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: DemoPretrainingConfig,
    grid: int,
    masked_count: int,
    generator: torch.Generator,
    mean_colour: torch.Tensor,
) -> float:
    """One AdamW step of masked-patch reconstruction; returns the loss."""
    chips = _random_chips(images, config.batch_size, config.image_size, generator)
    # A random subset of exactly `masked_count` patches per chip: (B, 1, grid, grid) booleans.
    order = torch.rand(config.batch_size, grid * grid, generator=generator).argsort(dim=1)
    mask = torch.zeros(config.batch_size, grid * grid, dtype=torch.bool)
    mask.scatter_(1, order[:, :masked_count], True)
    mask = mask.view(-1, 1, grid, grid)
    pixel_mask = mask.repeat_interleave(_PATCH, dim=2).repeat_interleave(_PATCH, dim=3)
    inputs = chips.masked_fill(pixel_mask, 0.0)
    features = model(pixel_values=inputs).last_hidden_state  # (B, 256, grid, grid)
    # Targets centred on the data set's mean colour (the head's bias starts there), so the features need not grow
    # a large common component just to carry the mean: that component drowns the spatial signal after the neck's
    # layer norms.
    target = _patchify(chips - mean_colour)
    if config.norm_pix:
        target = (target - target.mean(dim=1, keepdim=True)) / (target.var(dim=1, keepdim=True) + 1e-6).sqrt()
    error = (head(features) - target).pow(2).mean(dim=1, keepdim=True)
    weights = torch.where(mask, 1.0, config.visible_weight)
    loss = (error * weights).sum() / weights.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def demo_encoder_dir(config: DemoPretrainingConfig | None = None, cache_dir: str | Path | None = None) -> Path:
    """The pre-trained demo encoder's folder (a transformers `SamVisionModel`), built on first use and cached.

    Default location: ``cache_root() / config.cache_name``. Written to a temporary folder and renamed, so an
    interrupted run leaves nothing half-written. The folder also holds ``pretraining_loss.txt`` (one loss a step).
    """
    from mfpeft.common.cache import cached_folder

    config = config or DemoPretrainingConfig()

    def build(folder: Path) -> None:
        model, losses = pretrain_demo_encoder(config)
        save_quietly(model, folder)
        (folder / "pretraining_loss.txt").write_text("".join(f"{value:.6f}\n" for value in losses))

    return cached_folder(config.cache_name, build, f"mfpeft {config.cache_name}", cache_dir)
