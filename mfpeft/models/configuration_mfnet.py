"""`MFNetConfig`: everything needed to rebuild an MFNet around a frozen encoder (SAM or another supported family)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

from ..common.classes import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE
from ..common.label_encoding import LabelEncoding
from ..common.scaling import Scaling
from ..common.validation import check_number, numbers_list
from .encoders.base import EncoderFamily
from .encoders.registry import family_of, vision_config_from
from .fusion import QUARTER_NORMS
from .sam.loading import REL_POS_MODES

DEFAULT_MODALITIES: tuple[tuple[str, int], ...] = (("optical", 3), ("dsm", 1))
MAX_CHANNELS = 256  # a hyperspectral cube; more is almost surely a wrong axis


class MFNetConfig(PreTrainedConfig):
    """Configuration of `MFNetForSegmentation`.

    Args:
        vision_config: the encoder's transformers config, of any supported family (`SamVisionConfig`, SAM-HQ's,
            `Sam2HieraDetConfig` / `Sam2VisionConfig`, `Dinov2Config`, `Dinov2WithRegistersConfig`,
            `DINOv3ViTConfig`; a full model's config gives its encoder's) or its dict; the family is inferred
            (`encoder_family`). Default: SAM ViT-B at 256 x 256.
        modalities: (name, channels) per modality, in the order they are stacked. A 1-channel modality (e.g. a DSM)
            is repeated to 3 channels for the encoder's patch embedding, a 3-channel one goes in as it is; any other
            count (4-band RGBIR, 13-band Sentinel-2, 2-band SAR) goes through a small trainable input stem
            (`mfpeft.models.input_stem.InputStem`, saved with the adapter) onto the 3 channels.
        id2label: class names; `num_labels` follows from it. Default: the 6 ISPRS classes.
        palette: RGB colour of each class (used for previews, colour tables, label decoding).
        input_mean, input_std: per-modality normalisation the model applies, ``(x - mean) / std`` per channel,
            after the data pipeline's scaling; identity by default (MFNet does not apply SAM's mean/std).
        input_scaling: per-modality raw -> input scaling (`mfpeft.common.scaling.Scaling.to_dict()`, concrete
            numbers: a ``stats`` scaling is recorded as the per-band range it resolved to), recorded once by
            training so that evaluation and prediction read rasters exactly as training did
            (`mfpeft.data.scaling.model_input_scaling`). Each entry is checked when the config is built.
        encoder_name_or_path: where the frozen encoder's weights come from (Hub id, folder or SAM's Meta ``.pth``);
            ``sam_name_or_path``, the older name, is read too and stays an alias of the attribute.
        rel_pos: "pretrained" (SAM's relative-position tables, resized) or "zero" (all zero and frozen, the
            setting behind the published numbers); SAM and SAM-HQ only.
        use_dfm: Deep Fusion Module on; False is the Table V ablation (neck maps summed, decoded without skips).
        quarter_norms: the 1/4-level norm of each modality's pyramid ("layernorm" / "batchnorm"); default
            LayerNorm for the first modality, BatchNorm for the others (the reference code's choice).
        decode_channels, decoder_window_size, decoder_dropout: UNetFormer decoder settings.
        semantic_loss_ignore_index: label value ignored by the loss (`IGNORE_INDEX`, 255).
        score_classes: class indices averaged in mF1 / mIoU (ISPRS: 0-4, clutter excluded); None = all.
        label_encoding: how the label rasters of the training data encode the classes
            (`mfpeft.common.label_encoding.LabelEncoding.to_dict()`: kind, classes, palette, code map with ``"*"``
            for every other code, nodata), so that evaluation and prediction read raw labels without the code map
            again.
            Its classes must be ``id2label``'s and its palette ``palette``. None: not recorded (older models).
        evaluation_results: metrics measured on this model (written to the model card).
        training_hyperparameters: how the weights were trained (optimizer, learning rate, steps, ...; written to the
            model card).
        padding_free_encoder: run SAM's window layers without the window padding's wasted work (about 1.4x
            faster at 256 x 256, equal to the stock layers up to float rounding; see `mfpeft.optimize_sam_encoder`).
            False keeps transformers' layers as they come.
    """

    model_type = "mfnet"
    sub_configs = {"vision_config": AutoConfig}
    attribute_map = {"sam_name_or_path": "encoder_name_or_path"}

    def __init__(
        self,
        vision_config: PreTrainedConfig | Mapping[str, Any] | None = None,
        modalities: Sequence[Sequence[Any]] = DEFAULT_MODALITIES,
        palette: Sequence[Sequence[int]] | None = None,
        input_mean: Mapping[str, Sequence[float]] | None = None,
        input_std: Mapping[str, Sequence[float]] | None = None,
        input_scaling: Mapping[str, Mapping[str, Any]] | None = None,
        encoder_name_or_path: str = "facebook/sam-vit-base",
        rel_pos: str = "pretrained",
        use_dfm: bool = True,
        quarter_norms: Sequence[str] | None = None,
        decode_channels: int = 64,
        decoder_window_size: int = 8,
        decoder_dropout: float = 0.1,
        semantic_loss_ignore_index: int = IGNORE_INDEX,
        score_classes: Sequence[int] | None = None,
        evaluation_results: Mapping[str, Any] | None = None,
        training_hyperparameters: Mapping[str, Any] | None = None,
        padding_free_encoder: bool = True,
        label_encoding: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "id2label" not in kwargs and "num_labels" not in kwargs:  # the ISPRS classes, colours and scored ones
            kwargs["id2label"] = dict(enumerate(ISPRS_CLASSES))
            palette = ISPRS_PALETTE if palette is None else palette
            score_classes = list(range(5)) if score_classes is None else score_classes
        self.vision_config = vision_config_from(vision_config)
        self._set_inputs(modalities, palette, input_mean, input_std, input_scaling)
        self.encoder_name_or_path = str(kwargs.pop("sam_name_or_path", encoder_name_or_path))
        self.rel_pos = rel_pos
        self.use_dfm = use_dfm
        self.quarter_norms = (
            list(quarter_norms)
            if quarter_norms is not None
            else ["layernorm"] + ["batchnorm"] * (len(self.modalities) - 1)
        )
        self.decode_channels = decode_channels
        self.decoder_window_size = decoder_window_size
        self.decoder_dropout = decoder_dropout
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.score_classes = list(score_classes) if score_classes is not None else None
        self.evaluation_results = dict(evaluation_results) if evaluation_results else None
        self.training_hyperparameters = dict(training_hyperparameters) if training_hyperparameters else None
        self.padding_free_encoder = padding_free_encoder
        self.label_encoding = dict(label_encoding) if label_encoding is not None else None
        super().__init__(**kwargs)
        self.validate_mfnet()

    def _set_inputs(
        self,
        modalities: Sequence[Sequence[Any]],
        palette: Sequence[Sequence[int]] | None,
        input_mean: Mapping[str, Sequence[float]] | None,
        input_std: Mapping[str, Sequence[float]] | None,
        input_scaling: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        """The modalities, palette and per-modality input fields as JSON-ready lists and dicts; a value that is
        not a number (list) is a ValueError naming the field (`validate_mfnet` checks the rest)."""
        self.modalities: list[list[Any]] = [
            [str(name), *numbers_list(f"modalities: {name!r} channels", [channels], integer=True)]
            for name, channels in modalities
        ]
        self.palette = [numbers_list("palette", c, integer=True) for c in palette] if palette is not None else None
        self.input_mean = {k: numbers_list(f"input_mean[{k!r}]", v) for k, v in (input_mean or {}).items()}
        self.input_std = {k: numbers_list(f"input_std[{k!r}]", v) for k, v in (input_std or {}).items()}
        self.input_scaling = {k: dict(v) for k, v in (input_scaling or {}).items()}

    @property
    def modality_names(self) -> list[str]:
        return [str(name) for name, _ in self.modalities]

    @property
    def modality_channels(self) -> dict[str, int]:
        return {str(name): int(channels) for name, channels in self.modalities}

    @property
    def encoder_family(self) -> EncoderFamily:
        """The family of ``vision_config`` (`mfpeft.models.encoders`): how MFNet builds, loads and tunes it."""
        return family_of(self.vision_config)

    @property
    def image_size(self) -> int:
        return self.encoder_family.image_size(self.vision_config)

    def validate_mfnet(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        if not isinstance(self.padding_free_encoder, bool):
            raise ValueError(f"padding_free_encoder={self.padding_free_encoder!r} must be True or False")
        self._validate_modalities()
        names = self.modality_names
        for field in ("input_mean", "input_std", "input_scaling"):
            unknown = sorted(set(getattr(self, field)) - set(names))
            if unknown:
                raise ValueError(f"{field} names unknown modalities {unknown}; modalities are {names}")
        self._validate_input_scaling()
        for field in ("input_mean", "input_std"):
            for name, values in getattr(self, field).items():
                if len(values) != self.modality_channels[name]:
                    raise ValueError(f"{field}[{name!r}]={values} needs one value per channel")
                for value in values:
                    low = 0 if field == "input_std" else None  # a std divides: zero or negative is no scale
                    check_number(f"{field}[{name!r}]", value, low, low_open=True)
        if self.rel_pos not in REL_POS_MODES:
            raise ValueError(f"rel_pos={self.rel_pos!r} must be one of {REL_POS_MODES}")
        family = self.encoder_family
        if self.rel_pos != "pretrained" and not family.has_rel_pos:
            raise ValueError(f"rel_pos={self.rel_pos!r} applies to SAM encoders; this encoder is {family.display_name}")
        if len(self.quarter_norms) != len(names) or any(q not in QUARTER_NORMS for q in self.quarter_norms):
            raise ValueError(f"quarter_norms={self.quarter_norms!r} needs one of {QUARTER_NORMS} per modality")
        self._validate_labels()
        self._validate_decoder()
        family.validate(self.vision_config)

    def _validate_modalities(self) -> None:
        """At least one modality, distinct names (no '.': they name the input stems), 1-256 channels each."""
        names = self.modality_names
        if not names:
            raise ValueError("modalities=[] must name at least one modality")
        if len(set(names)) != len(names):
            raise ValueError(f"modalities={self.modalities!r} repeats a name")
        for name, channels in self.modalities:
            if not name or "." in name:
                raise ValueError(f"modalities: name {name!r} must be non-empty and without '.'")
            check_number(f"modalities: {name!r} channels", channels, 1, MAX_CHANNELS, integer=True)

    def _validate_labels(self) -> None:
        """The class-indexed fields: palette, score_classes, semantic_loss_ignore_index."""
        num_labels = int(self.num_labels or 0)
        if self.palette is not None and (
            len(self.palette) != num_labels or any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in self.palette)
        ):
            raise ValueError(f"palette needs {num_labels} RGB colours in 0-255, got {self.palette!r}")
        for index in self.score_classes or []:
            if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < num_labels:
                raise ValueError(f"score_classes={self.score_classes!r} must index the {num_labels} labels")
        self._validate_label_encoding()
        ignore = self.semantic_loss_ignore_index
        check_number("semantic_loss_ignore_index", ignore, integer=True)
        if 0 <= ignore < num_labels:  # the loss would silently never learn that class
            raise ValueError(
                f"semantic_loss_ignore_index={ignore} is one of the class indices 0-{num_labels - 1}; use a "
                "value outside them (e.g. 255)"
            )

    def _validate_label_encoding(self) -> None:
        """``label_encoding`` is a valid encoding of exactly the model's classes and palette (stored canonical)."""
        if self.label_encoding is None:
            return
        encoding = LabelEncoding.from_dict(self.label_encoding, "label_encoding")
        id2label = {int(k): str(v) for k, v in (self.id2label or {}).items()}
        names = [id2label.get(k, f"LABEL_{k}") for k in range(int(self.num_labels or 0))]
        if list(encoding.classes) != names:
            raise ValueError(f"label_encoding.classes={list(encoding.classes)} must be the id2label names {names}")
        colours = [list(c) for c in encoding.palette]
        if self.palette is None:
            self.palette = colours
        elif colours != [list(c) for c in self.palette]:
            raise ValueError(f"label_encoding.palette={colours} must be palette={self.palette}")
        self.label_encoding = encoding.to_dict()

    def _validate_input_scaling(self) -> None:
        """Every ``input_scaling`` entry reads as a `Scaling`; an unresolved ``stats`` can never be applied."""
        for name, value in self.input_scaling.items():
            try:
                scaling = Scaling.from_dict(value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"input_scaling[{name!r}]: {error}") from None
            if scaling.mode == "stats":
                raise ValueError(
                    f"input_scaling[{name!r}] is an unresolved {scaling.describe()}; record the "
                    "per-band range it resolved to over the training tiles"
                )

    def _validate_decoder(self) -> None:
        check_number("decode_channels", self.decode_channels, 1, integer=True)
        check_number("decoder_window_size", self.decoder_window_size, 2, integer=True)
        if self.decoder_window_size % 2:
            raise ValueError(f"decoder_window_size={self.decoder_window_size} must be even")
        check_number("decoder_dropout", self.decoder_dropout, 0, 1, high_open=True)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> Any:
        """`PreTrainedConfig.from_pretrained`, with a bad value's error naming the config.json it came from."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except ValueError as error:
            path = Path(pretrained_model_name_or_path).expanduser()
            source = str(path / "config.json") if path.is_dir() else f"{pretrained_model_name_or_path} (config.json)"
            if path.is_file():
                source = str(path)
            if source in str(error):
                raise
            raise ValueError(f"{source}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if isinstance(output.get("vision_config"), PreTrainedConfig):
            output["vision_config"] = output["vision_config"].to_dict()
        return output
