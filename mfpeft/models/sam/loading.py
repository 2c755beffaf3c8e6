"""SAM image encoders from Hugging Face or Meta checkpoints, resized for small remote-sensing chips.

SAM was pre-trained on 1024 x 1024 images (a 64 x 64 patch grid). MFNet feeds 256 x 256 chips (16 x 16 patches),
so two tensors change shape: the absolute ``pos_embed`` (resized bicubically, align_corners=False) and the
relative-position tables of the global-attention layers (127 -> 31 rows, resized linearly like SAM's own
``get_rel_pos``). We resize once at load time; resizing at every forward, as the reference code does, gives the
same numbers for more work.
"""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import SamVisionConfig, SamVisionModel

from ..load_errors import EncoderLoadError

RelPosMode = Literal["pretrained", "zero"]
REL_POS_MODES: tuple[str, ...] = ("pretrained", "zero")


@dataclass(frozen=True)
class SamSize:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    global_attn_indexes: tuple[int, ...]


SAM_SIZES: dict[str, SamSize] = {
    "vit-b": SamSize(768, 12, 12, (2, 5, 8, 11)),
    "vit-l": SamSize(1024, 24, 16, (5, 11, 17, 23)),
    "vit-h": SamSize(1280, 32, 16, (7, 15, 23, 31)),
    # Not a SAM release: a small encoder of the same shape for demos and pipeline checks on a CPU.
    "tiny": SamSize(96, 4, 4, (1, 3)),
}


class SamLoadError(EncoderLoadError):
    """A SAM checkpoint could not be found or read."""


# Weight files that are pickles: unpickling runs whatever code the file names, so mfpeft never opens them
# (Meta's SAM .pth is the one exception, read with ``torch.load(weights_only=True)``, which executes nothing).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def find_safetensors(folder: Path, name: str) -> Path | None:
    """`folder / name` (or its sharded ``.index.json``) when present, else None; refuses a folder of pickles.

    The one check behind every folder mfpeft reads weights from (adapter, full MFNet checkpoint, SAM).

    Raises:
        ValueError: the weights are there only as a pickle (``pytorch_model.bin``, ``adapter_model.bin``, ...).
    """
    for candidate in (folder / name, folder / f"{name}.index.json"):
        if candidate.is_file():
            return candidate
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise ValueError(
            f"{pickles[0]} is a pickle; mfpeft loads only safetensors ({name}), because unpickling a file can run "
            "any code in it. If you trust the file, re-save the model with save_pretrained(), which writes "
            "safetensors"
        )
    return None


def sam_vision_config(size: str, image_size: int = 256, **overrides: Any) -> SamVisionConfig:
    """Return the `SamVisionConfig` of a SAM encoder size ("vit-b", "vit-l", "vit-h" or "tiny") at `image_size`."""
    key = size.lower().replace("_", "-")
    if key not in SAM_SIZES:
        raise ValueError(f"size={size!r} is not a known SAM encoder size; expected one of {sorted(SAM_SIZES)}")
    _check_image_size(image_size)
    spec = SAM_SIZES[key]
    return SamVisionConfig(
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        global_attn_indexes=list(spec.global_attn_indexes),
        image_size=image_size,
        **overrides,
    )


def size_name(config: SamVisionConfig) -> str:
    """The size name ("vit-b", ...) matching `config`, or a description of its shape if none does."""
    for name, spec in SAM_SIZES.items():
        if (config.hidden_size, config.num_hidden_layers) == (spec.hidden_size, spec.num_hidden_layers):
            return name
    return f"custom (hidden {config.hidden_size}, {config.num_hidden_layers} layers)"


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size <= 0 or image_size % 16:
        raise ValueError(f"image_size={image_size!r} must be a positive multiple of the 16-pixel patch size")


# ---------------------------------------------------------------------------------------------------------------
# Resizing


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize an absolute position embedding (1, G, G, D) to (1, grid, grid, D), bicubic, align_corners=False."""
    if pos_embed.shape[1] == grid and pos_embed.shape[2] == grid:
        return pos_embed
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bicubic", align_corners=False
    )
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resize_rel_pos(rel_pos: torch.Tensor, rows: int) -> torch.Tensor:
    """Resize a relative-position table (L, head_dim) to (rows, head_dim) linearly, as SAM's `get_rel_pos` does."""
    if rel_pos.shape[0] == rows:
        return rel_pos
    resized = F.interpolate(rel_pos.float().t().unsqueeze(0), size=rows, mode="linear")
    return resized.squeeze(0).t().to(rel_pos.dtype).contiguous()


