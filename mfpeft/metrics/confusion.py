"""Pixel confusion matrices for semantic segmentation.

The paper scores every test pixel through *one* confusion matrix pooled over the whole test set (not a mean of
per-image scores), so the matrix is the quantity that is accumulated, gathered across processes and saved;
every score is derived from it afterwards (see :mod:`mfpeft.metrics.scores`).

Convention: ``matrix[i, j]`` counts the pixels whose reference class is ``i`` and whose predicted class is
``j`` (rows = reference, columns = prediction).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from mfpeft.common.classes import IGNORE_INDEX

LabelArray = torch.Tensor | npt.NDArray[np.integer]
"""Integer class ids of any shape, as a torch tensor (any device) or a NumPy array."""


def _check_num_labels(num_labels: int) -> None:
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")


def _confusion_torch(
    predictions: torch.Tensor, references: torch.Tensor, num_labels: int, ignore_index: int | None
) -> npt.NDArray[np.int64]:
    # Counting happens on the tensors' own device: moving a batch of full-size label maps to the host only to
    # count them would dominate evaluation time on an accelerator.
    predictions = predictions.reshape(-1).to(torch.int64)
    references = references.reshape(-1).to(device=predictions.device, dtype=torch.int64)
    if ignore_index is not None:
        keep = references != ignore_index
        predictions = predictions[keep]
        references = references[keep]
    if references.numel() == 0:
        return np.zeros((num_labels, num_labels), dtype=np.int64)
    _check_range_values(
        "references", int(references.min().item()), int(references.max().item()), num_labels, ignore_index
    )
    _check_range_values(
        "predictions", int(predictions.min().item()), int(predictions.max().item()), num_labels, ignore_index
    )
    counts = torch.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).cpu().numpy().astype(np.int64, copy=False)


def _confusion_numpy(
    predictions: npt.NDArray[np.integer],
    references: npt.NDArray[np.integer],
    num_labels: int,
    ignore_index: int | None,
) -> npt.NDArray[np.int64]:
    predictions = predictions.reshape(-1).astype(np.int64, copy=False)
    references = references.reshape(-1).astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = references != ignore_index
        predictions = predictions[keep]
        references = references[keep]
    if references.size == 0:
        return np.zeros((num_labels, num_labels), dtype=np.int64)
    for name, values in (("references", references), ("predictions", predictions)):
        _check_range_values(name, int(values.min()), int(values.max()), num_labels, ignore_index)
    counts = np.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).astype(np.int64, copy=False)


def _check_range_values(name: str, low: int, high: int, num_labels: int, ignore_index: int | None) -> None:
    if low < 0 or high >= num_labels:
        bad = low if low < 0 else high
        where = " on pixels whose reference is not ignored" if name == "predictions" else ""
        raise ValueError(
            f"{name} contain class id {bad}{where}, outside [0, {num_labels - 1}] for "
            f"num_labels={num_labels} (ignore_index={ignore_index})"
        )


def _check_integer(name: str, values: LabelArray) -> None:
    if isinstance(values, torch.Tensor):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class ids, got a tensor of dtype {values.dtype}")
    elif not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got an array of dtype {values.dtype}")


def confusion_matrix(
    predictions: LabelArray,
    references: LabelArray,
    num_labels: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> npt.NDArray[np.int64]:
    """Count (reference, prediction) pairs of class ids.

    Args:
        predictions: predicted class ids, any shape (e.g. ``(B, H, W)``), torch tensor or NumPy array.
        references: reference class ids, the same shape as ``predictions``. Pixels equal to ``ignore_index``
            are skipped whatever their prediction.
        num_labels: number of classes ``K``; every counted id must lie in ``[0, K)``.
        ignore_index: reference value that marks pixels to skip (255 in ISPRS/mfpeft), or ``None``.

    Returns:
        ``(K, K)`` int64 NumPy array, ``matrix[reference, prediction]``. For torch inputs the counting runs on
        the tensors' device (``predictions``'s if they differ) and only the ``K * K`` counts are copied back.

    Raises:
        ValueError: on a shape mismatch, non-integer inputs, or a class id out of range on a counted pixel.
    """
    _check_num_labels(num_labels)
    if tuple(predictions.shape) != tuple(references.shape):
        raise ValueError(
            f"predictions and references must have the same shape, got {tuple(predictions.shape)} and "
            f"{tuple(references.shape)}"
        )
    _check_integer("predictions", predictions)
    _check_integer("references", references)
    if isinstance(predictions, torch.Tensor) or isinstance(references, torch.Tensor):
        pred_t = torch.as_tensor(predictions)
        ref_t = torch.as_tensor(references)
        return _confusion_torch(pred_t, ref_t, int(num_labels), ignore_index)
    return _confusion_numpy(np.asarray(predictions), np.asarray(references), int(num_labels), ignore_index)


def per_sample_confusion(
    predictions: torch.Tensor,
    references: torch.Tensor,
    num_labels: int,
    ignore_index: int | None = IGNORE_INDEX,
) -> torch.Tensor:
    """One confusion matrix per sample, as a tensor on the inputs' device, for distributed evaluation.

    ``accelerator.gather_for_metrics`` drops the samples that the distributed sampler repeated to even out
    the last batch, but it can only do so along a per-sample dimension: gather these ``(B, K, K)`` matrices
    (a few hundred bytes per sample instead of the label maps) and sum them over the first axis; summing
    per-process matrices with ``reduce`` would count the repeated samples twice.

    Args:
        predictions: ``(B, ...)`` integer class ids, e.g. ``(B, H, W)``.
        references: ``(B, ...)`` integer class ids, same shape; ``ignore_index`` pixels are skipped.
        num_labels: number of classes ``K``.
        ignore_index: reference value to skip, or ``None``.

    Returns:
        ``(B, K, K)`` int64 tensor on ``predictions.device``, ``[b, reference, prediction]``.
    """
    _check_num_labels(num_labels)
    if tuple(predictions.shape) != tuple(references.shape) or predictions.dim() < 1:
        raise ValueError(
            f"predictions and references must have the same (B, ...) shape, got {tuple(predictions.shape)} "
            f"and {tuple(references.shape)}"
        )
    _check_integer("predictions", predictions)
    _check_integer("references", references)
    k = int(num_labels)
    batch = predictions.shape[0]
    sample = torch.arange(batch, device=predictions.device).view(-1, *([1] * (predictions.dim() - 1)))
    sample = sample.expand(predictions.shape).reshape(-1)
    pred = predictions.reshape(-1).to(torch.int64)
    ref = references.reshape(-1).to(device=predictions.device, dtype=torch.int64)
    if ignore_index is not None:
        keep = ref != ignore_index
        pred, ref, sample = pred[keep], ref[keep], sample[keep]
    if ref.numel():
        for name, values in (("references", ref), ("predictions", pred)):
            _check_range_values(name, int(values.min().item()), int(values.max().item()), k, ignore_index)
    counts = torch.bincount((sample * k + ref) * k + pred, minlength=batch * k * k)
    return counts.reshape(batch, k, k)


class ConfusionMatrix:
    """Running confusion matrix pooled over many images (and, after :meth:`merge`, over many processes).

    Example::

        cm = ConfusionMatrix(num_labels=6)
        for batch in loader:
            cm.update(logits.argmax(1), batch["labels"])   # (B, H, W) each
        scores = segmentation_scores(cm.matrix, score_classes=range(5))
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int | None = IGNORE_INDEX,
        matrix: npt.ArrayLike | None = None,
    ) -> None:
        """Start from zero counts, or from an existing ``(num_labels, num_labels)`` count ``matrix``."""
        _check_num_labels(num_labels)
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        if matrix is None:
            self._matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        else:
            self._matrix = _validated_counts(matrix, self.num_labels)

    @property
    def matrix(self) -> npt.NDArray[np.int64]:
        """``(K, K)`` int64 counts, rows = reference, columns = prediction (a copy)."""
        return self._matrix.copy()

    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self._matrix.sum())

    def update(self, predictions: LabelArray, references: LabelArray) -> ConfusionMatrix:
        """Add the pixels of one batch; shapes as in :func:`confusion_matrix`. Returns ``self``."""
        self._matrix += confusion_matrix(predictions, references, self.num_labels, self.ignore_index)
        return self

    def merge(self, other: ConfusionMatrix | npt.ArrayLike) -> ConfusionMatrix:
        """Add another accumulator's (or a raw ``(K, K)`` matrix's) counts in place. Returns ``self``."""
        if isinstance(other, ConfusionMatrix):
            if other.num_labels != self.num_labels:
                raise ValueError(
                    f"cannot merge a confusion matrix with num_labels={other.num_labels} into one with "
                    f"num_labels={self.num_labels}"
                )
            if other.ignore_index != self.ignore_index:
                raise ValueError(
                    f"cannot merge a confusion matrix with ignore_index={other.ignore_index} into one with "
                    f"ignore_index={self.ignore_index}"
                )
            counts = other._matrix
        else:
            counts = _validated_counts(other, self.num_labels)
        self._matrix += counts
        return self

    def __add__(self, other: ConfusionMatrix | npt.ArrayLike) -> ConfusionMatrix:
        return ConfusionMatrix(self.num_labels, self.ignore_index, self._matrix).merge(other)

    def __iadd__(self, other: ConfusionMatrix | npt.ArrayLike) -> ConfusionMatrix:
        return self.merge(other)

    def reset(self) -> None:
        """Set every count back to zero."""
        self._matrix[...] = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        return (
            self.num_labels == other.num_labels
            and self.ignore_index == other.ignore_index
            and bool(np.array_equal(self._matrix, other._matrix))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_labels={self.num_labels}, ignore_index={self.ignore_index}, total={self.total})"


def _validated_counts(matrix: npt.ArrayLike, num_labels: int) -> npt.NDArray[np.int64]:
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    counts = np.asarray(matrix)
    if counts.shape != (num_labels, num_labels):
        raise ValueError(f"confusion matrix must have shape ({num_labels}, {num_labels}), got {tuple(counts.shape)}")
    if not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"confusion matrix must hold integer counts, got dtype {counts.dtype}")
    if counts.size and counts.min() < 0:
        raise ValueError(f"confusion matrix counts must be non-negative, got minimum {counts.min()}")
    return counts.astype(np.int64, copy=True)
