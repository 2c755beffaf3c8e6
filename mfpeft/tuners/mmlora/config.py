"""Configuration of MMLoRA, MFNet's multimodal LoRA (paper Eq. 9-12)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...common.validation import check_number
from ..config import MultimodalConfig


@dataclass
class MMLoraConfig(MultimodalConfig):
    """MMLoRA: per-modality LoRA on the encoder's attention and cross-modal LoRA beside its MLP.

    On SAM's fused ``attn.qkv`` each modality gets standard LoRA on the q and v slices (k untouched), scaled by
    ``alpha / r``; on separate q and v projections (DINOv2, DINOv3) the same LoRA on each. On the MLP's first and
    last linear (SAM's ``mlp.lin1`` / ``mlp.lin2``; a gated MLP's up and down projections, its gate frozen) each
    modality m gets low-rank weights (A_m, B_m) and
    ``out_m = W0·x_m + b + λ_m·B_m·A_m·x_m + (1 - λ_m)/(M - 1)·Σ_{k≠m} B_k·A_k·x_k`` (unscaled, as MFNet).

    Attributes:
        r: rank of every low-rank pair.
        alpha: LoRA alpha; the attention branch is scaled by alpha / r.
        scale_mlp: also scale the MLP branch by alpha / r (MFNet computes that factor but never applies it).
        qv_modules: on models that do not describe their encoder (a bare SAM), the names (suffixes) of the fused qkv
            projections that get q/v LoRA; other targets get MMLoRA. MFNet says which layer plays which role.
    """

    r: int = field(default=4, metadata={"help": "LoRA rank"})
    alpha: float = field(default=1.0, metadata={"help": "LoRA alpha; attention branch scaled by alpha / r"})
    scale_mlp: bool = field(default=False, metadata={"help": "scale the MLP branch by alpha / r too"})
    qv_modules: list[str] = field(default_factory=lambda: ["qkv"], metadata={"help": "fused qkv module names"})

    weight_dimensions: ClassVar[dict[str, tuple[tuple[int, str, str], ...]]] = {
        "mmlora_A": ((0, "num_modalities", "modalities"), (-2, "r", "rank")),  # (M, [2,] r, in)
        "mmlora_B": ((0, "num_modalities", "modalities"), (-1, "r", "rank")),  # (M, [2,] out, r)
        "mmlora_lambda": ((0, "num_modalities", "modalities"),),  # (M,)
    }

    display_name: ClassVar[str] = "MMLoRA"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("r", self.r, 1, integer=True)
        check_number("alpha", self.alpha, 0, low_open=True)
        if not isinstance(self.scale_mlp, bool):
            raise ValueError(f"scale_mlp={self.scale_mlp!r} must be True or False")

    def target_roles(self) -> tuple[str, ...]:
        """q/v of the attention (fused or separate) and the MLP's first and last linear (a gate stays frozen)."""
        return ("attention_qkv", "attention_q", "attention_v", "mlp_in", "mlp_out")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def describe(self) -> str:
        return f"rank {self.r}"

    def card_description(self) -> str:
        return f"rank r = {self.r}, alpha = {self.alpha}"
