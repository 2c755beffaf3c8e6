"""The one owner of an MFNet adapter folder: config.json + adapter_config.json + adapter_model.safetensors + README.md.

Saving: peft writes the weights and the tuner writes ``adapter_config.json``; `write_model_files` (a save hook of
the tuner configs, `mfpeft.tuners.add_save_hook`) adds ``config.json`` and the model card. Checking, loading and
pushing to the Hub live here too. The folder holds only what was trained (tuner weights, neck, DFM and decoder);
the frozen encoder comes from ``encoder_name_or_path`` in ``config.json`` or from a ``base_model`` override.
Tuners are known only through their self-description (`mfpeft.tuners.MultimodalConfig`) and the registry of
multimodal peft types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..tuners.config import MultimodalConfig, add_save_hook
from ..tuners.registration import is_multimodal_peft_type, multimodal_config_class, registered_peft_types
from .configuration_mfnet import MFNetConfig
from .encoders.base import EncoderLoadError, EncoderWeights
from .encoders.registry import family_of, load_encoder
from .model_card import write_model_card
from .sam.loading import find_safetensors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "config.json"
FULL_WEIGHTS = "model.safetensors"
ADAPTER_FILES = (MODEL_CONFIG, ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md")
BUNDLED_BASE_MODEL = "./base-model"
"""``encoder_name_or_path`` of a model that carries its encoder in its own ``base-model/`` subfolder (a generated
encoder): resolved against the model folder, so the folder loads wherever it is moved, copied or pushed."""


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file when it is unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


@add_save_hook
def write_model_files(save_directory: str, adapter_config: MultimodalConfig) -> None:
    """Beside a saved ``adapter_config.json`` of an adapter on MFNet: ``config.json`` and the model card.

    Runs when peft saves the adapter (`PeftModel.save_pretrained`, `push_to_hub`); an adapter on another model
    (a bare SAM encoder) gets no MFNet files. The model config is the tuned model's current one, so the folder
    alone rebuilds the model.
    """
    model_config = adapter_config.tuned_model_config
    if not isinstance(model_config, MFNetConfig):
        return
    model_config.save_pretrained(save_directory)
    write_model_card(save_directory, model_config.to_dict(), adapter_config)


def resolve_base_model(folder: Path, recorded: str) -> str:
    """Where the encoder a model records is: ``./base-model`` inside ``folder``, anything else as recorded."""
    return str(folder / recorded) if recorded.startswith("./") else recorded


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
            # A bundled encoder (BUNDLED_BASE_MODEL) comes along; repos without one have no such folder.
            allow_patterns=[*ADAPTER_FILES, BUNDLED_BASE_MODEL.removeprefix("./") + "/*"],
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


def _refuse_model_folder(path: Path, reason: str) -> ValueError:
    """The error for a local path that is no model mfpeft can load: what was wrong and what a model folder holds."""
    return ValueError(
        f"{path}: not an mfpeft model folder ({reason}); an adapter folder (what save_pretrained of a tuned model "
        f"writes) holds {MODEL_CONFIG}, {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}, a full MFNet checkpoint "
        f"{MODEL_CONFIG} and {FULL_WEIGHTS}"
    )


def check_checkpoint_folder(name_or_path: str | Path) -> None:
    """Refuse a local path that is neither an adapter folder nor a full MFNet checkpoint in safetensors.

    A Hub id passes (transformers then downloads safetensors only). Raises ValueError naming the path.
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise _refuse_model_folder(path, "it is a file; pass the folder that holds it")
    config_file = path / MODEL_CONFIG
    model_type = read_json(config_file).get("model_type") if config_file.is_file() else None
    if config_file.is_file() and model_type != "mfnet":
        raise ValueError(f"{config_file}: model_type {model_type!r} is not 'mfnet'; this is not an MFNet model")
    weights = find_safetensors(path, FULL_WEIGHTS)  # refuses pytorch_model.bin and other pickles
    if model_type == "mfnet" and weights is not None:
        return
    if (path / ADAPTER_WEIGHTS).is_file():
        raise _refuse_model_folder(path, f"it has {ADAPTER_WEIGHTS} but no {ADAPTER_CONFIG}: restore that file")
    raise _refuse_model_folder(path, f"no {ADAPTER_CONFIG}" + ("" if config_file.is_file() else f" nor {MODEL_CONFIG}"))


