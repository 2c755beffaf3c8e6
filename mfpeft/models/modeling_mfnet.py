"""`MFNetForSegmentation`: frozen encoder -> Deep Fusion Module -> UNetFormer decoder.

Data flow for M modalities, batch B, chip S (256)::

    pixel_values {name: (B, C_m, S, S)} -> normalise, repeat 1-channel inputs to 3 (other counts: input stem)
    -> stack modality-major (M·B, 3, S, S) -> encoder (+ multimodal tuner) -> neck (M·B, 256, S/16, S/16)
    -> M streams -> DFM: pyramid per modality, SE-Fusion at 1/4, 1/8, 1/16, 1/32 (each (B, 256, ·))
    -> UNetFormer decoder -> logits (B, num_labels, S, S)

The encoder is any supported family (`mfpeft.models.encoders`): SAM brings its own frozen neck; a plain ViT
(DINOv2, DINOv3) gets MFNet's trainable `ViTNeck`; Hiera (SAM2.1) hands four stage maps (1/4 ... 1/32) through
`LevelNecks` straight to the DFM's four levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SemanticSegmenterOutput

from .configuration_mfnet import MFNetConfig
from .decoder import UNetFormerDecoder
from .encoders.base import NECK_CHANNELS, EncoderWeights
from .encoders.necks import LevelNecks, ViTNeck
from .fusion import DeepFusionModule
from .input_stem import InputStem, needs_stem

Features = list[torch.Tensor] | list[list[torch.Tensor]]
"""Per modality: one (B, 256, S/16, S/16) map, or (hierarchical encoders) four maps at 1/4 ... 1/32."""


def stem_name(modality: str) -> str:
    """The attribute of a modality's input stem (`InputStem`), e.g. ``input_stem_sar``."""
    return f"input_stem_{modality}"


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
        # Every module gets PyTorch's default initialisation (what MFNet's head trains from); the family sets
        # the tables that must start at a fixed value until real encoder weights are loaded over them.
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        self.config.encoder_family.init_weights(module)
        if isinstance(module, MFNetForSegmentation):
            # Non-persistent buffers are not in checkpoints: a model built on the meta device by
            # `from_pretrained` must get them from the config here.
            module.set_input_normalisation()