def resize_state_dict(state_dict: dict[str, torch.Tensor], config: SamVisionConfig) -> dict[str, torch.Tensor]:
    """Resize the size-dependent tensors of a `SamVisionModel` state dict to `config.image_size`.

    Keys are HF names with the ``vision_encoder.`` prefix. Window layers keep their (2·window - 1)-row tables.
    """
    grid = int(config.image_size) // int(config.patch_size)  # type: ignore[arg-type]
    out = dict(state_dict)
    key = "vision_encoder.pos_embed"
    if key in out:
        out[key] = resize_pos_embed(out[key], grid)
    for index in config.global_attn_indexes:
        for axis in ("h", "w"):
            key = f"vision_encoder.layers.{index}.attn.rel_pos_{axis}"
            if key in out:
                out[key] = resize_rel_pos(out[key], 2 * grid - 1)
    return out


def zero_rel_pos(model: SamVisionModel) -> None:
    """Zero every relative-position table and freeze it (the setting behind the published MFNet numbers)."""
    for name, param in model.named_parameters():
        if name.endswith(("rel_pos_h", "rel_pos_w")):
            with torch.no_grad():
                param.zero_()
            param.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
# Meta's original checkpoints (segment_anything ``sam_vit_*.pth``)

_META_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.", r"layers.\1."),
    (r"^neck\.0\.", "neck.conv1."),
    (r"^neck\.1\.", "neck.layer_norm1."),
    (r"^neck\.2\.", "neck.conv2."),
    (r"^neck\.3\.", "neck.layer_norm2."),
)


def is_meta_state_dict(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("image_encoder.", "blocks.0.")) for k in state_dict)