def check_adapter_folder(folder: Path) -> tuple[MFNetConfig, Any, dict[str, list[int]]]:
    """Validate an adapter folder: (MFNet config, tuner config, {saved weight: shape}); errors name file and value."""
    if not (folder / ADAPTER_CONFIG).is_file():
        raise _refuse_model_folder(folder, f"no {ADAPTER_CONFIG}")
    peft_type = read_json(folder / ADAPTER_CONFIG).get("peft_type")
    if not is_multimodal_peft_type(peft_type):
        raise ValueError(
            f"{folder / ADAPTER_CONFIG}: peft_type {peft_type!r} is not an mfpeft tuner "
            f"({'/'.join(registered_peft_types())})"
        )
    # Multimodal configs name the file in a bad value's error (their from_pretrained), so no wrapping here.
    peft_config = multimodal_config_class(peft_type).from_pretrained(str(folder))
    if not (folder / MODEL_CONFIG).is_file():
        raise ValueError(f"{folder}: no {MODEL_CONFIG}; this adapter was not saved from an MFNet model")
    raw = read_json(folder / MODEL_CONFIG)
    if raw.get("model_type") != "mfnet":
        raise ValueError(f"{folder / MODEL_CONFIG}: model_type {raw.get('model_type')!r} is not 'mfnet'")
    config = MFNetConfig.from_pretrained(str(folder))
    weights = find_safetensors(folder, ADAPTER_WEIGHTS)  # refuses adapter_model.bin
    if weights is None or weights.name != ADAPTER_WEIGHTS:
        raise ValueError(f"{folder}: no {ADAPTER_WEIGHTS}; the adapter folder is incomplete")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights}: corrupt or unreadable safetensors file ({error})") from error
    # The classifier is the head's only 1x1 convolution: (num_labels, C, 1, 1).
    head = [s for k, s in shapes.items() if ".decoder.head." in k and len(s) == 4 and s[-1] == 1]
    if head and head[0][0] != config.num_labels:
        raise ValueError(
            f"{weights}: the decoder predicts {head[0][0]} classes but {folder / MODEL_CONFIG} says "
            f"num_labels={config.num_labels}"
        )
    return config, peft_config, shapes


def _part(key: str) -> str:
    """The part of MFNet a saved weight belongs to, in words."""
    top = key.removeprefix("base_model.model.").split(".", 1)[0]
    return {"decoder": "the decoder", "fusion": "the Deep Fusion Module (fusion)"}.get(
        top, "the tuner weights of the encoder" if top == "vision_encoder" else top
    )


def check_saved_weights(folder: Path, peft_model: Any, adapter_name: str, shapes: dict[str, list[int]]) -> None:
    """Compare the saved weights with what the two configs built, before loading: one line per kind of mismatch.

    peft would fail on the first missing key (a KeyError) or list every size mismatch of a wrong rank.
    """
    from peft.utils import get_peft_model_state_dict

    expected = {k: list(v.shape) for k, v in get_peft_model_state_dict(peft_model, adapter_name=adapter_name).items()}
    weights = folder / ADAPTER_WEIGHTS
    missing = [k for k in expected if k not in shapes]
    if missing:
        parts = " and ".join(sorted({_part(k) for k in missing}))
        raise ValueError(
            f"{folder}: {ADAPTER_WEIGHTS} lacks {parts} ({len(missing)} weights, e.g. {missing[0]}); the folder is "
            "incomplete or its weights come from another model: copy the whole folder again or re-save the adapter"
        )
    extra = [k for k in shapes if k not in expected]
    if extra:
        parts = " and ".join(sorted({_part(k) for k in extra}))
        raise ValueError(
            f"{weights}: holds {len(extra)} weights of {parts} (e.g. {extra[0]}) that the model built from "
            f"{MODEL_CONFIG} and {ADAPTER_CONFIG} does not have; the configs and the weights come from different "
            "models (e.g. use_dfm or the tuner type differs)"
        )
    config = peft_model.peft_config[adapter_name]
    for key, shape in expected.items():
        if shapes[key] == shape:
            continue
        explanation = config.explain_weight_shape(key, shapes[key], shape)
        if explanation:
            raise ValueError(
                f"{folder / ADAPTER_CONFIG}: {explanation}; restore the {ADAPTER_CONFIG} saved with these weights"
            )
        raise ValueError(
            f"{weights}: {key} has shape {tuple(shapes[key])} but the model built from {folder / MODEL_CONFIG} "
            f"expects {tuple(shape)}; the config and the weights come from different models"
        )