class MFNetForSegmentation(MFNetPreTrainedModel):
    """MFNet for multimodal semantic segmentation.

    The encoder sits at ``vision_encoder`` so its keys match its family's checkpoints; it is frozen. The trainable
    head is ``neck`` (encoders without their own neck), ``fusion`` (DFM, absent when ``use_dfm=False``) and
    ``decoder``.
    """

    def __init__(self, config: MFNetConfig) -> None:
        super().__init__(config)
        family = config.encoder_family
        self.vision_encoder = family.build(config.vision_config)
        self.vision_encoder.requires_grad_(False)
        family.prepare(self.vision_encoder, config.padding_free_encoder)
        in_channels = family.feature_channels(config.vision_config)
        self.neck: nn.Module | None = None
        channels = in_channels[0]
        if family.needs_neck():
            single = len(in_channels) == 1
            self.neck = ViTNeck(in_channels[0], config.image_size // 16) if single else LevelNecks(in_channels)
            channels = NECK_CHANNELS
        self.fusion = (
            DeepFusionModule(
                len(config.modalities), channels, quarter_norms=config.quarter_norms, pyramid=len(in_channels) == 1
            )
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
        # A trainable stem onto the encoder's 3 channels for each modality of another channel count.
        for name, count in config.modality_channels.items():
            if needs_stem(count):
                self.add_module(stem_name(name), InputStem(count))
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
        stems = [stem_name(n) for n, c in self.config.modality_channels.items() if needs_stem(c)]
        names = [*stems, "neck"] if self.neck is not None else stems
        return [*names, "fusion", "decoder"] if self.fusion is not None else [*names, "decoder"]

    def tuner_targets(self, roles: Sequence[str]) -> str:
        """The regex (peft ``target_modules``) of the encoder modules playing ``roles`` in this encoder's family.

        Raises:
            ValueError: the family has none of the roles (names the family and the roles it has).
        """
        import re

        from .encoders.base import layer_key_pattern

        family = self.config.encoder_family
        names = family.role_names(self.config.vision_config)
        found = [names[r] for r in roles if r in names]
        if not found:
            raise ValueError(
                f"no {'/'.join(roles)} layer in a {family.display_name} encoder (its roles: {', '.join(names)})"
            )
        return layer_key_pattern(family) + "(?:" + "|".join(re.escape(n) for n in found) + ")"

    def tuner_role(self, key: str) -> str | None:
        """The role of encoder module ``key`` (a peft module key), or None when it is no encoder layer's part."""
        import re

        from .encoders.base import layer_key_pattern

        family = self.config.encoder_family
        match = re.match(layer_key_pattern(family), key)
        if match is None:
            return None
        rest = key[match.end() :]
        return next((role for role, name in family.role_names(self.config.vision_config).items() if name == rest), None)

    def tuner_encoder_signature(self) -> tuple[str, int, int]:
        """(family name, hidden size, number of layers): what an adapter trained on this encoder records."""
        family, vision = self.config.encoder_family, self.config.vision_config
        return family.name, family.hidden_size(vision), family.num_layers(vision)

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
            if x.dim() != 4:
                raise ValueError(f"pixel_values[{name!r}] must be (B, {channels}, H, W), got {tuple(x.shape)}")
            if x.shape[1] != channels:
                raise ValueError(
                    f"pixel_values[{name!r}] has {x.shape[1]} channels, but the model's modality {name!r} takes "
                    f"{channels} (shape {tuple(x.shape)})"
                )
            if x.shape[-2:] != (size, size):
                raise ValueError(
                    f"pixel_values[{name!r}] is {x.shape[-2]}x{x.shape[-1]}; this model takes {size}x{size} "
                    "chips (vision_config.image_size); use sliding windows for larger scenes"
                )
            if batch is not None and x.shape[0] != batch:
                raise ValueError(f"pixel_values[{name!r}] has batch {x.shape[0]}, the first modality {batch}")
            batch = x.shape[0]
            x = (x - getattr(self, f"_mean_{name}")) / getattr(self, f"_std_{name}")
            if needs_stem(channels):
                x = getattr(self, stem_name(name))(x.float())
            streams.append(x.expand(-1, 3, -1, -1) if channels == 1 else x)
        return torch.cat(streams, dim=0).to(self._input_dtype())

    def _input_dtype(self) -> torch.dtype:
        """The dtype of the encoder's patch embedding (its first convolution; bf16 when the frozen weights are)."""
        for module in self.vision_encoder.modules():
            if isinstance(module, nn.Conv2d):
                return module.weight.dtype
        return torch.float32

    def encode(self, pixel_values: dict[str, torch.Tensor]) -> Features:
        """Encoder features of each modality: M maps (B, 256, S/16, S/16), or for a hierarchical encoder M lists
        of four maps (B, 256, S/4 ... S/32)."""
        stacked = self.stack_modalities(pixel_values)
        maps = self.config.encoder_family.feature_maps(self.vision_encoder, stacked)
        if self.neck is not None:
            maps = self.neck(maps[0].float()) if len(maps) == 1 else self.neck([m.float() for m in maps])
            maps = [maps] if isinstance(maps, torch.Tensor) else maps
        num = len(self.config.modalities)
        per_level = [m.float().unflatten(0, (num, -1)).unbind(0) for m in maps]
        if len(per_level) == 1:
            return list(per_level[0])
        return [[level[m] for level in per_level] for m in range(num)]

    def decode(self, features: Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """The head: M encoder maps (B, 256, S/16, S/16) (or M lists of four level maps) -> logits
        (B, num_labels, S, S).

        With the DFM: pyramids (or the encoder's own levels), SE-Fusion, UNetFormer decoder with skips; without:
        the 1/16 maps summed and decoded.
        """
        size = (self.config.image_size, self.config.image_size)
        if self.fusion is not None:
            return self.decoder(self.fusion(list(features)), size)
        maps = [f[2] if not isinstance(f, torch.Tensor) else f for f in features]
        return self.decoder(torch.stack(maps).sum(0), size)

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
            output_hidden_states: also return the per-modality encoder features (`encode`).

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
        hidden_states: Any = tuple(features) if output_hidden_states else None
        if return_dict is False:
            output: tuple[Any, ...] = (logits, hidden_states) if hidden_states is not None else (logits,)
            return (loss, *output) if loss is not None else output
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    @classmethod
    def from_encoder(
        cls,
        encoder: str | Path | EncoderWeights | PreTrainedModel,
        config: MFNetConfig | None = None,
        *,
        attn_implementation: str | None = None,
        **config_kwargs: Any,
    ) -> MFNetForSegmentation:
        """A new MFNet (untrained head) around a frozen encoder of any supported family.

        ``encoder`` is a Hub id, folder, SAM ``.pth`` or ``random:<family>-<size>`` to load (the family is read from
        its config; ``encoder_name_or_path`` records it), an `EncoderWeights`, or a loaded transformers encoder
        (`SamVisionModel`, `Dinov2Model`, ...; ``config`` is then required and keeps its
        ``encoder_name_or_path``). ``config_kwargs`` build the `MFNetConfig` when ``config`` is None (e.g.
        ``id2label``, ``modalities``, ``use_dfm``); ``image_size`` (default 256) and ``rel_pos`` choose how the
        encoder is resized.
        """
        from .encoders.registry import load_encoder, vision_config_from

        if isinstance(encoder, PreTrainedModel):
            if config is None:
                raise TypeError("from_encoder(loaded encoder) needs the MFNetConfig to build")
            config.vision_config = vision_config_from(encoder.config)
            module = getattr(encoder, "vision_encoder", encoder)
            return cls._around_encoder(module.state_dict(), config)
        if isinstance(encoder, EncoderWeights):
            weights = encoder
        else:
            image_size = int(config_kwargs.pop("image_size", config.image_size if config is not None else 256))
            rel_pos = config_kwargs.pop("rel_pos", config.rel_pos if config is not None else "pretrained")
            weights = load_encoder(
                str(encoder), image_size=image_size, rel_pos=rel_pos, attn_implementation=attn_implementation
            )
            config_kwargs["rel_pos"] = rel_pos
        if config is None:
            config = MFNetConfig(vision_config=weights.config, **config_kwargs)
        else:
            config.vision_config = weights.config
            config.rel_pos = config_kwargs.get("rel_pos", config.rel_pos)
        config.encoder_name_or_path = weights.name_or_path
        return cls._around_encoder(weights.state_dict, config)

    # SAM was the first encoder: `from_sam` stays as the same constructor.
    from_sam = from_encoder

    @classmethod
    def _around_encoder(cls, state_dict: Any, config: MFNetConfig) -> MFNetForSegmentation:
        model = cls(config)
        model.vision_encoder.load_state_dict(dict(state_dict))
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

        For an adapter folder (``adapter_config.json`` + ``config.json``) the frozen encoder is loaded from the
        config's ``encoder_name_or_path`` or from ``base_model`` (e.g. a local copy), resized, the tuner injected and
        the trained weights loaded; a `peft.PeftModel` is returned (``is_trainable=True`` continues training).
        Weights are read from safetensors only: a pickle (``pytorch_model.bin``, ``adapter_model.bin``) is refused
        unopened.

        Raises:
            ValueError: a folder that is no MFNet model, a config value out of range, weights that do not match
                their configs; the message names the file, the field and the value.
            EncoderLoadError: the base encoder cannot be loaded.
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
