"""Confusion-matrix counting: hand case, agreement with explicit loops, torch/NumPy parity, accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mfpeft.metrics import ConfusionMatrix, confusion_matrix, per_sample_confusion


def naive_confusion(pred: np.ndarray, ref: np.ndarray, num_labels: int, ignore_index: int | None) -> np.ndarray:
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    for p, r in zip(pred.ravel().tolist(), ref.ravel().tolist()):
        if ignore_index is not None and r == ignore_index:
            continue
        matrix[r, p] += 1
    return matrix


def test_hand_computed_case() -> None:
    ref = np.array([[0, 0, 1], [2, 255, 1]])
    pred = np.array([[0, 1, 1], [0, 7, 1]])  # 7 sits on an ignored pixel: not counted, not an error
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    got = confusion_matrix(pred, ref, num_labels=3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    from_torch = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(ref), 3)
    np.testing.assert_array_equal(from_torch, expected)


@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    num_labels = draw(st.integers(1, 7))
    shape = draw(st.tuples(st.integers(0, 3), st.integers(1, 9), st.integers(1, 9)))
    pred = draw(arrays(np.int64, shape, elements=st.integers(0, num_labels - 1)))
    ref_values = st.one_of(st.integers(0, num_labels - 1), st.just(255))
    ref = draw(arrays(np.int64, shape, elements=ref_values))
    return pred, ref, num_labels


@settings(max_examples=60, deadline=None)
@given(label_pairs())
def test_agrees_with_explicit_loops_numpy_and_torch(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    pred, ref, num_labels = case
    expected = naive_confusion(pred, ref, num_labels, 255)
    np.testing.assert_array_equal(confusion_matrix(pred, ref, num_labels), expected)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(ref), num_labels), expected)
    # Narrow storage types count the same.
    np.testing.assert_array_equal(confusion_matrix(pred.astype(np.uint8), ref.astype(np.uint8), num_labels), expected)


def test_ignore_index_none_counts_everything() -> None:
    ref = np.array([0, 1, 1, 0])
    pred = np.array([1, 1, 0, 0])
    np.testing.assert_array_equal(confusion_matrix(pred, ref, 2, ignore_index=None), [[1, 1], [1, 1]])
    with pytest.raises(ValueError, match="references contain class id 255"):
        confusion_matrix(np.array([0]), np.array([255]), 2, ignore_index=None)


def test_mixed_torch_and_numpy_inputs() -> None:
    ref = np.array([[0, 1], [1, 255]])
    pred = torch.tensor([[0, 1], [0, 0]], dtype=torch.uint8)
    np.testing.assert_array_equal(confusion_matrix(pred, ref, 2), [[1, 0], [1, 1]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_counts_on_the_tensor_device() -> None:
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 6, (2, 64, 64), generator=generator)
    ref = torch.randint(0, 6, (2, 64, 64), generator=generator)
    expected = confusion_matrix(pred, ref, 6)
    np.testing.assert_array_equal(confusion_matrix(pred.cuda(), ref.cuda(), 6), expected)


@pytest.mark.parametrize(
    ("pred", "ref", "num_labels", "message"),
    [
        (np.zeros((2, 3), int), np.zeros((3, 2), int), 2, "same shape"),
        (np.zeros(4, float), np.zeros(4, int), 2, "integer class ids.*float64"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), 2, "integer class ids.*float32"),
        (np.array([0, 2]), np.array([0, 1]), 2, "predictions contain class id 2"),
        (np.array([0, -1]), np.array([0, 1]), 2, "predictions contain class id -1"),
        (np.array([0, 0]), np.array([0, 3]), 2, "references contain class id 3"),
        (np.array([0]), np.array([0]), 0, "num_labels must be a positive integer"),
    ],
)
def test_bad_input_is_rejected(pred: object, ref: object, num_labels: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, ref, num_labels)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        confusion_matrix(torch.as_tensor(pred), torch.as_tensor(ref), num_labels)


def test_all_ignored_gives_zeros() -> None:
    got = confusion_matrix(torch.zeros(3, 3, dtype=torch.int64), torch.full((3, 3), 255), 4)
    np.testing.assert_array_equal(got, np.zeros((4, 4), dtype=np.int64))


def test_accumulator_pools_batches_and_merges() -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(6, 16, 16))
    ref = rng.integers(0, 5, size=(6, 16, 16))
    ref[0, :4] = 255
    whole = confusion_matrix(pred, ref, 5)

    first, second = ConfusionMatrix(5), ConfusionMatrix(5)
    for i in range(3):
        first.update(pred[i], ref[i])
    for i in range(3, 6):
        second.update(torch.from_numpy(pred[i]), torch.from_numpy(ref[i]))
    assert first.total + second.total == int(whole.sum())
    np.testing.assert_array_equal((first + second).matrix, whole)
    np.testing.assert_array_equal(first.matrix + second.matrix, whole)  # __add__ left both untouched

    pooled = ConfusionMatrix(5)
    pooled += first
    pooled.merge(second.matrix)
    assert pooled == ConfusionMatrix(5, matrix=whole)

    snapshot = pooled.matrix
    snapshot[0, 0] += 100  # .matrix is a copy
    assert pooled == ConfusionMatrix(5, matrix=whole)
    pooled.reset()
    assert pooled.total == 0


def test_accumulator_rejects_mismatched_merges() -> None:
    with pytest.raises(ValueError, match="num_labels=3 into one with num_labels=2"):
        ConfusionMatrix(2).merge(ConfusionMatrix(3))
    with pytest.raises(ValueError, match="ignore_index=None"):
        ConfusionMatrix(2).merge(ConfusionMatrix(2, ignore_index=None))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        ConfusionMatrix(2).merge(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="non-negative"):
        ConfusionMatrix(2, matrix=np.array([[1, -1], [0, 0]]))
    with pytest.raises(ValueError, match="integer counts"):
        ConfusionMatrix(2, matrix=np.zeros((2, 2)))


def test_per_sample_confusion_sums_to_the_pooled_matrix() -> None:
    generator = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 4, (5, 9, 7), generator=generator)
    ref = torch.randint(0, 4, (5, 9, 7), generator=generator)
    ref[2] = 255  # a fully ignored sample gives a zero matrix
    pred[0, 0, 0] = 200
    ref[0, 0, 0] = 255
    per_sample = per_sample_confusion(pred, ref, 4)
    assert per_sample.shape == (5, 4, 4) and per_sample.dtype == torch.int64
    for b in range(5):
        np.testing.assert_array_equal(per_sample[b].numpy(), confusion_matrix(pred[b], ref[b], 4))
    # What gather_for_metrics would hand back after dropping a repeated sample: still exact.
    np.testing.assert_array_equal(per_sample[:4].sum(0).numpy(), confusion_matrix(pred[:4], ref[:4], 4))
    assert int(per_sample[2].sum()) == 0
    with pytest.raises(ValueError, match="predictions contain class id 4"):
        per_sample_confusion(torch.full((1, 2), 4), torch.zeros(1, 2, dtype=torch.int64), 4)
    with pytest.raises(ValueError, match=r"same \(B, ...\) shape"):
        per_sample_confusion(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64), 4)
