"""MMLoRA layers: q/v LoRA per modality on SAM's fused qkv, cross-modal LoRA on the MLP linears."""

from __future__ import annotations

import torch
from torch import nn

from ..multimodal import MultimodalTunerLayer, linear_init_, mix_modalities, split_modalities
from .config import MMLoraConfig


class MMLoraLayer(nn.Module, MultimodalTunerLayer):
    """Wraps an `nn.Linear` of the frozen encoder; weights are stacked per modality.

    Parameters per adapter name: ``mmlora_A`` (M, [2,] r, in), ``mmlora_B`` (M, [2,] out, r) and, when mixing,
    ``mmlora_lambda`` (M,).
    """

    adapter_layer_names = ("mmlora_A", "mmlora_B", "mmlora_lambda")
    other_param_names = ("r", "scaling", "num_modalities", "cross_modal")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: MMLoraConfig, module_name: str) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise ValueError(f"MMLoRA targets nn.Linear layers; {module_name} is a {type(base_layer).__name__}")
        self._init_multimodal(base_layer, module_name)
        self.mmlora_A = nn.ParameterDict()
        self.mmlora_B = nn.ParameterDict()
        self.mmlora_lambda = nn.ParameterDict()
        self.r: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    # Number of output slices that get a low-rank update (2 for q and v of a fused qkv, else 1).
    branches = 1

    def _branch_scaling(self, config: MMLoraConfig) -> float:
        return config.scaling if config.scale_mlp else 1.0

    def _mixes(self, config: MMLoraConfig) -> bool:
        return config.cross_modal and config.num_modalities > 1

    def update_layer(self, adapter_name: str, config: MMLoraConfig) -> None:
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"MMLoRA targets nn.Linear layers; {self.module_name} is a {type(base).__name__}")
        in_features, out_features = base.in_features, base.out_features
        m, r = config.num_modalities, config.r
        if self.branches == 2:
            out_features //= 3
        shape_a = (m, self.branches, r, in_features)
        shape_b = (m, self.branches, out_features, r)
        weight: torch.Tensor = base.weight
        a = torch.empty(shape_a, dtype=torch.float32, device=weight.device)
        linear_init_(a.view(-1, r, in_features))
        self.mmlora_A[adapter_name] = nn.Parameter(a.squeeze(1) if self.branches == 1 else a)
        b = torch.zeros(shape_b, dtype=torch.float32, device=weight.device)
        self.mmlora_B[adapter_name] = nn.Parameter(b.squeeze(1) if self.branches == 1 else b)
        if self._mixes(config):
            self.mmlora_lambda[adapter_name] = nn.Parameter(
                torch.full((m,), float(config.init_lambda), device=weight.device)
            )
        self.r[adapter_name] = r
        self.scaling[adapter_name] = self._branch_scaling(config)
        self.num_modalities[adapter_name] = m
        self.cross_modal[adapter_name] = self._mixes(config)
        self.set_adapter(self.active_adapters)

    def _delta(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Low-rank update of each modality: x (M, N, in) -> (M, N, branches * out)."""
        a = self.mmlora_A[adapter_name]
        b = self.mmlora_B[adapter_name]
        x = x.to(a.dtype) if not torch.is_autocast_enabled(x.device.type) else x
        if self.branches == 1:
            return torch.bmm(torch.bmm(x, a.transpose(1, 2)), b.transpose(1, 2))
        m, branches, r, in_features = a.shape
        hidden = torch.bmm(x, a.reshape(m, branches * r, in_features).transpose(1, 2))
        hidden = hidden.unflatten(-1, (branches, r))  # (M, N, branches, r)
        return torch.einsum("mnjr,mjor->mnjo", hidden, b).flatten(-2)

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """x: (M·B, ..., in) modality-major -> (M·B, ..., out)."""
        result = self.base_layer(x, *args, **kwargs)
        for name in self._adapters_to_run():
            streams = split_modalities(x, self.num_modalities[name], self.module_name)
            delta = self._delta(name, streams) * self.scaling[name]
            if self.cross_modal[name]:
                delta = mix_modalities(delta, self.mmlora_lambda[name])
            result = result + self._place(delta).reshape(result.shape).to(result.dtype)
        return result

    def _place(self, delta: torch.Tensor) -> torch.Tensor:
        return delta


class MMLoraQV(MMLoraLayer):
    """Per-modality LoRA on the q and v slices of a fused ``qkv`` projection (k untouched, no mixing)."""

    branches = 2

    def _branch_scaling(self, config: MMLoraConfig) -> float:
        return config.scaling

    def _mixes(self, config: MMLoraConfig) -> bool:
        # The paper's attention branch is plain LoRA per modality: no cross-modal term.
        return False

    def _place(self, delta: torch.Tensor) -> torch.Tensor:
        q, v = delta.chunk(2, dim=-1)
        return torch.cat((q, torch.zeros_like(q), v), dim=-1)