def convert_meta_state_dict(
    state_dict: dict[str, torch.Tensor], source: str = "<state dict>"
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    """Convert Meta's SAM state dict to (native-size `SamVisionConfig`, HF `SamVisionModel` state dict).

    The prompt encoder and mask decoder are dropped: MFNet does not use them.
    """
    encoder = {
        k.removeprefix("image_encoder."): v
        for k, v in state_dict.items()
        if not k.startswith(("prompt_encoder.", "mask_decoder.", "pixel_mean", "pixel_std"))
    }
    if "patch_embed.proj.weight" not in encoder or "pos_embed" not in encoder:
        raise SamLoadError(f"{source}: not a SAM image-encoder checkpoint (no patch_embed.proj.weight / pos_embed)")
    hidden = encoder["patch_embed.proj.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in encoder if (m := re.match(r"blocks\.(\d+)\.", k)))
    match = [n for n, s in SAM_SIZES.items() if (s.hidden_size, s.num_hidden_layers) == (hidden, layers)]
    if not match:
        raise SamLoadError(f"{source}: encoder of hidden size {hidden} and {layers} blocks matches no SAM size")
    grid = encoder["pos_embed"].shape[1]
    config = sam_vision_config(match[0], image_size=grid * 16)
    converted: dict[str, torch.Tensor] = {}
    for key, value in encoder.items():
        new = key
        for pattern, repl in _META_RENAMES:
            new, count = re.subn(pattern, repl, new)
            if count:
                break
        converted[f"vision_encoder.{new}"] = value
    return config, converted


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_sam_vision_encoder(
    name_or_path: str | Path,
    image_size: int = 256,
    rel_pos: RelPosMode = "pretrained",
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    attn_implementation: str | None = None,
) -> SamVisionModel:
    """Load SAM's image encoder and resize it to `image_size`.

    Args:
        name_or_path: a Hub id or local folder of a transformers `SamModel` / `SamVisionModel` checkpoint, or a
            Meta ``sam_vit_*.pth`` file (read with ``weights_only=True``) or a ``.safetensors`` file of either layout.
        image_size: the chip size the encoder will see (a multiple of 16).
        rel_pos: "pretrained" keeps SAM's relative-position tables (resized); "zero" zeroes and freezes them all,
            which is what the published MFNet numbers used.
        attn_implementation: "eager" or "sdpa" (transformers' default when None).

    Returns:
        A `SamVisionModel` whose config has ``image_size``; its ``vision_encoder`` takes (B, 3, S, S) inputs.
    """
    _check_image_size(image_size)
    if rel_pos not in REL_POS_MODES:
        raise ValueError(f"rel_pos={rel_pos!r} must be one of {REL_POS_MODES}")
    native_config, state_dict = _read_checkpoint(name_or_path, revision=revision, cache_dir=cache_dir)
    config = copy.deepcopy(native_config)
    config.image_size = image_size
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    model = SamVisionModel(config)
    state_dict = resize_state_dict(state_dict, config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise SamLoadError(f"{name_or_path}: checkpoint lacks {len(missing)} encoder weights, e.g. {missing[:3]}")
    for key, tensor in expected.items():
        if state_dict[key].shape != tensor.shape:
            raise SamLoadError(
                f"{name_or_path}: weight {key} has shape {tuple(state_dict[key].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: state_dict[k] for k in expected}, strict=True)
    if rel_pos == "zero":
        zero_rel_pos(model)
    model.name_or_path = str(name_or_path)
    model.eval()
    return model


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-file progress bars and loading reports (we raise on what matters)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _read_checkpoint(
    name_or_path: str | Path, *, revision: str | None, cache_dir: str | Path | None
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir() or _looks_like_hub_id(str(name_or_path)):
        return _read_pretrained(str(path) if path.is_dir() else str(name_or_path), revision, cache_dir)
    raise SamLoadError(f"SAM checkpoint {str(name_or_path)!r} not found: it is neither a file, a folder, nor a Hub id")


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None and not name.endswith((".pth", ".pt"))


def _read_file(path: Path) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise SamLoadError(f"{path}: not a readable safetensors file ({error})") from error
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message is a page long and suggests weights_only=False: say what was refused, in one line.
            found = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed global|\n\n|$)", str(error), re.S)
            reason = " ".join(found.group(1).split()) if found and found.group(1).strip() else "not plain tensors"
            raise SamLoadError(
                f"{path}: not a readable PyTorch weights file ({reason}); mfpeft reads .pth files only as plain "
                "tensors (torch.load with weights_only=True), never running code from them: use Meta's "
                "sam_vit_*.pth as released, a transformers SAM folder or a .safetensors file"
            ) from None
        except Exception as error:  # torch raises several types for corrupt or truncated files
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise SamLoadError(
                f"{path}: not a readable PyTorch weights file ({type(error).__name__}: {first})"
            ) from error
        if isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
            loaded = loaded["model"]
        if not isinstance(loaded, dict):
            raise SamLoadError(f"{path}: expected a state dict, found {type(loaded).__name__}")
        state_dict = loaded
    if is_meta_state_dict(state_dict):
        return convert_meta_state_dict(state_dict, source=str(path))
    raise SamLoadError(
        f"{path}: not a Meta SAM checkpoint (no image_encoder.* keys); for a transformers checkpoint pass its folder"
    )


def _read_pretrained(
    name: str, revision: str | None, cache_dir: str | Path | None
) -> tuple[SamVisionConfig, dict[str, torch.Tensor]]:
    from transformers import AutoConfig, SamConfig

    folder = Path(name)
    if folder.is_dir() and find_safetensors(folder, "model.safetensors") is None:
        raise SamLoadError(f"{folder}: no model.safetensors; a SAM folder holds config.json and model.safetensors")
    try:
        config = AutoConfig.from_pretrained(name, revision=revision, cache_dir=cache_dir)
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SamLoadError(
            f"Could not load SAM {name!r} ({reason}). Without access to the Hugging Face Hub, download it elsewhere "
            f"(`huggingface-cli download {name}`) and pass the local folder or Meta's sam_vit_*.pth file instead."
        ) from error
    vision_config: SamVisionConfig
    if isinstance(config, SamConfig):
        vision_config = config.vision_config  # type: ignore[assignment]
    elif isinstance(config, SamVisionConfig):
        vision_config = config
    else:
        raise SamLoadError(f"{name}: config model_type {config.model_type!r} is not a SAM model")
    try:
        with _quiet_transformers():
            loaded: Any = SamVisionModel.from_pretrained(
                name,
                config=vision_config,
                revision=revision or "main",
                cache_dir=cache_dir,
                output_loading_info=True,
                use_safetensors=True,  # never a pytorch_model.bin pickle, from a folder or the Hub
            )
        model, info = loaded
    except (OSError, ValueError, RuntimeError) as error:
        raise SamLoadError(f"Could not read the SAM weights of {name!r}: {error}") from error
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise SamLoadError(f"{name}: checkpoint lacks {len(missing)} encoder weights, e.g. {missing[:3]}")
    return vision_config, model.state_dict()


def random_sam_vision_model(size: str, image_size: int = 256, seed: int = 0) -> SamVisionModel:
    """A randomly initialised SAM encoder at a usable scale (pipeline checks, benchmarks; not for real use).

    SAM's own `initializer_range` (1e-10) makes every output nearly constant, so weights are drawn like a ViT's:
    truncated normal (std 0.02) for linear and convolution weights, small position tables, unit layer norms.
    """
    generator = torch.Generator().manual_seed(seed)
    model = SamVisionModel(sam_vision_config(size, image_size=image_size))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                continue
            param.copy_(torch.randn(param.shape, generator=generator).clamp_(-2, 2) * 0.02)
    model.name_or_path = f"random:{size}"
    return model.eval()


def save_quietly(model: SamVisionModel, folder: str | Path) -> None:
    """`save_pretrained` without transformers' progress bars."""
    with _quiet_transformers():
        model.save_pretrained(folder)
