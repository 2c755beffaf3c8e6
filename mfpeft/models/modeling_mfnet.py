"""`MFNetForSegmentation`: frozen SAM encoder -> Deep Fusion Module -> UNetFormer decoder.

Data flow for M modalities, batch B, chip S (256) and SAM width D::

    pixel_values {name: (B, C_m, S, S)} -> normalise, repeat 1-channel inputs to 3
    -> stack modality-major (M·B, 3, S, S) -> SAM encoder (+ multimodal tuner) -> neck (M·B, 256, S/16, S/16)
    -> M streams -> DFM: pyramid per modality, SE-Fusion at 1/4, 1/8, 1/16, 1/32 (each (B, 256, ·))
    -> UNetFormer decoder -> logits (B, num_labels, S, S)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, SamVisionModel
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.models.sam.modeling_sam import SamVisionEncoder

from .configuration_mfnet import MFNetConfig
from .decoder import UNetFormerDecoder
from .fusion import DeepFusionModule
from .sam.fast_path import optimize_sam_encoder


class MFNetPreTrainedModel(PreTrainedModel):
    config_class = MFNetConfig
    config: MFNetConfig
    base_model_prefix = "mfnet"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SamVisionLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Every module gets PyTorch's default initialisation (what MFNet's head trains from); SAM's position
        # tables start at zero until real SAM weights are loaded over them.
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(module, SamVisionEncoder) and module.pos_embed is not None:
            module.pos_embed.zero_()
        for name in ("rel_pos_h", "rel_pos_w"):
            table = getattr(module, name, None)
            if isinstance(table, nn.Parameter):
                table.zero_()
        if isinstance(module, MFNetForSegmentation):
            # Non-persistent buffers are not in checkpoints: a model built on the meta device by
            # `from_pretrained` must get them from the config here.
            module.set_input_normalisation()


class MFNetForSegmentation(MFNetPreTrainedModel):
    """MFNet for multimodal semantic segmentation.

    The SAM encoder sits at ``vision_encoder`` so its keys match SAM checkpoints; it is frozen. The trainable
    head is ``fusion`` (DFM, absent when ``use_dfm=False``) and ``decoder``.
    """

    def __init__(self, config: MFNetConfig) -> None:
        super().__init__(config)
        self.vision_encoder = SamVisionEncoder(config.vision_config)
        self.vision_encoder.requires_grad_(False)
        if config.padding_free_encoder:
            optimize_sam_encoder(self.vision_encoder, padding_free=True)
        channels = config.vision_config.output_channels
        self.fusion = (
            DeepFusionModule(len(config.modalities), channels, quarter_norms=config.quarter_norms)
            if config.use_dfm
            else None
        )
        self.decoder = UNetFormerDecoder(
            encoder_channels=channels,
            decode_channels=config.decode_channels,
            window_size=config.decoder_window_size,
            dropout=config.decoder_dropout,
            num_labels=int(config.num_labels or 0),
            use_skips=config.use_dfm,
        )
        for name in config.modality_names:
            self.register_buffer(f"_mean_{name}", torch.zeros(1, 1, 1, 1), persistent=False)
            self.register_buffer(f"_std_{name}", torch.ones(1, 1, 1, 1), persistent=False)
        self.set_input_normalisation()
        self.post_init()

    @torch.no_grad()
    def set_input_normalisation(self) -> None:
        """(Re)fill the per-modality mean/std buffers (1, C, 1, 1) from the config."""
        for name in self.config.modality_names:
            for prefix, values, default in (
                ("_mean_", self.config.input_mean, 0.0),
                ("_std_", self.config.input_std, 1.0),
            ):
                buffer = getattr(self, prefix + name)
                value = torch.tensor(values.get(name, [default]), dtype=torch.float32, device=buffer.device)
                setattr(self, prefix + name, value.view(1, -1, 1, 1))

    @property
    def head_module_names(self) -> list[str]:
        """Modules trained in full and saved with an adapter (peft `modules_to_save`)."""
        return ["fusion", "decoder"] if self.fusion is not None else ["decoder"]

    def stack_modalities(self, pixel_values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Validate, normalise and stack the inputs: {name: (B, C_m, S, S)} -> (M·B, 3, S, S), modality-major."""
        if not isinstance(pixel_values, dict):
            raise ValueError(
                f"pixel_values must be a dict {{modality: (B, C, H, W) tensor}} with keys "
                f"{self.config.modality_names}, got {type(pixel_values).__name__}"
            )
        names = self.config.modality_names
        missing = [n for n in names if n not in pixel_values]
        extra = [n for n in pixel_values if n not in names]
        if missing or extra:
            raise ValueError(
                f"pixel_values keys {sorted(pixel_values)} do not match the model's modalities {names}: "
                f"missing {missing}, unexpected {extra}"
            )
        size = self.config.image_size
        batch = None
        streams = []
        for name, channels in self.config.modality_channels.items():
            x = pixel_values[name]
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f"pixel_values[{name!r}] must be (B, {channels}, H, W), got {tuple(x.shape)}")
            if x.shape[-2:] != (size, size):
                raise ValueError(
                    f"pixel_values[{name!r}] is {x.shape[-2]}x{x.shape[-1]}; this model takes {size}x{size} "
                    "chips (vision_config.image_size); use sliding windows for larger scenes"
                )
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"pixel_values[{name!r}] has batch {x.shape[0]}, the first modality {batch}")
            batch = x.shape[0]
            x = (x - getattr(self, f"_mean_{name}")) / getattr(self, f"_std_{name}")
            streams.append(x.expand(-1, 3, -1, -1) if channels == 1 else x)
        dtype = self.vision_encoder.patch_embed.projection.weight.dtype
        return torch.cat(streams, dim=0).to(dtype)

    def encode(self, pixel_values: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """SAM neck features of each modality: M maps (B, 256, S/16, S/16)."""
        stacked = self.stack_modalities(pixel_values)
        features = self.vision_encoder(stacked).last_hidden_state
        return list(features.float().unflatten(0, (len(self.config.modalities), -1)).unbind(0))

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The head: M encoder maps (B, 256, S/16, S/16) -> logits (B, num_labels, S, S).

        With the DFM: pyramids, SE-Fusion, UNetFormer decoder with skips; without: the maps summed and decoded.
        """
        size = (self.config.image_size, self.config.image_size)
        if self.fusion is not None:
            return self.decoder(self.fusion(list(features)), size)
        return self.decoder(torch.stack(list(features)).sum(0), size)

    def forward(
        self,
        pixel_values: dict[str, torch.Tensor],
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SemanticSegmenterOutput | tuple[torch.Tensor, ...]:
        """Segment chips.

        Args:
            pixel_values: {modality name: (B, C_m, S, S) float tensor}, scaled as the data pipeline does.
            labels: (B, S, S) int64 class indices, 255 ignored.
            output_hidden_states: also return the per-modality encoder features (M maps (B, 256, S/16, S/16)).

        Returns:
            `SemanticSegmenterOutput` with ``logits`` (B, num_labels, S, S) and ``loss`` (cross-entropy) when
            labels are given.
        """
        features = self.encode(pixel_values)
        logits = self.decode(features)
        size = (self.config.image_size, self.config.image_size)
        loss = None
        if labels is not None:
            if labels.shape != (logits.shape[0], *size):
                raise ValueError(f"labels must be (B, H, W) = {(logits.shape[0], *size)}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits.float(), labels.long(), ignore_index=self.config.semantic_loss_ignore_index)
        hidden_states = tuple(features) if output_hidden_states else None
        if return_dict is False:
            output: tuple[Any, ...] = (logits, hidden_states) if hidden_states is not None else (logits,)
            return (loss, *output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    @classmethod
    def from_sam(
        cls,
        sam: str | Path | SamVisionModel,
        config: MFNetConfig | None = None,
        *,
        attn_implementation: str | None = None,
        **config_kwargs: Any,
    ) -> MFNetForSegmentation:
        """A new MFNet (untrained head) around SAM's frozen encoder: the one place MFNet is built around a SAM.

        ``sam`` is a loaded `SamVisionModel` (its config becomes ``config.vision_config``; ``config`` is required
        and keeps its ``sam_name_or_path``) or a Hub id, folder or Meta ``.pth`` to load (``sam_name_or_path``
        records it). ``config_kwargs`` build the `MFNetConfig` when ``config`` is None (e.g. ``id2label``,
        ``modalities``, ``use_dfm``); ``image_size`` (default 256) and ``rel_pos`` choose how SAM is resized.
        """
        if isinstance(sam, SamVisionModel):
            if config is None:
                raise TypeError("from_sam(loaded SAM) needs the MFNetConfig to build")
            config.vision_config = sam.config
            return cls._around_encoder(sam, config)
        from .sam.loading import load_sam_vision_encoder

        image_size = int(config_kwargs.pop("image_size", config.image_size if config is not None else 256))
        rel_pos = config_kwargs.pop("rel_pos", config.rel_pos if config is not None else "pretrained")
        loaded = load_sam_vision_encoder(
            sam, image_size=image_size, rel_pos=rel_pos, attn_implementation=attn_implementation
        )
        if config is None:
            config = MFNetConfig(vision_config=loaded.config, rel_pos=rel_pos, **config_kwargs)
        else:
            config.vision_config = loaded.config
            config.rel_pos = rel_pos
        config.sam_name_or_path = str(sam)
        return cls._around_encoder(loaded, config)

    @classmethod
    def _around_encoder(cls, sam: SamVisionModel, config: MFNetConfig) -> MFNetForSegmentation:
        model = cls(config)
        model.vision_encoder.load_state_dict(sam.vision_encoder.state_dict())
        model.vision_encoder.requires_grad_(False)
        return model

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *args: Any,
        base_model: str | Path | None = None,
        is_trainable: bool = False,
        adapter_name: str = "default",
        **kwargs: Any,
    ) -> Any:
        """Load MFNet from an adapter folder or Hub repo (tuner + head weights), or from a full checkpoint.

        For an adapter folder (``adapter_config.json`` + ``config.json``) the frozen SAM is loaded from the
        config's ``sam_name_or_path`` or from ``base_model`` (e.g. a local copy), resized, the tuner injected and
        the trained weights loaded; a `peft.PeftModel` is returned (``is_trainable=True`` continues training).
        Weights are read from safetensors only: a pickle (``pytorch_model.bin``, ``adapter_model.bin``) is refused
        unopened.

        Raises:
            ValueError: a folder that is no MFNet model, a config value out of range, weights that do not match
                their configs; the message names the file, the field and the value.
            SamLoadError: the base SAM cannot be loaded.
        """
        from .adapter_io import check_checkpoint_folder, find_adapter_folder, load_mfnet_adapter

        folder = find_adapter_folder(pretrained_model_name_or_path, **kwargs)
        if folder is not None:
            return load_mfnet_adapter(
                cls, folder, base_model=base_model, is_trainable=is_trainable, adapter_name=adapter_name, **kwargs
            )
        if base_model is not None:
            raise ValueError(f"base_model= applies to adapter folders; {pretrained_model_name_or_path} is none")
        check_checkpoint_folder(pretrained_model_name_or_path)
        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False: mfpeft loads only safetensors, never a pickled pytorch_model.bin")
        kwargs["use_safetensors"] = True  # a Hub repo's pytorch_model.bin is never downloaded nor unpickled
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
