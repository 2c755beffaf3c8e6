"""Configuration of MMAdapter, MFNet's multimodal bottleneck adapter (paper Eq. 1-6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from transformers.activations import ACT2FN

from ...common.validation import check_number
from ..config import MultimodalConfig


@dataclass
class MMAdapterConfig(MultimodalConfig):
    """MMAdapter: a per-modality adapter after attention and a cross-modal adapter beside the MLP.

    Adapter = Linear(D -> bottleneck) -> activation -> Linear(bottleneck -> D), both with bias, default
    `nn.Linear` init. After attention, inside the residual: ``a = Attn(LN1(x)); a = a + Adapter_m(a)``. Beside the
    MLP, with ``xn_m = LN2(x_m)``:
    ``out_m = x_m + MLP(xn_m) + λ_m·MMA_m(xn_m) + (1 - λ_m)/(M - 1)·Σ_{k≠m} MMA_k(xn_k)``.

    Attributes:
        bottleneck_ratio: bottleneck width as a fraction of the encoder width D (MFNet: 0.25).
        activation: the adapter's activation (MFNet's code: GELU; the paper's Eq. 1 says ReLU).
        attention_modules / mlp_modules: on models that do not describe their encoder (a bare SAM), the names
            (suffixes) of the wrapped attention output projection and MLP; MFNet says which layer plays which role.
        mlp_adapters: the cross-modal adapters beside the MLP; False keeps only the attention adapters (the
            authors' Table IV "adapter" ablation: 7,100,928 weights for ViT-B, two modalities).
    """

    bottleneck_ratio: float = field(default=0.25, metadata={"help": "bottleneck width / encoder width"})
    activation: str = field(default="gelu", metadata={"help": "adapter activation"})
    attention_modules: list[str] = field(default_factory=lambda: ["proj"], metadata={"help": "attention outputs"})
    mlp_modules: list[str] = field(default_factory=lambda: ["mlp"], metadata={"help": "MLP blocks"})
    mlp_adapters: bool = field(default=True, metadata={"help": "cross-modal adapters beside the MLP"})

    weight_dimensions: ClassVar[dict[str, tuple[tuple[int, str, str], ...]]] = {
        "mmadapter_down_weight": ((0, "num_modalities", "modalities"), (1, "bottleneck_ratio", "bottleneck width")),
        "mmadapter_up_weight": ((0, "num_modalities", "modalities"), (2, "bottleneck_ratio", "bottleneck width")),
        "mmadapter_lambda": ((0, "num_modalities", "modalities"),),
    }

    display_name: ClassVar[str] = "MMAdapter"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("bottleneck_ratio", self.bottleneck_ratio, 0, 4, low_open=True)
        if not isinstance(self.activation, str) or self.activation not in ACT2FN:
            raise ValueError(f"activation={self.activation!r} is not a transformers activation name")
        if not isinstance(self.mlp_adapters, bool):
            raise ValueError(f"mlp_adapters={self.mlp_adapters!r} must be True or False")

    def target_roles(self) -> tuple[str, ...]:
        return ("attention_output", "mlp") if self.mlp_adapters else ("attention_output",)

    def describe(self) -> str:
        """The bottleneck width: "bottleneck 192" once the encoder width D is recorded, else "bottleneck 0.25 x D"."""
        if self.encoder_hidden_size is None:
            return f"bottleneck {self.bottleneck_ratio} x D"
        return f"bottleneck {int(self.encoder_hidden_size * self.bottleneck_ratio)}"

    def card_description(self) -> str:
        return f"bottleneck = {self.bottleneck_ratio} x D, activation {self.activation}"
