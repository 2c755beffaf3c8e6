"""MMAdapter layers: a sequential adapter on the attention output, a parallel cross-modal adapter beside the MLP."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..base import MultimodalTunerLayer, linear_init_, mix_modalities, split_modalities
from .config import MMAdapterConfig


class MMAdapterLayer(nn.Module, MultimodalTunerLayer):
    """Wraps a module mapping D -> D features; per-modality bottleneck weights stacked along M.

    Parameters per adapter name: ``mmadapter_down_weight`` (M, h, D), ``mmadapter_down_bias`` (M, h),
    ``mmadapter_up_weight`` (M, D, h), ``mmadapter_up_bias`` (M, D) and, when mixing, ``mmadapter_lambda`` (M,).
    """

    adapter_layer_names = (
        "mmadapter_down_weight",
        "mmadapter_down_bias",
        "mmadapter_up_weight",
        "mmadapter_up_bias",
        "mmadapter_lambda",
    )
    other_param_names = ("activation", "num_modalities", "cross_modal")

    # True: adapter applied to the wrapped module's output (sequential); False: to its input (parallel).
    on_output = False

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, config: MMAdapterConfig, module_name: str, features: int
    ) -> None:
        super().__init__()
        self._init_multimodal(base_layer, module_name)
        self.features = features
        self.mmadapter_down_weight = nn.ParameterDict()
        self.mmadapter_down_bias = nn.ParameterDict()
        self.mmadapter_up_weight = nn.ParameterDict()
        self.mmadapter_up_bias = nn.ParameterDict()
        self.mmadapter_lambda = nn.ParameterDict()
        self.activation: dict[str, str] = {}
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def _mixes(self, config: MMAdapterConfig) -> bool:
        return config.cross_modal and config.num_modalities > 1 and not self.on_output

    def update_layer(self, adapter_name: str, config: MMAdapterConfig) -> None:
        m, d = config.num_modalities, self.features
        h = int(d * config.bottleneck_ratio)
        if h < 1:
            raise ValueError(
                f"bottleneck_ratio={config.bottleneck_ratio!r} leaves no bottleneck for {self.module_name} of width "
                f"{d}; use at least {1 / d:.3g}"
            )
        device = next(self.get_base_layer().parameters()).device
        down_w = torch.empty(m, h, d, device=device)
        down_b = torch.empty(m, h, device=device)
        up_w = torch.empty(m, d, h, device=device)
        up_b = torch.empty(m, d, device=device)
        linear_init_(down_w, down_b)
        linear_init_(up_w, up_b)
        self.mmadapter_down_weight[adapter_name] = nn.Parameter(down_w)
        self.mmadapter_down_bias[adapter_name] = nn.Parameter(down_b)
        self.mmadapter_up_weight[adapter_name] = nn.Parameter(up_w)
        self.mmadapter_up_bias[adapter_name] = nn.Parameter(up_b)
        if self._mixes(config):
            self.mmadapter_lambda[adapter_name] = nn.Parameter(
                torch.full((m,), float(config.init_lambda), device=device)
            )
        self.activation[adapter_name] = config.activation
        self.num_modalities[adapter_name] = m
        self.cross_modal[adapter_name] = self._mixes(config)
        self.set_adapter(self.active_adapters)

    def _adapter(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck of each modality: x (M, N, D) -> (M, N, D)."""
        down_w = self.mmadapter_down_weight[adapter_name]
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(down_w.dtype)
        hidden = torch.baddbmm(self.mmadapter_down_bias[adapter_name].unsqueeze(1), x, down_w.transpose(1, 2))
        hidden = ACT2FN[self.activation[adapter_name]](hidden)
        up_w = self.mmadapter_up_weight[adapter_name]
        return torch.baddbmm(self.mmadapter_up_bias[adapter_name].unsqueeze(1), hidden, up_w.transpose(1, 2))

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        """x: (M·B, ..., D) modality-major -> (M·B, ..., D)."""
        result = self.base_layer(x, *args, **kwargs)
        source = result if self.on_output else x
        for name in self._adapters_to_run():
            streams = split_modalities(source, self.num_modalities[name], self.module_name)
            delta = self._adapter(name, streams)
            if self.cross_modal[name]:
                delta = mix_modalities(delta, self.mmadapter_lambda[name])
            result = result + delta.reshape(result.shape).to(result.dtype)
        return result


class MMAdapterSequential(MMAdapterLayer):
    """Per-modality adapter on the attention output, inside the residual: ``a + Adapter_m(a)``."""

    on_output = True


class MMAdapterParallel(MMAdapterLayer):
    """Cross-modal adapter beside the MLP, fed the MLP's own (layer-normed) input."""

    on_output = False