def _load_base_encoder(folder: Path, config: MFNetConfig, base_model: str | Path | None) -> EncoderWeights:
    """The frozen encoder an adapter goes on: ``base_model`` or the one config.json records, resized as trained.

    Raises:
        EncoderLoadError: it cannot be loaded (the message says how to point at a copy).
        ValueError: it is another family or size than the adapter was trained on.
    """
    source = str(base_model) if base_model is not None else resolve_base_model(folder, config.encoder_name_or_path)
    try:
        loaded = load_encoder(
            source,
            image_size=config.image_size,
            rel_pos=config.rel_pos,
            attn_implementation=getattr(config.vision_config, "_attn_implementation", None),
        )
    except EncoderLoadError as error:
        if base_model is not None:
            raise
        # The recorded path is often a folder on the training machine: say how to point at a copy.
        raise EncoderLoadError(
            f"{folder / MODEL_CONFIG}: the base model it records (encoder_name_or_path={source!r}) cannot be loaded "
            f"({error}); pass a copy of that encoder with --base-model PATH (command line) or base_model=PATH (Python)"
        ) from error
    trained, family = config.encoder_family, family_of(loaded.config)
    shape = (family.hidden_size(loaded.config), family.num_layers(loaded.config))
    if family.name != trained.name or shape != (
        trained.hidden_size(config.vision_config),
        trained.num_layers(config.vision_config),
    ):
        raise ValueError(
            f"base model {source!r} is {family.display_name} {family.describe_size(loaded.config)}, but the adapter "
            f"in {folder} was trained on {trained.display_name} {trained.describe_size(config.vision_config)}; pass "
            "the matching encoder with base_model= (--base-model on the command line)"
        )
    return loaded


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
    """Build MFNet around its encoder, inject the saved tuner and load its weights; returns a `peft.PeftModel`.

    `PeftModel.from_pretrained` in two steps (build, then `load_adapter`) so that the saved weights are checked
    against the built model in between.
    """
    from peft import PeftModel

    config, peft_config, shapes = check_adapter_folder(folder)
    if num_labels is not None and num_labels != config.num_labels:
        raise ValueError(f"num_labels={num_labels} does not match the adapter's {config.num_labels} classes")
    encoder = _load_base_encoder(folder, config, base_model)
    config.vision_config = encoder.config
    model = model_cls._around_encoder(encoder.state_dict, config)
    model.name_or_path = str(folder)
    peft_config.inference_mode = not is_trainable  # frozen unless training continues, as from_pretrained does
    peft_model = PeftModel(model, peft_config, adapter_name=adapter_name)
    check_saved_weights(folder, peft_model, adapter_name, shapes)
    peft_model.load_adapter(str(folder), adapter_name, is_trainable=is_trainable)
    if not is_trainable:
        peft_model.eval()
    return peft_model


def push_adapter_to_hub(
    peft_model: Any,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "",
    base_model_dir: str | Path | None = None,
) -> str:
    """Upload an MFNet adapter folder (the four files of `ADAPTER_FILES`) with its filled model card.

    A model that records `BUNDLED_BASE_MODEL` needs its encoder too: ``base_model_dir`` (the folder's
    ``base-model/``) is uploaded beside the adapter, so the repo loads on its own. `PeftModel.push_to_hub` uploads
    the same four files but replaces README.md with the Hub's generic card. Returns the commit URL.

    Raises:
        ValueError: the model bundles its encoder and ``base_model_dir`` is missing (the repo would not load).
    """
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi

    recorded = str(getattr(peft_model.get_base_model().config, "encoder_name_or_path", ""))
    bundled = None
    if recorded == BUNDLED_BASE_MODEL:
        bundled = Path(base_model_dir) if base_model_dir is not None else None
        if bundled is None or not (bundled / MODEL_CONFIG).is_file():
            raise ValueError(
                f"push to {repo_id}: the model carries its encoder in {BUNDLED_BASE_MODEL}/ (a generated encoder), "
                f"and base_model_dir={base_model_dir!r} is not that folder; pass the run's base-model/ folder, or "
                "the pushed repo would not load"
            )
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name))
            for name in ADAPTER_FILES
            if (Path(folder) / name).is_file()
        ]
        if bundled is not None:
            prefix = BUNDLED_BASE_MODEL.removeprefix("./")
            operations += [
                CommitOperationAdd(path_in_repo=f"{prefix}/{path.name}", path_or_fileobj=str(path))
                for path in sorted(bundled.iterdir())
                if path.is_file()
            ]
        info = api.create_commit(
            repo_id=repo, operations=operations, commit_message=commit_message or "Upload MFNet adapter with mfpeft"
        )
    return str(info.commit_url)
