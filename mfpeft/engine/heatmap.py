"""Per-class, per-modality activation heatmaps of the encoder features: the paper's Fig. 11.

Method: segmentation Grad-CAM (Vinogradova et al., 2020) on each modality's encoder features at 1/16 (SAM's neck
map; MFNet's neck map for other families; Hiera's 1/16 level).
For one chip, the encoder gives one map ``A_m`` of shape ``(256, s, s)`` per modality ``m`` (``s = S / 16``).
The trained head (DFM + decoder) turns them into logits ``y`` of shape ``(num_labels, S, S)``. For a class
``c`` the score is ``Y_c = sum of y_c over the pixels predicted as c`` (over every pixel when none is), the
channel weights are the spatially averaged gradients ``alpha_{m,k} = mean_ij dY_c / dA_m[k, i, j]``, and
the heatmap is ``ReLU(sum_k alpha_{m,k} A_m[k])``, upsampled bilinearly to ``S x S`` and divided by its
maximum (so every map lies in [0, 1]; an all-zero map means no evidence for the class in that modality).

"Frozen" and "tuned" differ only in the encoder: the frozen features come from SAM with the tuner switched
off (``peft_model.disable_adapter()``), the tuned ones with it on; both are scored by the same trained head, so
the figure shows what fine-tuning changed in the features each modality contributes, as the paper does when it
removes the Adapters/LoRAs from the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from mfpeft.data.geometry import ChipWindow
from mfpeft.data.raster import pad_chip
from mfpeft.data.tile import raster_files
from mfpeft.data.windows import open_reader

if TYPE_CHECKING:
    from mfpeft.engine.predict import CheckedScene, RasterPaths

__all__ = ["HeatmapResult", "activation_heatmaps", "draw_heatmaps", "grad_cam", "heatmap_figure"]


@dataclass
class HeatmapResult:
    """Heatmaps of one chip. ``frozen`` and ``tuned`` are ``(M, K, S, S)`` float32 in [0, 1]: modality x class."""

    modalities: list[str]
    classes: list[int]
    class_names: list[str]
    frozen: torch.Tensor
    tuned: torch.Tensor
    frozen_prediction: torch.Tensor
    """``(S, S)`` class ids the head predicts from the frozen features."""
    tuned_prediction: torch.Tensor


def grad_cam(mfnet: Any, features: Sequence[Any], classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation Grad-CAM of ``classes`` w.r.t. each modality's features (see the module docstring).

    Args:
        mfnet: the `MFNetForSegmentation` (its head, in eval mode, scores the features).
        features: M maps ``(1, C, s, s)``, one per modality, as :meth:`MFNetForSegmentation.encode` returns; for
            a hierarchical encoder (Hiera) M lists of four levels, whose 1/16 level is the one mapped.
        classes: K class ids.

    Returns:
        ``(heatmaps (M, K, S, S) float32 in [0, 1], prediction (S, S) int64)``.
    """
    hierarchical = not isinstance(features[0], torch.Tensor)
    leaves = [(f[2] if hierarchical else f).detach().float().clone().requires_grad_(True) for f in features]
    inputs: list[Any] = leaves
    if hierarchical:
        inputs = [
            [leaf if i == 2 else level.detach().float() for i, level in enumerate(f)]
            for f, leaf in zip(features, leaves)
        ]
    size = mfnet.config.image_size
    with torch.enable_grad():
        logits = mfnet.decode(inputs)[0]  # (L, S, S)
        prediction = logits.argmax(0)
        maps = torch.zeros(len(leaves), len(classes), size, size)
        for j, c in enumerate(classes):
            mask = prediction == c
            score = logits[c][mask].sum() if bool(mask.any()) else logits[c].sum()
            grads = torch.autograd.grad(score, leaves, retain_graph=True)
            for m, (grad, feature) in enumerate(zip(grads, leaves)):
                alpha = grad[0].mean(dim=(1, 2))  # (C,)
                cam = F.relu((alpha[:, None, None] * feature[0]).sum(0)).detach()
                cam = F.interpolate(cam[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
                peak = cam.max()
                maps[m, j] = cam / peak if peak > 0 else cam
    return maps, prediction.detach().cpu()


def activation_heatmaps(
    model: Any, pixel_values: Mapping[str, torch.Tensor], classes: Sequence[int] | None = None
) -> HeatmapResult:
    """Frozen-encoder and tuned-encoder heatmaps of one chip.

    Args:
        model: a `peft.PeftModel` around an `MFNetForSegmentation` (the tuner is what "tuned" means).
        pixel_values: ``{modality: (1, C_m, S, S)}`` (or ``(C_m, S, S)``), scaled as for the model.
        classes: class ids to draw (default: all).

    Raises:
        ValueError: a model without a tuner to switch off, or more than one chip.
    """
    from mfpeft.engine.predict import class_names_of, mfnet_of

    mfnet = mfnet_of(model)
    if not hasattr(model, "disable_adapter"):
        raise ValueError(
            "heatmaps compare the frozen encoder with the tuned one, so the model must carry a tuner "
            "(a peft model, e.g. from MFNetForSegmentation.from_pretrained(adapter_folder))"
        )
    names = class_names_of(mfnet.config)
    chosen = list(range(len(names))) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < len(names)]
    if bad:
        raise ValueError(f"classes {bad} are not class ids of this model (0..{len(names) - 1})")
    device = next(mfnet.parameters()).device
    batch = {k: (v if v.dim() == 4 else v[None]).to(device) for k, v in pixel_values.items()}
    if any(v.shape[0] != 1 for v in batch.values()):
        raise ValueError("activation_heatmaps takes one chip (batch size 1)")
    model.eval()
    with torch.no_grad():
        with model.disable_adapter():
            frozen_features = mfnet.encode(batch)
        tuned_features = mfnet.encode(batch)
    frozen, frozen_pred = grad_cam(mfnet, frozen_features, chosen)
    tuned, tuned_pred = grad_cam(mfnet, tuned_features, chosen)
    return HeatmapResult(
        modalities=list(mfnet.config.modality_names),
        classes=chosen,
        class_names=[names[c] for c in chosen],
        frozen=frozen,
        tuned=tuned,
        frozen_prediction=frozen_pred,
        tuned_prediction=tuned_pred,
    )


def _display(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """``(C, h, w)`` input -> an ``(h, w, 3)`` or ``(h, w)`` image stretched to [0, 1] for display."""
    from mfpeft.data.quicklook import stretch_for_display

    stretched = stretch_for_display(np.asarray(image, dtype=np.float32))
    return np.moveaxis(stretched[:3], 0, -1) if stretched.shape[0] >= 3 else stretched[0]


def draw_heatmaps(
    result: HeatmapResult,
    images: Mapping[str, npt.NDArray[np.floating]],
    output: str | Path,
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw Fig. 11 as a PNG: one row per class; columns: each input, then frozen and tuned heatmaps per modality.

    Args:
        images: ``{modality: (C, S, S)}`` raw or scaled inputs, shown with a 2-98 % stretch.
    """
    from matplotlib.figure import Figure

    from mfpeft.common.files import save_figure

    inputs = [(name, _display(images[name])) for name in result.modalities if name in images]
    columns = len(inputs) + 2 * len(result.modalities)
    rows = len(result.classes)
    figure = Figure(figsize=(2.2 * columns, 2.3 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, name in enumerate(result.class_names):
        col = 0
        for label, image in inputs:
            axes[i, col].imshow(image, cmap=None if image.ndim == 3 else "gray")
            axes[i, col].set_title(label if i == 0 else "", fontsize=9)
            col += 1
        for view, maps in (("frozen", result.frozen), ("tuned", result.tuned)):
            for m, modality in enumerate(result.modalities):
                axes[i, col].imshow(maps[m, i].numpy(), cmap="jet", vmin=0.0, vmax=1.0)
                axes[i, col].set_title(f"{view} SAM: {modality}" if i == 0 else "", fontsize=9)
                col += 1
        axes[i, 0].set_ylabel(name, fontsize=10)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(title or "Grad-CAM of the encoder features per class and modality: frozen vs tuned SAM")
    figure.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.02, wspace=0.05, hspace=0.15)
    return save_figure(figure, output, dpi=dpi)


def _class_ids(classes: Sequence[int | str] | None, names: Sequence[str]) -> list[int] | None:
    """Class ids from ids or names (a digit string is an id); None stays None (every class)."""
    if classes is None:
        return None
    chosen = []
    for c in classes:
        if isinstance(c, str) and not c.isdigit():
            if c not in names:
                raise ValueError(f"class {c!r} is not one of the model's classes {list(names)}")
            chosen.append(list(names).index(c))
        else:
            chosen.append(int(c))
    return chosen


def _read_chip(
    checked: CheckedScene, row: int | None, col: int | None
) -> tuple[dict[str, npt.NDArray[np.float32]], dict[str, npt.NDArray[np.float32]], tuple[int, int]]:
    """The chip at (``row``, ``col``) (default: the scene centre): scaled inputs ``{modality: (C, S, S)}``, the
    raw ones (NaN as 0) padded alike, and its top-left pixel."""
    size = checked.chip
    with open_reader(checked.tile, size, checked.scaling, checked.channels) as reader:
        r = (reader.height - size) // 2 if row is None else row
        c = (reader.width - size) // 2 if col is None else col
        r, c = max(r, 0), max(c, 0)
        window = ChipWindow(r, c, min(size, reader.height - r), min(size, reader.width - c))
        if r >= reader.height or c >= reader.width or window.height <= 0 or window.width <= 0:
            raise ValueError(f"row={row}, col={col} lies outside the {reader.height} x {reader.width} scene")
        chip = reader.read(window)["pixel_values"]
        raw = {m: np.nan_to_num(reader.read_raw(m, window)) for m in checked.modalities}
    return chip, pad_chip({"pixel_values": raw, "labels": None}, size)["pixel_values"], (r, c)


def heatmap_figure(
    model: Any,
    rasters: Mapping[str, RasterPaths],
    output: str | Path,
    *,
    row: int | None = None,
    col: int | None = None,
    classes: Sequence[int | str] | None = None,
    bands: Mapping[str, Sequence[int]] | None = None,
    base_model: str | Path | None = None,
    device: str | torch.device | None = None,
    scaling: Mapping[str, Any] | None = None,
) -> tuple[Path, HeatmapResult]:
    """Read one chip of a scene and draw its Fig. 11 heatmaps (the ``mfpeft heatmap`` command).

    The checks, the model's input scaling and the reading are prediction's stages
    (:func:`mfpeft.engine.predict.check_scene`, :func:`mfpeft.data.windows.open_reader`).

    Args:
        model: a peft MFNet, an adapter folder or a Hub repo id.
        rasters: ``{modality: path}`` for every modality of the model (a sequence of paths: band files).
        row, col: top-left pixel of the chip on the first raster's grid (default: the scene centre).
        classes: class ids or names (default: all).
        scaling: per modality, overrides the raw -> input scaling the model recorded (as ``predict_scene``).

    Raises:
        ValueError / FileNotFoundError: a bad device, model, raster or output path, or a modality whose raster
            holds no data at all (:func:`mfpeft.data.checks.check_valid_share`, which warns about patchy ones).
    """
    from mfpeft.engine.predict import PredictionOptions, check_scene, class_names_of

    options = PredictionOptions(bands=bands, base_model=base_model, device=device, scaling=scaling)
    checked = check_scene(model, rasters, {"heatmap": output}, options)
    chosen = _class_ids(classes, class_names_of(checked.config))
    chip, images, (r, c) = _read_chip(checked, row, col)
    checked.model.to(checked.device)
    pixel_values = {m: torch.from_numpy(v)[None] for m, v in chip.items()}
    result = activation_heatmaps(checked.model, pixel_values, chosen)
    first_file = raster_files(checked.rasters[checked.modalities[0]])[0]
    path = draw_heatmaps(
        result, images, checked.outputs["heatmap"], title=f"{first_file.name} chip at row {r}, col {c}"
    )
    return path, result
