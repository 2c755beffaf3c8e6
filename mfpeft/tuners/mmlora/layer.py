"""MMLoRA layers: q/v LoRA per modality on SAM's fused qkv, cross-modal LoRA on the MLP linears."""

from __future__ import annotations

import torch
from torch import nn

from ..base import MultimodalTunerLayer, linear_init_, mixing_matrix, split_modalities
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
            raise ValueError(_not_linear(module_name, base_layer))
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
            raise ValueError(_not_linear(self.module_name, base))
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

    def _hidden(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Scaled low-rank hidden state of each modality: x (M, N, in) -> (M, N, branches·r)."""
        a = self.mmlora_A[adapter_name]
        x = x.to(a.dtype) if not torch.is_autocast_enabled(x.device.type) else x
        m, r, in_features = a.shape[0], a.shape[-2], a.shape[-1]
        hidden = torch.bmm(x, a.reshape(m, self.branches * r, in_features).transpose(1, 2))
        return hidden * self.scaling[adapter_name]

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """x: (M·B, ..., in) modality-major -> (M·B, ..., out).

        The base layer runs on the flattened tokens, so its output is a plain (M·N, out) tensor, and each
        adapter's update is added to it in place by one ``addmm_`` against the B of all modalities stacked:
        cross-modal mixing happens on the rank-r hidden states (`mixing_matrix`) and no full-width temporary is
        built, which matters for the MLP's 4·D-wide ``lin1``. In place on a plain tensor costs autograd nothing
        (the base output is not needed by its own backward); on a view of it autograd would clone the
        full-width gradient twice in backward.
        """
        shape = x.shape
        result = self.base_layer(x.reshape(-1, shape[-1]), *args, **kwargs)
        for name in self._adapters_to_run():
            hidden = self._hidden(name, split_modalities(x, self.num_modalities[name], self.module_name))
            mixed, stacked = self._mixed(name, hidden), self._stacked_b(name)
            if torch.is_autocast_enabled(x.device.type) or mixed.dtype != result.dtype:
                mixed, stacked = mixed.to(result.dtype), stacked.to(result.dtype)
            result.addmm_(mixed, stacked)
        return result.view(*shape[:-1], -1)

    def _mixed(self, adapter_name: str, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (M, N, k) -> (M·N, M·k) with block [m, j] = W[m, j]·hidden[j]; W mixes (or is the identity)."""
        m, n, k = hidden.shape
        if self.cross_modal[adapter_name]:
            weights = mixing_matrix(self.mmlora_lambda[adapter_name]).to(hidden.dtype)
        else:
            weights = torch.eye(m, dtype=hidden.dtype, device=hidden.device)
        return (weights[:, :, None, None] * hidden.unsqueeze(0)).permute(0, 2, 1, 3).reshape(m * n, m * k)

    def _stacked_b(self, adapter_name: str) -> torch.Tensor:
        """B (M, out, r) as one (M·r, out) matrix: row block m is B_m transposed."""
        b = self.mmlora_B[adapter_name]
        return b.transpose(1, 2).reshape(-1, b.shape[1])


def _not_linear(module_name: str, module: nn.Module) -> str:
    kind = type(module).__name__
    gated = any(name.startswith("gate") for name, _ in module.named_children())
    hint = (
        " (a gated MLP block: MMLoRA sits on its up and down projections, not on the block; target those linears)"
        if gated
        else ""
    )
    return f"MMLoRA targets nn.Linear layers; {module_name} is a {kind}{hint}"


class MMLoraAttention(MMLoraLayer):
    """Per-modality LoRA on a separate q or v projection (DINOv2, DINOv3): scaled by alpha / r, no mixing."""

    def _branch_scaling(self, config: MMLoraConfig) -> float:
        return config.scaling

    def _mixes(self, config: MMLoraConfig) -> bool:
        return False  # the paper's attention branch is plain LoRA per modality


class MMLoraQV(MMLoraLayer):
    """Per-modality LoRA on the q and v slices of a fused ``qkv`` projection (k untouched, no mixing)."""

    branches = 2

    def _branch_scaling(self, config: MMLoraConfig) -> float:
        return config.scaling

    def _mixes(self, config: MMLoraConfig) -> bool:
        # The paper's attention branch is plain LoRA per modality: no cross-modal term.
        return False

    def _stacked_b(self, adapter_name: str) -> torch.Tensor:
        """B (M, 2, D, r) as one (M·2·r, 3·D) matrix: modality m's q rows write the q slice, its v rows the v slice.

        The zero blocks (k, and the q/v cross terms) cost N·M·2r·3D multiply-adds, well under 1 % of ``qkv``.
        """
        b = self.mmlora_B[adapter_name]
        m, _, dim, r = b.shape
        zeros = b.new_zeros(m, r, dim)
        q, v = b[:, 0].transpose(1, 2), b[:, 1].transpose(1, 2)
        weight = torch.cat((torch.cat((q, zeros, zeros), dim=2), torch.cat((zeros, zeros, v), dim=2)), dim=1)
        return weight.reshape(m * 2 * r, 3 * dim)
