"""Loading an MFNet adapter folder: config.json + adapter_config.json + adapter_model.safetensors (+ README.md).

The folder holds only what was trained (tuner weights, DFM and decoder); the frozen SAM comes from
``sam_name_or_path`` in ``config.json`` or from a ``base_model`` override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .configuration_mfnet import MFNetConfig
from .sam import load_sam_vision_encoder, size_name

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
ADAPTER_FILES = (MODEL_CONFIG, ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")


def find_adapter_folder(name_or_path: str | Path, **hub_kwargs: Any) -> Path | None:
    """The local folder of an MFNet adapter (downloading a Hub repo if needed), or None for other checkpoints."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path if (path / ADAPTER_CONFIG).is_file() else None
    if path.exists():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = snapshot_download(
            str(name_or_path),
            allow_patterns=list(ADAPTER_FILES),
            revision=hub_kwargs.get("revision"),
            cache_dir=hub_kwargs.get("cache_dir"),
            token=hub_kwargs.get("token"),
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, OSError, ValueError) as error:
        raise OSError(
            f"{name_or_path}: no such folder, and it could not be fetched from the Hugging Face Hub ({error})"
        ) from error
    local = Path(folder)
    return local if (local / ADAPTER_CONFIG).is_file() else None


def check_adapter_folder(folder: Path) -> tuple[MFNetConfig, dict[str, Any]]:
    """Validate an adapter folder and return (MFNet config, adapter config dict); errors name file and problem."""
    from .modeling_mfnet import read_json

    if not (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{folder}: no {ADAPTER_CONFIG}; this folder is not an mfpeft adapter")
    adapter = read_json(folder / ADAPTER_CONFIG)
    peft_type = adapter.get("peft_type")
    if peft_type not in ("MMLORA", "MMADAPTER"):
        raise ValueError(
            f"{folder / ADAPTER_CONFIG}: peft_type {peft_type!r} is not an mfpeft tuner (MMLORA/MMADAPTER)"
        )
    if not (folder / MODEL_CONFIG).is_file():
        raise ValueError(f"{folder}: no {MODEL_CONFIG}; this adapter was not saved from an MFNet model")
    raw = read_json(folder / MODEL_CONFIG)
    if raw.get("model_type") != "mfnet":
        raise ValueError(f"{folder / MODEL_CONFIG}: model_type {raw.get('model_type')!r} is not 'mfnet'")
    config = MFNetConfig.from_pretrained(str(folder))
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{folder}: no {ADAPTER_WEIGHTS}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights}: corrupt or unreadable safetensors file ({error})") from error
    # The classifier is the head's only 1x1 convolution: (num_labels, C, 1, 1).
    head = [s for k, s in shapes.items() if ".decoder.head." in k and len(s) == 4 and s[-1] == 1]
    if head and head[0][0] != config.num_labels:
        raise ValueError(
            f"{weights}: the decoder predicts {head[0][0]} classes but {folder / MODEL_CONFIG} says "
            f"num_labels={config.num_labels}"
        )
    return config, adapter


def load_mfnet_adapter(
    model_cls: Any,
    folder: Path,
    *,
    base_model: str | Path | None = None,
    is_trainable: bool = False,
    adapter_name: str = "default",
    num_labels: int | None = None,
    **_: Any,
) -> Any:
    """Build MFNet around SAM, inject the saved tuner and load its weights; returns a `peft.PeftModel`."""
    from peft import PeftModel

    config, _ = check_adapter_folder(folder)
    if num_labels is not None and num_labels != config.num_labels:
        raise ValueError(f"num_labels={num_labels} does not match the adapter's {config.num_labels} classes")
    source = str(base_model) if base_model is not None else config.sam_name_or_path
    sam = load_sam_vision_encoder(
        source,
        image_size=config.image_size,
        rel_pos=config.rel_pos,  # type: ignore[arg-type]
        attn_implementation=getattr(config.vision_config, "_attn_implementation", None),
    )
    trained = config.vision_config
    if (sam.config.hidden_size, sam.config.num_hidden_layers) != (trained.hidden_size, trained.num_hidden_layers):
        raise ValueError(
            f"base SAM {source!r} is {size_name(sam.config)}, but the adapter in {folder} was trained on "
            f"{size_name(trained)}; pass the matching SAM with base_model="
        )
    config.vision_config = sam.config
    model = model_cls(config)
    model.vision_encoder.load_state_dict(sam.vision_encoder.state_dict())
    model.vision_encoder.requires_grad_(False)
    model.name_or_path = str(folder)
    peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name, is_trainable=is_trainable)
    if not is_trainable:
        peft_model.eval()
    return peft_model


def push_adapter_to_hub(
    peft_model: Any, repo_id: str, *, private: bool | None = None, token: str | None = None, commit_message: str = ""
) -> str:
    """Upload an MFNet adapter folder (the four files of `ADAPTER_FILES`) with its filled model card.

    `PeftModel.push_to_hub` uploads the same files but replaces README.md with the Hub's generic card.
    Returns the commit URL.
    """
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name))
            for name in ADAPTER_FILES
            if (Path(folder) / name).is_file()
        ]
        info = api.create_commit(
            repo_id=repo, operations=operations, commit_message=commit_message or "Upload MFNet adapter with mfpeft"
        )
    return str(info.commit_url)
