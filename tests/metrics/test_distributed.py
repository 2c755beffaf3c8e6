"""Two gloo processes pool the same confusion matrix as one (per-sample matrices + gather_for_metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch.utils.data import DataLoader, TensorDataset

from mfpeft.metrics import ConfusionMatrix, confusion_matrix, per_sample_confusion
from tests.launch import launch_two_processes

NUM_LABELS = 4
SAMPLES = 7  # odd, with batch 2 on 2 ranks: the sampler repeats samples to even out the last batch


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    predictions = torch.randint(0, NUM_LABELS, (SAMPLES, 6, 5), generator=generator)
    references = torch.randint(0, NUM_LABELS, (SAMPLES, 6, 5), generator=generator)
    references[:, 0] = 255
    return TensorDataset(predictions, references)


def evaluate_with_accelerate(out_dir: Path) -> None:
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(data(), batch_size=2))
    pooled = ConfusionMatrix(NUM_LABELS)
    naive = ConfusionMatrix(NUM_LABELS)
    for predictions, references in loader:
        per_sample = per_sample_confusion(predictions, references, NUM_LABELS)
        pooled.merge(accelerator.gather_for_metrics(per_sample).sum(0))
        naive.merge(accelerator.reduce(per_sample.sum(0), reduction="sum"))
    if accelerator.is_main_process:
        np.save(out_dir / f"pooled_{accelerator.num_processes}.npy", pooled.matrix)
        np.save(out_dir / f"naive_{accelerator.num_processes}.npy", naive.matrix)


def test_one_and_two_processes_give_the_identical_matrix(tmp_path: Path) -> None:
    dataset = data()
    expected = confusion_matrix(dataset.tensors[0], dataset.tensors[1], NUM_LABELS)

    launch_two_processes("tests.metrics.test_distributed", "evaluate_with_accelerate", tmp_path)
    two = np.load(tmp_path / "pooled_2.npy")
    np.testing.assert_array_equal(two, expected)
    # The pitfall this guards against: reducing per-process sums counts the repeated sample twice.
    assert int(np.load(tmp_path / "naive_2.npy").sum()) > int(expected.sum())

    try:
        evaluate_with_accelerate(tmp_path)
    finally:  # Accelerate keeps process-wide singletons: do not leak this one into other tests
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    np.testing.assert_array_equal(np.load(tmp_path / "pooled_1.npy"), expected)
