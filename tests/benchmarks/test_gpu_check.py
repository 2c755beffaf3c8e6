"""The GPU check: what it runs, how it reports, and that it says so where there is no GPU."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_check


def test_runs_cover_the_issue_and_table_vi_settings() -> None:
    runs = gpu_check.train_runs(quick=False)
    assert ("vit-b", "mmlora", 1) in runs and ("vit-h", "mmadapter", 1) in runs  # Table VI: one 256² chip
    assert ("vit-b", "mmlora", 10) in runs and ("vit-h", "mmadapter", 4) in runs  # the paper's training batches
    assert gpu_check.train_runs(quick=True) == [("vit-b", "mmlora", 1)]


def test_training_table_puts_the_paper_beside_batch_one_rows() -> None:
    rows = [
        {
            "size": "vit-b",
            "tuner": "mmlora",
            "batch": 1,
            "variant": "default",
            "step_dtype": "fp32",
            "train_s": 0.05,
            "train_chips_per_s": 20.0,
            "infer_s": 0.01,
            "peak_memory_gib": 1.5,
        },
        {
            "size": "vit-h",
            "tuner": "mmadapter",
            "batch": 4,
            "variant": "bf16-autocast",
            "step_dtype": "bf16",
            "train_s": 0.4,
            "train_chips_per_s": 10.0,
            "peak_memory_gib": 6.0,
        },
        {"size": "vit-h", "tuner": "mmadapter", "batch": 4, "variant": "default", "error": "Traceback\nOOM here"},
    ]
    lines = gpu_check.training_table(rows).splitlines()
    assert lines[2] == "| vit-b | mmlora | 1 | default | fp32 | 0.050 | 20.0 | 0.010 | 1536 | 1924 |"
    assert lines[3] == "| vit-h | mmadapter | 4 | bf16-autocast | bf16 | 0.400 | 10.0 | - | 6144 | - |"
    assert "error: OOM here" in lines[4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed where no CUDA GPU is visible")
def test_without_cuda_it_says_so_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().out
    assert not (tmp_path / "gpu").exists()
